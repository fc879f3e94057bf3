"""The worker's Prometheus metrics: Faust's own sensor plus the presence counters, one registry
per app (no device ids as labels)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("presence_worker_events", "raw events applied", registry=r)
        self.ticks = Counter("presence_worker_ticks", "clock ticks applied", registry=r)
        self.changes = Counter(
            "presence_worker_status_changes", "status changes emitted", ["status"], registry=r
        )
        self.dead_letters = Counter(
            "presence_worker_dead_letters",
            "records sent to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.pending_deadlines = Gauge(
            "presence_worker_pending_deadlines",
            "devices with a pending deadline on this worker",
            registry=r,
        )
