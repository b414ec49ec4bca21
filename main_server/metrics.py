"""The main server's Prometheus metrics (one place, so names stay consistent)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from realmchat.metrics import LATENCY_BUCKETS, labelled


class LoopHistogram:
    """One histogram series fed from the event loop only: an observation is a bisect and two
    additions, no lock (prometheus_client takes a lock per bucket and per sum: at one call per
    message that showed in main's profile). Read whole at scrape time, under the GIL."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: past every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class LoopCounter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class _LoopMetric(Collector):
    """A family of LoopHistogram or LoopCounter series by label values, in the default registry."""

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] | None = None) -> None:
        self.name, self.doc, self.labelnames, self.buckets = name, doc, tuple(labelnames), buckets
        self._series: dict[tuple[str, ...], LoopHistogram | LoopCounter] = {}
        REGISTRY.register(self)

    def _child(self, values: tuple[str, ...]) -> LoopHistogram | LoopCounter:
        child = self._series.get(values)
        if child is None:
            child = LoopHistogram(self.buckets) if self.buckets is not None else LoopCounter()
            self._series[values] = child
        return child

    def collect(self) -> Iterator[Metric]:
        fam: HistogramMetricFamily | CounterMetricFamily
        if self.buckets is None:
            fam = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
            for values, c in list(self._series.items()):
                assert isinstance(c, LoopCounter)
                fam.add_metric(list(values), c.value)
            yield fam
            return
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, h in list(self._series.items()):
            assert isinstance(h, LoopHistogram)
            counts, total_sum = list(h.counts), h.sum
            cumulative, buckets = 0, []
            for bound, n in zip((*h.bounds, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
            fam.add_metric(list(values), buckets, total_sum)
        yield fam

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected only when scraped (nothing to check at registration)


class LoopHistogramFamily(_LoopMetric):
    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, doc, labelnames, buckets)

    def labels(self, *values: str) -> LoopHistogram:
        return self._child(values)  # type: ignore[return-value]

    def observe(self, value: float) -> None:
        self._child(()).observe(value)


class LoopCounterFamily(_LoopMetric):
    def labels(self, *values: str) -> LoopCounter:
        return self._child(values)  # type: ignore[return-value]


# Fed per call or per event on the event loop: lock-free series (see LoopHistogram).
RPC_SECONDS = LoopHistogramFamily("realmchat_main_rpc_seconds", "Time to answer a call (unary or relayed)",
                                  ["method"])
MESSAGES = LoopCounterFamily("realmchat_main_messages_total", "Messages and files stored", ["kind"])
_EVENT_LAG = LoopHistogramFamily("realmchat_main_event_lag_seconds", "From push to the event leaving on its stream")
EVENT_LAG = _EVENT_LAG.labels()

RPC_ERRORS = Counter("realmchat_main_rpc_errors_total", "Calls answered with an error", ["method", "code"])
# Observed by the SQLite writer thread, once per commit: prometheus_client's (locked) kind.
COMMIT_SECONDS = Histogram("realmchat_main_commit_seconds", "Time of one storage transaction (group commit)",
                           buckets=LATENCY_BUCKETS)
COMMIT_OPS = Histogram("realmchat_main_commit_ops", "Operations sharing one commit",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
SESSIONS = Gauge("realmchat_main_online_sessions", "Sessions attached to an event stream")
CHANNELS = Gauge("realmchat_main_event_streams", "Open event streams (realm links and subscribers)")
EVENT_QUEUE = Gauge("realmchat_main_event_queue", "Events waiting in stream queues")

rpc_seconds = RPC_SECONDS.labels
rpc_errors = labelled(RPC_ERRORS)
