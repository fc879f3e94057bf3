"""The worker's topology: topics, the device table, the agent and the clock.

Built by a function on an app (no module globals). The agent only decodes, calls the pure core,
writes the table and sends; it never dies on a bad record (it goes to the dead-letter topic with
the reason) and never skips one silently.

Time: Faust tables must be written from the stream, and timers run on every worker. So each
worker's timer sends a tick into `presence.ticks` for each `presence.raw` partition it owns; the
agent reads both topics (equal partition counts, same subscribers: Faust co-partitions them), so
a tick for partition p reaches the owner of p, in the stream, and every state change, expired
grace periods included, happens in the agent and goes through the table's changelog.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import faust
import msgspec
from kafka.partitioner.default import murmur2

from mqtt_presence.core import (
    ConnectionEvent,
    DeviceState,
    Input,
    PresenceConfig,
    StatusChange,
    Tick,
    decode_state,
    encode_state,
    last_change,
    next_deadline,
    transition,
)
from mqtt_presence.core.records import DeadLetterRecord
from mqtt_presence.outages import Outages
from mqtt_presence.streams.config import WorkerSettings
from mqtt_presence.streams.metrics import WorkerMetrics

log = logging.getLogger("presence.worker")

_decode_event = msgspec.json.Decoder(ConnectionEvent).decode
_decode_tick = msgspec.json.Decoder(dict[str, int]).decode
_encode = msgspec.json.Encoder().encode


RECOVERY_PROGRESS_EVERY = 50_000  # devices between progress lines while a worker recovers
RECOVERY_WATCH_INTERVAL_S = 5.0


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a key (murmur2, as the bridge and Java clients use)."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


@dataclass
class DeadlineIndex:
    """Which devices of each partition have a deadline, and when. Derived from the table (the
    deadlines live in each device's state), rebuilt after recovery, kept in memory."""

    by_partition: dict[int, dict[bytes, int]] = field(default_factory=dict)

    def update(self, partition: int, key: bytes, due: int | None) -> None:
        devices = self.by_partition.setdefault(partition, {})
        if due is None:
            devices.pop(key, None)
        else:
            devices[key] = due

    def due(self, partition: int, now: int) -> list[bytes]:
        devices = self.by_partition.get(partition, {})
        return sorted(key for key, due in devices.items() if due <= now)

    def __len__(self) -> int:
        return sum(len(d) for d in self.by_partition.values())


@dataclass
class Topology:
    """What the views and the tests need to reach."""

    raw: Any
    ticks: Any
    status: Any
    dlq: Any
    table: Any
    deadlines: DeadlineIndex
    config: PresenceConfig
    settings: WorkerSettings
    metrics: WorkerMetrics
    output: AgentOutput
    # raw partitions this process has held since its last recovery: their changes all went out
    held_partitions: set[int] = field(default_factory=set)

    def state_of(self, device: str) -> DeviceState | None:
        value = self.table.get(device.encode())
        return decode_state(value) if value is not None else None

    def local_states(self, partitions: set[int] | None = None) -> Iterator[DeviceState]:
        """The states this worker holds (of the given partitions only, if given)."""
        for key, value in list(self.table.items()):
            if value is None:
                continue
            if partitions is None or partition_of(key, self.settings.partitions) in partitions:
                yield decode_state(value)


def clock_skew(received_at: int, now: int, bound_ms: int) -> str | None:
    """Why a raw event's receive time cannot be trusted, or None. The core's clock only goes
    forward: one event stamped a year ahead would hold every later event of its device at that
    time and schedule its deadlines a year out."""
    ahead = received_at - now
    if ahead <= bound_ms:
        return None
    return (
        f"received_at {received_at} is {ahead / 1000:.0f} s ahead of this worker's clock "
        f"(max_clock_skew_s is {bound_ms / 1000:.0f}): check the clock of the bridge that wrote it"
    )


TABLE_NAME = "device-state"


def changelog_topic(app_id: str) -> str:
    """The name Faust gives the table's changelog topic."""
    return f"{app_id}-{TABLE_NAME}-changelog"


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


@dataclass
class RecoveryWatch:
    """Tells when a table recovery has stalled: changelog records remain to be read and none
    was read for `stall_s` seconds. Faust's recovery can wait forever after a rebalance (seen
    here, and in Faust's tracker: robinhood/faust#218); a fresh process recovers afresh."""

    stall_s: float
    _remaining: int | None = None
    _since: float = 0.0

    def stalled(self, now: float, in_recovery: bool, remaining: int) -> bool:
        if not in_recovery or remaining != self._remaining:
            self._remaining = remaining if in_recovery else None
            self._since = now
            return False
        return remaining > 0 and now - self._since >= self.stall_s


class AgentOutput:
    """What the agent writes per event: a device's state (table store and changelog) and its
    status changes, straight through the app's Kafka producer.

    Faust's `table[key] = value` and `Topic.send` wrap every record in a future of their own, a
    buffer task and sensor calls; measured here, that cost more than half of the worker's time
    per event (bench/worker_throughput.py, and the issue note). This class does what they do, at
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
    ) -> None:
        self.producer = producer
        self.table = table
        self.status_topic = status_topic
        self.metrics = metrics
        self.on_failure = on_failure
        self.failure: BaseException | None = None

    async def put_state(self, key: bytes, value: bytes, partition: int) -> None:
        self.raise_failure()
        self.table.data[key] = value
        changelog = self.table.changelog_topic_name
        delivery = await self.producer.send(changelog, key, value, partition, None, None)
        delivery.add_done_callback(self._state_persisted)

    async def send_status(self, key: bytes, change: StatusChange, *, count: bool = True) -> None:
        self.raise_failure()
        delivery = await self.producer.send(
            self.status_topic, key, _encode(change), None, None, None
        )
        delivery.add_done_callback(self._check_delivery)
        if count:
            self.metrics.changes_by_status[change.status].inc()

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


class Processor:
    """What the agent does with one record: decode, apply the core, write the table, send.

    A tick (from `presence.ticks`) fires the due deadlines of its partition's devices. A record
    that cannot be processed goes to the dead-letter topic with the reason; nothing is skipped
    silently and no record stops the agent (only Kafka refusing what the agent wrote does: see
    `AgentOutput`).
    """

    def __init__(self, topology: Topology) -> None:
        self.t = topology

    async def handle(self, event: Any) -> None:
        message = event.message
        self.t.output.raise_failure()  # outside the try: this one must stop the agent
        try:
            if message.topic == self.t.settings.ticks_topic:
                now = _decode_tick(event.value)["now"]
                for key in self.t.deadlines.due(message.partition, now):
                    await self.apply(key, Tick(now), message.partition)
                self.t.metrics.ticks.inc()
                self.t.metrics.pending_deadlines.set(len(self.t.deadlines))
                return
            raw_event = _decode_event(event.value)
            if raw_event.device.encode() != event.key:
                raise ValueError(
                    f"record key {event.key!r} is not the device id {raw_event.device!r}"
                )
            skewed = clock_skew(
                raw_event.received_at,
                time.time_ns() // 1_000_000,
                int(self.t.settings.max_clock_skew_s * 1000),
            )
            if skewed is not None:
                await self.dead_letter(event, "clock_skew", skewed)
                return
            await self.apply(event.key, raw_event, message.partition)
            self.t.metrics.events.inc()
        except DeliveryError:
            raise  # not the record's fault: stop, and let it be processed again
        except (msgspec.DecodeError, ValueError, KeyError, TypeError) as exc:
            await self.dead_letter(event, "bad_record", str(exc))
        except Exception as exc:  # one bad record must not stop the agent
            log.exception("processing failed")
            await self.dead_letter(event, "processing_error", f"{type(exc).__name__}: {exc}")

    async def apply(self, key: bytes, inp: Input, partition: int) -> None:
        t = self.t
        previous = t.table.data.get(key)  # the store itself, as AgentOutput writes it
        state, changes = transition(decode_state(previous) if previous else None, inp, t.config)
        if state is None:
            return
        encoded = encode_state(state)
        if encoded != previous:  # a repeat changes nothing: no changelog record for it
            await t.output.put_state(key, encoded, partition)
            t.deadlines.update(partition, key, next_deadline(state, t.config))
        for change in changes:
            await t.output.send_status(key, change)

    async def dead_letter(self, event: Any, reason: str, detail: str) -> None:
        message = event.message
        record = DeadLetterRecord(
            reason=reason,
            detail=detail,
            topic=message.topic,
            payload_base64=base64.b64encode(event.value or b"").decode("ascii"),
            received_at=int(message.timestamp * 1000),
            source="worker",
        )
        log.warning(
            "dead letter (%s) from %s[%d]@%d: %s",
            reason,
            message.topic,
            message.partition,
            message.offset,
            detail,
        )
        await self.t.dlq.send(key=event.key or b"", value=_encode(record))
        self.t.metrics.dead_letters.labels(reason).inc()


def _raw_topic(app: faust.App, name: str, settings: WorkerSettings, **kw: Any) -> Any:
    # Keys and values are raw bytes everywhere: the key is the device id exactly as the bridge
    # wrote it, so Faust's routing hashes to the same partition (a JSON-quoted key would not).
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
        **kw,
    )


async def send_ticks(app: faust.App, ticks: Any, raw_topic: str, watch: WriteWatch) -> None:
    """Time passes: a tick into `presence.ticks` for each raw partition this worker owns, each
    watched until Kafka has it."""
    value = _encode({"now": time.time_ns() // 1_000_000})
    for tp in app.assignor.assigned_actives():
        if tp.topic == raw_topic:
            watch.sent(await ticks.send(key=b"tick", value=value, partition=tp.partition))
    watch.check(time.monotonic())


def build_topology(app: faust.App, settings: WorkerSettings, config: PresenceConfig) -> Topology:
    raw = _raw_topic(app, settings.raw_topic, settings)
    ticks = _raw_topic(app, settings.ticks_topic, settings)
    status = _raw_topic(app, settings.status_topic, settings, compacting=True)
    dlq = _raw_topic(app, settings.dlq_topic, settings)
    table = app.Table(
        TABLE_NAME,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
    )
    metrics = WorkerMetrics()
    metrics.watch(app.monitor)
    output = AgentOutput(app.producer, table, settings.status_topic, metrics, exit_without_commit)
    topology = Topology(
        raw, ticks, status, dlq, table, DeadlineIndex(), config, settings, metrics, output
    )
    source = app.topic(
        settings.raw_topic,
        settings.ticks_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    processor = Processor(topology)

    @app.agent(source, name="presence", concurrency=1)
    async def presence(stream: AsyncIterable[Any]) -> None:
        async for event in stream.events():  # type: ignore[attr-defined]
            await processor.handle(event)

    kafka_watch = WriteWatch.of(settings.kafka_stall_s, metrics)

    @app.timer(settings.tick_interval_s)  # type: ignore[untyped-decorator]
    async def clock() -> None:
        await send_ticks(app, ticks, settings.raw_topic, kafka_watch)

    watch = RecoveryWatch(settings.recovery_stall_s)

    @app.timer(RECOVERY_WATCH_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def watch_recovery() -> None:
        recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
        remaining = recovery.active_remaining_total() if recovery.in_recovery else 0
        if watch.stalled(time.monotonic(), bool(recovery.in_recovery), remaining):
            exit_for_restart(
                f"table recovery read nothing for {settings.recovery_stall_s:.0f} s with "
                f"{remaining} changelog records still to read"
            )

    @table.on_recover
    async def on_recovered() -> None:
        """Rebuild the deadline index from the recovered states, and re-announce the last change
        of each device this worker took over: a crash between writing a state to the changelog
        and its change to presence.status would otherwise lose that change. Consumers upsert by
        version, so the repeat (same version, same content) is harmless. Partitions this process
        held before the rebalance too are not re-announced: their changes all went out from here
        (or the process would have exited)."""
        active = {
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == settings.raw_topic
        }
        taken_over = active - topology.held_partitions
        index = DeadlineIndex()
        announced = 0
        started = time.monotonic()
        for seen, (key, value) in enumerate(list(table.items()), 1):
            if seen % RECOVERY_PROGRESS_EVERY == 0:  # a big fleet takes a while: say so
                log.info("recovery: %d devices read back, %d changes re-announced", seen, announced)
                await asyncio.sleep(0)  # let the web views and the timers run meanwhile
            if value is None:
                continue
            state = decode_state(value)
            partition = partition_of(key, settings.partitions)
            index.update(partition, key, next_deadline(state, config))
            if settings.reannounce_on_recovery and partition in taken_over:
                change = last_change(state)
                if app.should_stop:  # the producer is closing: whoever recovers next announces
                    log.info("stopping: re-announcement cut short after %d changes", announced)
                    return
                if change is not None:
                    await output.send_status(key, change, count=False)
                    announced += 1
        topology.deadlines.by_partition = index.by_partition
        topology.held_partitions = active
        log.info(
            "recovered %d devices, %d with a pending deadline; holding partitions %s; "
            "%d changes re-announced for the ones taken over %s (%.1f s)",
            len(table),
            len(index),
            sorted(active),
            announced,
            sorted(taken_over),
            time.monotonic() - started,
        )

    del presence, clock, watch_recovery, on_recovered  # registered on the app
    return topology


def status_view(state: DeviceState) -> dict[str, Any] | None:
    """What `GET /devices/{id}` says about one device: its last change, as on presence.status."""
    change = last_change(state)
    if change is None:
        return None
    return {
        "device": change.device,
        "status": change.status.value,
        "since": change.since,
        "version": change.version,
        "reason": change.reason.value,
        "session": change.session,
        "flapping": change.flapping,
        "verified": change.verified,
        "current_session": state.session,  # the connection the device is on now
    }
