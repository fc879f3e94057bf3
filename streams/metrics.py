"""The worker's Prometheus metrics, one registry per app (no device ids as labels).

The presence counters are updated by the agent. What Faust knows (consumer lag and offsets per
partition, messages read per topic, rebalances) is read from Faust's plain `Monitor` when
Prometheus scrapes, by a collector: faust's own `PrometheusMonitor` updates labelled Prometheus
metrics on every message and cost about a fifth of the worker's throughput (measured, see
bench/worker_throughput.py), for figures the plain monitor keeps anyway.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from faust.sensors.monitor import Monitor
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mqtt_presence.core import Reason, Status
from mqtt_presence.streams.status_index import CATEGORIES


class AgentCounts(Collector):
    """What the agent counts on every event and change, as plain ints, exported as counters
    when Prometheus scrapes: a prometheus_client `Counter` takes a lock on each `inc` (about
    1 us, two or three times an event), and only the agent's one thread writes these."""

    def __init__(self) -> None:
        self.events = 0
        self.by_status: dict[Status, int] = dict.fromkeys(Status, 0)
        self.by_reason: dict[Reason, int] = dict.fromkeys(Reason, 0)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("presence_worker_events", "raw events applied", self.events)
        changes = CounterMetricFamily(
            "presence_worker_status_changes", "status changes emitted", labels=["status"]
        )
        for status, count in self.by_status.items():
            changes.add_metric([status.value], count)
        yield changes
        reasons = CounterMetricFamily(
            "presence_worker_status_changes_by_reason",
            "status changes emitted, by the core's reason (birth, will, damped, ...)",
            labels=["reason"],
        )
        for reason, count in self.by_reason.items():
            reasons.add_metric([reason.value], count)
        yield reasons


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.counts = AgentCounts()
        r.register(self.counts)
        self.ticks = Counter("presence_worker_ticks", "clock ticks applied", registry=r)
        self.devices = Gauge(
            "presence_worker_devices",
            "devices of the partitions this worker holds, as /fleet counts them (set at scrape)",
            ["status"],
            registry=r,
        )
        self.recovering = Gauge(
            "presence_worker_recovering",
            "1 while the table recovers (GET /ready answers 503; set at scrape)",
            registry=r,
        )
        self.dead_letters = Counter(
            "presence_worker_dead_letters",
            "records sent to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.send_errors = Counter(
            "presence_worker_send_errors",
            "records the agent wrote that Kafka did not take (the worker exits with status 75)",
            registry=r,
        )
        self.outage = Gauge(
            "presence_worker_outage",
            "1 while the broker is unreachable (Kafka: writes unacknowledged)",
            ["broker"],
            registry=r,
        )
        self.outages = Counter(
            "presence_worker_outages", "outages that ended", ["broker"], registry=r
        )
        self.held_back = Gauge(
            "presence_worker_clock_held_back_seconds",
            "how far the last tick's time was held back by the slowest bridge's progress",
            registry=r,
        )
        self.in_time = Counter(
            "presence_worker_signs_of_life_in_time",
            "signs of life a lagging bridge handed on after a grace deadline it had not passed "
            "yet, counted as in time",
            registry=r,
        )
        self.pending_deadlines = Gauge(
            "presence_worker_pending_deadlines",
            "devices with a pending deadline on this worker",
            registry=r,
        )

    def show_fleet(self, counts: Mapping[str, int], recovering: bool) -> None:
        """Set the scrape-time gauges: devices per category of the held partitions, recovery."""
        for status in CATEGORIES:
            self.devices.labels(status).set(counts.get(status, 0))
        self.recovering.set(1 if recovering else 0)

    def watch(self, monitor: Monitor) -> None:
        """Also export what Faust's monitor counts (read at scrape time)."""
        self.registry.register(FaustMonitorCollector(monitor))


class FaustMonitorCollector(Collector):
    """Consumer lag, offsets and traffic from a Faust `Monitor`, as Prometheus families."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        m = self.monitor
        prefix = "presence_worker_faust"
        received = CounterMetricFamily(
            f"{prefix}_messages_received", "messages read from Kafka", labels=["topic"]
        )
        for topic, count in (m.messages_received_by_topic or {}).items():
            received.add_metric([topic], count)
        yield received
        labels = ["topic", "partition"]
        lag = GaugeMetricFamily(
            f"{prefix}_consumer_lag", "end offset minus last read offset", labels=labels
        )
        read = GaugeMetricFamily(f"{prefix}_read_offset", "last offset read", labels=labels)
        committed = GaugeMetricFamily(
            f"{prefix}_committed_offset", "last offset committed", labels=labels
        )
        read_offsets = dict(m.tp_read_offsets or {})
        for tp, offset in read_offsets.items():
            read.add_metric([tp.topic, str(tp.partition)], offset)
        for tp, end in (m.tp_end_offsets or {}).items():
            if tp in read_offsets:
                lag.add_metric([tp.topic, str(tp.partition)], max(0, end - read_offsets[tp] - 1))
        for tp, offset in (m.tp_committed_offsets or {}).items():
            committed.add_metric([tp.topic, str(tp.partition)], offset)
        yield from (lag, read, committed)
        yield CounterMetricFamily(
            f"{prefix}_rebalances", "rebalances this worker took part in", value=m.rebalances
        )
