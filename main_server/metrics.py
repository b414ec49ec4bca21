"""The main server's Prometheus metrics (one place, so names stay consistent)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from realmchat.metrics import LATENCY_BUCKETS, labelled

RPC_SECONDS = Histogram("realmchat_main_rpc_seconds", "Time to answer a call (unary or relayed)",
                        ["method"], buckets=LATENCY_BUCKETS)
RPC_ERRORS = Counter("realmchat_main_rpc_errors_total", "Calls answered with an error", ["method", "code"])
MESSAGES = Counter("realmchat_main_messages_total", "Messages and files stored", ["kind"])
COMMIT_SECONDS = Histogram("realmchat_main_commit_seconds", "Time of one storage transaction (group commit)",
                           buckets=LATENCY_BUCKETS)
COMMIT_OPS = Histogram("realmchat_main_commit_ops", "Operations sharing one commit",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
EVENT_LAG = Histogram("realmchat_main_event_lag_seconds", "From push to the event leaving on its stream",
                      buckets=LATENCY_BUCKETS)
SESSIONS = Gauge("realmchat_main_online_sessions", "Sessions attached to an event stream")
CHANNELS = Gauge("realmchat_main_event_streams", "Open event streams (realm links and subscribers)")
EVENT_QUEUE = Gauge("realmchat_main_event_queue", "Events waiting in stream queues")

rpc_seconds = labelled(RPC_SECONDS)
rpc_errors = labelled(RPC_ERRORS)
