"""What the worker writes, and what it does when Kafka will not take it.

`AgentOutput` writes a device's state (table store and changelog) and its status changes straight
through the app's producer; `WriteWatch` tells when Kafka stopped acknowledging the worker's
writes (one line each way); a record Kafka refused ends the process before any offset past it is
committed (`exit_without_commit`, status 75: "restart me").
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from mqtt_presence.core import StatusChange
from mqtt_presence.outages import Outages
from mqtt_presence.streams.fence import SessionFence
from mqtt_presence.streams.metrics import WorkerMetrics

log = logging.getLogger("presence.worker")

encode = msgspec.json.Encoder().encode


class WriteWatch:
    """Tells when Kafka stopped taking the worker's writes: the clock's ticks are written every
    second, so writes waiting while none was acknowledged for `stall_s` mean Kafka is away. One
    line when that happens, one when a write gets through again (see `Outages`)."""

    def __init__(self, stall_s: float, outages: Outages) -> None:
        self.stall_s = stall_s
        self.outages = outages
        self.pending: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self.acked_at = float("-inf")

    @classmethod
    def of(cls, stall_s: float, metrics: WorkerMetrics) -> WriteWatch:
        outages = Outages(
            metrics.outage,
            metrics.outages,
            log,
            "the worker waits; it loses nothing (its input stays in presence.raw)",
        )
        return cls(stall_s, outages)

    def sent(self, delivery: asyncio.Future[Any]) -> None:
        self.pending.append((time.monotonic(), delivery))

    def check(self, now: float) -> None:
        # Writes are acknowledged per partition, not in the order they were sent: any of them
        # getting through ends an outage, and silence is measured from the last one that did,
        # so a tick sent during the outage and acknowledged a moment late is not a second one.
        delivered = False
        waiting: deque[tuple[float, asyncio.Future[Any]]] = deque()
        for sent_at, delivery in self.pending:
            if not delivery.done():
                waiting.append((sent_at, delivery))
            elif not delivery.cancelled() and delivery.exception() is None:
                delivered = True
        self.pending = waiting
        if delivered:
            self.acked_at = now
            self.outages.up("Kafka")
        if self.pending and now - max(self.pending[0][0], self.acked_at) > self.stall_s:
            self.outages.down("Kafka", f"no write acknowledged for {self.stall_s:.0f} s")


class DeliveryError(RuntimeError):
    """Kafka did not take one of the agent's records (after the producer's own retries)."""


EXIT_RESTART_ME = 75  # EX_TEMPFAIL: the worker cannot go on, a fresh process can


def exit_for_restart(why: str) -> None:
    """End the worker process now (no graceful stop: nothing may be committed on the way out)."""
    log.critical("%s; exiting with status %d: restart the worker", why, EXIT_RESTART_ME)
    logging.shutdown()
    os._exit(EXIT_RESTART_ME)


def exit_without_commit(exc: BaseException) -> None:
    """End the worker before Faust commits offsets past a record Kafka refused: whoever takes
    the partitions next processes that input again (at-least-once)."""
    exit_for_restart(f"Kafka did not take a record the agent wrote ({exc!r})")


class AgentOutput:
    """What the agent writes per event: a device's state (table store and changelog) and its
    status changes, straight through the app's Kafka producer.

    Faust's `table[key] = value` and `Topic.send` wrap every record in a future of their own, a
    buffer task and sensor calls; measured here, that cost more than half of the worker's time
    per event (`python -m bench.worker_throughput`). This class does what they do, at
    the producer's own cost:

    - a state goes to the table's store (RocksDB: the database of the current event's partition,
      as Faust does) and to the table's changelog topic, same partition, same raw bytes; when
      Kafka has it, its offset is recorded in the store, as Faust's own changelog callback does,
      so recovery reads the changelog only from there;
    - a status change goes to `presence.status`, partitioned by the producer's murmur2 of the key.

    At-least-once holds: Faust flushes the producer before it commits offsets, and a record
    Kafka refused (after the producer's own retries) calls `on_failure`, which in the worker ends
    the process at once (`exit_without_commit`): raising in the agent would not do, since Faust
    acknowledges the event an agent raised on and restarts the agent. Nothing more is written
    after a failure (`DeliveryError`).
    """

    def __init__(
        self,
        producer: Any,
        table: Any,
        status_topic: str,
        metrics: WorkerMetrics,
        on_failure: Callable[[BaseException], None],
        fence: SessionFence | None = None,
    ) -> None:
        self.producer = producer
        self.table = table
        self.status_topic = status_topic
        self.metrics = metrics
        self.on_failure = on_failure
        self.fence = fence  # asked before each write: a process paused past its session ends
        self.failure: BaseException | None = None

    async def put_state(self, key: bytes, value: bytes, partition: int) -> None:
        self.raise_failure()
        if self.fence is not None:
            self.fence.check()
        self.table.data[key] = value
        changelog = self.table.changelog_topic_name
        delivery = await self.producer.send(changelog, key, value, partition, None, None)
        delivery.add_done_callback(self._state_persisted)

    async def send_status(self, key: bytes, change: StatusChange, *, count: bool = True) -> None:
        self.raise_failure()
        if self.fence is not None:
            self.fence.check()
        delivery = await self.producer.send(
            self.status_topic, key, encode(change), None, None, None
        )
        delivery.add_done_callback(self._check_delivery)
        if count:
            self.metrics.changes_by_status[change.status].inc()
            self.metrics.reasons[change.reason].inc()

    def _state_persisted(self, delivery: asyncio.Future[Any]) -> None:
        if self._check_delivery(delivery):
            sent = delivery.result()
            self.table.data.set_persisted_offset(sent.topic_partition, sent.offset)

    def _check_delivery(self, delivery: asyncio.Future[Any]) -> bool:
        exc = None if delivery.cancelled() else delivery.exception()
        if exc is None:
            return True
        if self.failure is None:
            self.failure = exc
            self.metrics.send_errors.inc()
            self.on_failure(exc)
        return False

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise DeliveryError(
                f"a record was not delivered: {self.failure!r}; stopping before the offsets "
                "past it are committed"
            ) from self.failure
