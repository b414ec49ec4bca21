"""The realm server's Prometheus metrics (one place, so names stay consistent)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from realmchat.metrics import LATENCY_BUCKETS, labelled

COMMANDS = Counter("realmchat_realm_commands_total", "Commands answered, by verb and outcome", ["verb", "status"])
EVENTS = Counter("realmchat_realm_events_total", "Events written to clients, by kind", ["kind"])
UPSTREAM_SECONDS = Histogram("realmchat_realm_upstream_seconds", "Calls to main, by method", ["method"],
                             buckets=LATENCY_BUCKETS)
CONNECTIONS = Gauge("realmchat_realm_connections", "Open client connections")
SESSIONS = Gauge("realmchat_realm_sessions", "Logged-in sessions")
REPORTS_AWAITING = Gauge("realmchat_realm_reports_awaiting",
                         "Events to several sessions not yet written or dropped by all of them")
LINK_UP = Gauge("realmchat_realm_link_up", "1 while the event stream to main is up")

commands = labelled(COMMANDS)
events = labelled(EVENTS)
upstream_seconds = labelled(UPSTREAM_SECONDS)
