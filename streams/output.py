"""What the worker writes, and what it does when Kafka will not take it.

`AgentOutput` writes a device's state (table store and changelog) and its status changes as
record batches of the app's producer; `WriteWatch` tells when Kafka stopped acknowledging the
worker's writes (one line each way); a record Kafka refused ends the process before any offset
past it is committed (`exit_without_commit`, status 75: "restart me").
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from kafka.partitioner.default import murmur2

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


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a key (murmur2, as the bridge and Java clients use)."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


class AgentOutput:
    """What the agent writes per event: a device's state (table store and changelog) and its
    status changes, as record batches of the app's Kafka producer.

    Faust's `table[key] = value` and `Topic.send` wrap every record in a future of their own, a
    buffer task and sensor calls, and even aiokafka's `send` makes a future per record that the
    event loop must settle: measured here, sending each record cost a third of the worker's
    time per event (`python -m bench.worker_throughput`). So:

    - a state goes to the table's store at once (RocksDB: the database of the current event's
      partition, as Faust does) and waits for the changelog in a per-partition map: a device's
      newer state replaces one not sent yet (the changelog is compacted: only the newest
      counts);
    - a status change waits in a list, in order (every change is a version consumers see);
    - every `linger_s` (or at `max_pending` records, or when Faust commits) what waits goes out
      as one closed batch per partition (`create_batch`, `send_batch`: one future a batch), the
      status changes to the partition of the producer's murmur2 of the key; when Kafka has a
      changelog batch, its last offset is recorded in the store, as Faust's own changelog
      callback does, so recovery reads the changelog only from there.

    At-least-once holds: Faust flushes the producer before it commits offsets, and the worker
    has that flush send what waits here first (`flush_before_commits`), so no offset is
    committed past an event whose records are not in Kafka. A batch Kafka refused (after the
    producer's own retries) calls `on_failure`, which in the worker ends the process at once
    (`exit_without_commit`): raising in the agent would not do, since Faust acknowledges the
    event an agent raised on and restarts the agent. Nothing more is written after a failure
    (`DeliveryError`). The session fence is asked before each flush, and guards each request of
    the producer too.
    """

    def __init__(
        self,
        producer: Callable[[], Any],
        table: Any,
        status_topic: str,
        metrics: WorkerMetrics,
        on_failure: Callable[[BaseException], None],
        fence: SessionFence | None = None,
        *,
        key_partitions: int,
        linger_s: float = 0.01,
        max_pending: int = 5_000,
    ) -> None:
        self.producer = producer  # aiokafka's producer, once the app has started it
        self.table = table
        self.status_topic = status_topic
        self.metrics = metrics
        self.on_failure = on_failure
        self.fence = fence
        self.key_partitions = key_partitions  # the count the callers' partitions are among
        self.linger_s = linger_s
        self.max_pending = max_pending
        self.failure: BaseException | None = None
        self._states: dict[int, dict[bytes, bytes]] = {}
        self._statuses: list[tuple[bytes, bytes, int]] = []
        self._pending = 0
        self._flushing = asyncio.Lock()  # one flush at a time: batches leave in order
        self._timer: asyncio.TimerHandle | None = None
        self._flush_task: asyncio.Task[None] | None = None

    # put_state and send_status are the agent's per-event path: a coroutine is awaited only when
    # the output is full, and the failure is read as an attribute before the method is called.

    async def put_state(self, key: bytes, value: bytes, partition: int) -> None:
        if self.failure is not None:
            self.raise_failure()
        self.table.data[key] = value
        waiting = self._states.get(partition)
        if waiting is None:
            waiting = self._states[partition] = {}
        waiting[key] = value
        if self._added():
            await self.flush()

    async def send_status(
        self, key: bytes, change: StatusChange, partition: int, *, count: bool = True
    ) -> None:
        """`partition`: the key's partition among `key_partitions` (the device's raw partition):
        presence.status has as many by default, and then it is the key's partition there too
        (murmur2 in Python costs about 2 us a key)."""
        if self.failure is not None:
            self.raise_failure()
        self._statuses.append((key, encode(change), partition))
        if count:
            counts = self.metrics.counts
            counts.by_status[change.status] += 1
            counts.by_reason[change.reason] += 1
        if self._added():
            await self.flush()

    @property
    def pending(self) -> int:
        """Records waiting for the next flush (a state replaced meanwhile counts twice)."""
        return self._pending

    def _added(self) -> bool:
        """One more record waits: True when the output is full and must be flushed now, else
        the linger's timer is running."""
        self._pending += 1
        if self._pending >= self.max_pending:
            return True
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger_s, self._flush_soon)
        return False

    def _flush_soon(self) -> None:
        self._timer = None
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.ensure_future(self.flush())
        else:  # one is running: what came since goes after it
            self._timer = asyncio.get_running_loop().call_later(self.linger_s, self._flush_soon)

    async def flush(self) -> None:
        """Send what waits, one closed batch per partition; return once the producer has them
        (not once Kafka has: the producer's own flush waits for that)."""
        async with self._flushing:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            states, statuses = self._states, self._statuses
            self._states, self._statuses, self._pending = {}, [], 0
            if self.failure is not None or not (states or statuses):
                return
            if self.fence is not None:
                self.fence.check()
            producer = self.producer()
            try:
                changelog = self.table.changelog_topic_name
                for partition, latest in states.items():
                    await self._send(producer, changelog, partition, latest.items(), True)
                if statuses:
                    count = len(await producer.partitions_for(self.status_topic))
                    same = count == self.key_partitions
                    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
                    for key, value, partition in statuses:
                        to = partition if same else partition_of(key, count)
                        by_partition.setdefault(to, []).append((key, value))
                    for partition, records in by_partition.items():
                        await self._send(producer, self.status_topic, partition, records, False)
            except Exception as exc:  # e.g. the producer closed, or no room for 30 s
                self._failed(exc)

    async def _send(
        self,
        producer: Any,
        topic: str,
        partition: int,
        records: Iterable[tuple[bytes, bytes]],
        persisted: bool,
    ) -> None:
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                await self._submit(producer, batch, topic, partition, persisted)
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # an empty batch takes one
        await self._submit(producer, batch, topic, partition, persisted)

    async def _submit(
        self, producer: Any, batch: Any, topic: str, partition: int, persisted: bool
    ) -> None:
        batch.close()  # closed: the producer sends it at once, it lingered here already
        records = batch.record_count()
        delivery = await producer.send_batch(batch, topic, partition=partition)
        if persisted:
            delivery.add_done_callback(lambda d: self._state_persisted(d, records))
        else:
            delivery.add_done_callback(self._check_delivery)

    def _state_persisted(self, delivery: asyncio.Future[Any], records: int) -> None:
        if self._check_delivery(delivery):
            sent = delivery.result()  # the batch's first offset (None only with acks=0)
            if sent is not None:
                last = sent.offset + records - 1
                self.table.data.set_persisted_offset(sent.topic_partition, last)

    def _check_delivery(self, delivery: asyncio.Future[Any]) -> bool:
        exc = None if delivery.cancelled() else delivery.exception()
        if exc is None:
            return True
        self._failed(exc)
        return False

    def _failed(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
            self.metrics.send_errors.inc()
            self.on_failure(exc)

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise DeliveryError(
                f"a record was not delivered: {self.failure!r}; stopping before the offsets "
                "past it are committed"
            ) from self.failure
