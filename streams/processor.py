"""What the agent does with one record: decode, apply the pure core, write, send.

Built from its parts (the table's store, the deadline index, the output, the dead-letter topic),
so it runs without Faust or Kafka in a unit test. A tick (from `presence.ticks`) fires the due
deadlines of its partition's devices. A record that cannot be processed goes to the dead-letter
topic with the reason; nothing is skipped silently and no record stops the agent (only Kafka
refusing what the agent wrote does: see `output`).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from mqtt_presence.core import (
    ConnectionEvent,
    EventKind,
    Input,
    PresenceConfig,
    StatusChange,
    Tick,
    decode_state,
    encode_state,
    next_deadline,
    transition,
)
from mqtt_presence.core.records import (
    BRIDGE_HEADER,
    BridgeProgress,
    DeadLetterRecord,
    header,
    is_progress,
)
from mqtt_presence.core.schedule import Schedule
from mqtt_presence.streams.metrics import WorkerMetrics
from mqtt_presence.streams.output import DeliveryError, encode
from mqtt_presence.streams.skips import SkipWatch
from mqtt_presence.streams.status_index import StatusIndex, category
from mqtt_presence.streams.watermarks import Watermarks, in_time

log = logging.getLogger("presence.worker")

decode_event = msgspec.json.Decoder(ConnectionEvent).decode
decode_tick = msgspec.json.Decoder(dict[str, int]).decode
decode_progress = msgspec.json.Decoder(BridgeProgress).decode
LIFE = {EventKind.BIRTH, EventKind.CONNECTED, EventKind.ACTIVITY}  # signs of life


@dataclass
class DeadlineIndex:
    """Which devices of each partition have a deadline, and when: one `Schedule` per partition.
    Derived from the table (the deadlines live in each device's state), rebuilt after recovery,
    kept in memory; a tick takes out only the devices due, never scans the others."""

    by_partition: dict[int, Schedule[bytes]] = field(default_factory=dict)

    def update(self, partition: int, key: bytes, due: int | None) -> None:
        schedule = self.by_partition.get(partition)
        if schedule is None:
            if due is None:
                return
            schedule = self.by_partition[partition] = Schedule()
        schedule.set(key, due)

    def pop_due(self, partition: int, now: int) -> list[bytes]:
        schedule = self.by_partition.get(partition)
        return schedule.pop_due(now) if schedule is not None else []

    def __len__(self) -> int:
        return sum(len(s) for s in self.by_partition.values())


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


class Output(Protocol):
    """Where the agent's records go (`output.AgentOutput` in a worker)."""

    async def put_state(self, key: bytes, value: bytes, partition: int) -> None: ...
    async def send_status(
        self, key: bytes, change: StatusChange, partition: int, *, count: bool = True
    ) -> None: ...
    def raise_failure(self) -> None: ...


class Event(Protocol):
    """The parts of a Faust event the processor reads."""

    key: bytes | None
    value: bytes | None
    message: Any  # topic, partition, offset, timestamp


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Processor:
    store: MutableMapping[bytes, bytes]  # the table's store: the current states, by device id
    deadlines: DeadlineIndex
    config: PresenceConfig
    ticks_topic: str
    max_clock_skew_ms: int
    output: Output
    dead_letters: Callable[[bytes, bytes], Awaitable[Any]]  # (key, record) to presence.dlq
    metrics: WorkerMetrics
    clock_ms: Callable[[], int] = wall_clock_ms
    statuses: StatusIndex = field(default_factory=StatusIndex)
    skips: SkipWatch | None = None  # raw records Faust never handed over (see `skips`)
    watermarks: Watermarks = field(default_factory=lambda: Watermarks(silence_ms=15_000))

    async def handle(self, event: Event) -> None:
        message = event.message
        self.output.raise_failure()  # outside the try: this one must stop the agent
        skips = self.skips
        skipped = (
            skips is not None
            and message.topic != self.ticks_topic
            and not skips.in_order(message.partition, message.offset)
            and not await skips.check(message.partition, message.offset)
        )
        if skipped:
            return  # records before this one were never handed over: the process is ending
        try:
            if message.topic == self.ticks_topic:
                now = decode_tick(event.value or b"")["now"]
                held = self.watermarks.clock(message.partition, now)
                self.metrics.held_back.set((now - held) / 1000)
                await self.fire(message.partition, held)
                self.metrics.ticks.inc()
                self.metrics.pending_deadlines.set(len(self.deadlines))
                return
            if is_progress(getattr(message, "headers", None)):
                progress = decode_progress(event.value or b"")
                self.watermarks.update(
                    message.partition, progress.bridge, progress.watermark, self.clock_ms()
                )
                return
            raw_event = decode_event(event.value or b"")
            if raw_event.device.encode() != event.key:
                raise ValueError(
                    f"record key {event.key!r} is not the device id {raw_event.device!r}"
                )
            skewed = clock_skew(raw_event.received_at, self.clock_ms(), self.max_clock_skew_ms)
            if skewed is not None:
                await self.dead_letter(event, "clock_skew", skewed)
                return
            raw_event = self.benefit_of_doubt(raw_event, message)
            await self.apply(event.key, raw_event, message.partition)
            self.metrics.counts.events += 1
        except DeliveryError:
            raise  # not the record's fault: stop, and let it be processed again
        except (msgspec.DecodeError, ValueError, KeyError, TypeError) as exc:
            await self.dead_letter(event, "bad_record", str(exc))
        except Exception as exc:  # one bad record must not stop the agent
            log.exception("processing failed")
            await self.dead_letter(event, "processing_error", f"{type(exc).__name__}: {exc}")

    def benefit_of_doubt(self, event: ConnectionEvent, message: Any) -> ConnectionEvent:
        """A sign of life from a bridge that lagged behind the device's grace deadline counts
        as in time (see `watermarks.in_time`)."""
        if event.kind not in LIFE or not self.watermarks.by_partition:
            return event
        bridge = header(getattr(message, "headers", None), BRIDGE_HEADER)
        if bridge is None:
            return event
        watermark = self.watermarks.of(message.partition, bridge.decode(errors="replace"))
        stored = self.store.get(event.device.encode())
        if watermark is None or stored is None:
            return event
        state = decode_state(stored)
        at = in_time(event.received_at, watermark, state.due, state.clock)
        if at == event.received_at:
            return event
        self.metrics.in_time.inc()
        return msgspec.structs.replace(event, received_at=at)

    async def fire(self, partition: int, now: int) -> None:
        """The devices of `partition` due at `now`, each through the core. One that fails puts
        the ones not yet done back, due now: the next tick fires them, none is forgotten."""
        due = self.deadlines.pop_due(partition, now)
        for done, key in enumerate(due):
            try:
                await self.apply(key, Tick(now), partition, reindex=True)
            except BaseException:
                for left in due[done:]:
                    self.deadlines.update(partition, left, now)
                raise

    async def apply(self, key: bytes, inp: Input, partition: int, *, reindex: bool = False) -> None:
        """One input through the core. `reindex`: the device was taken out of the deadline
        index (a tick fired it) and goes back in whatever the core decides."""
        previous = self.store.get(key)
        before = decode_state(previous) if previous else None
        state, changes = transition(before, inp, self.config)  # `before` is left as it was
        if state is None:
            return
        self.statuses.update(partition, state.device, category(before), category(state))
        encoded = encode_state(state)
        if encoded != previous:  # nothing changed (a tick with nothing due): nothing to write
            await self.output.put_state(key, encoded, partition)
            reindex = True
        if reindex:
            self.deadlines.update(partition, key, next_deadline(state, self.config))
        for change in changes:
            await self.output.send_status(key, change, partition)

    async def dead_letter(self, event: Event, reason: str, detail: str) -> None:
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
        await self.dead_letters(event.key or b"", encode(record))
        self.metrics.dead_letters.labels(reason).inc()
