"""The agent's processing of one record, without Faust or Kafka: raw events through the core,
ticks firing the due deadlines of their partition, and every bad record dead-lettered with its
reason (one bad record never stops the agent)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from mqtt_presence.core import PresenceConfig, Status, StatusChange
from mqtt_presence.core.state import decode_state
from mqtt_presence.streams.metrics import WorkerMetrics
from mqtt_presence.streams.output import DeliveryError
from mqtt_presence.streams.processor import DeadlineIndex, Processor

RAW, TICKS = "presence.raw", "presence.ticks"
NOW = 1_700_000_000_000


@dataclass
class Message:
    topic: str
    partition: int = 0
    offset: int = 0
    timestamp: float = NOW / 1000


@dataclass
class Event:
    key: bytes | None
    value: bytes | None
    message: Message


@dataclass
class Written:
    states: list[tuple[bytes, int]] = field(default_factory=list)
    changes: list[StatusChange] = field(default_factory=list)
    failure: BaseException | None = None
    store: dict[bytes, bytes] = field(default_factory=dict)

    async def put_state(self, key: bytes, value: bytes, partition: int) -> None:
        self.store[key] = value
        self.states.append((key, partition))

    async def send_status(
        self, key: bytes, change: StatusChange, partition: int, *, count: bool = True
    ) -> None:
        self.changes.append(change)

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise DeliveryError("a record was not delivered")


@dataclass
class Rig:
    written: Written = field(default_factory=Written)
    letters: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    processor: Processor = field(init=False)

    def __post_init__(self) -> None:
        async def dead_letter(key: bytes, value: bytes) -> None:
            self.letters.append((key, json.loads(value)))

        self.processor = Processor(
            store=self.written.store,
            deadlines=DeadlineIndex(),
            config=PresenceConfig(offline_grace_ms=5_000),
            ticks_topic=TICKS,
            max_clock_skew_ms=300_000,
            output=self.written,
            dead_letters=dead_letter,
            metrics=self.metrics,
            clock_ms=lambda: NOW,
        )

    def raw(self, device: str, kind: str, at: int, partition: int = 0, **extra: Any) -> None:
        body = {"device": device, "kind": kind, "received_at": at, "session": 1, **extra}
        self.handle(Event(device.encode(), json.dumps(body).encode(), Message(RAW, partition)))

    def tick(self, now: int, partition: int = 0) -> None:
        value = msgspec.json.encode({"now": now})
        self.handle(Event(b"tick", value, Message(TICKS, partition)))

    def handle(self, event: Event) -> None:
        asyncio.run(self.processor.handle(event))

    def status(self, device: str) -> Status | None:
        return decode_state(self.written.store[device.encode()]).status


def test_a_birth_is_stored_on_its_partition_and_announced() -> None:
    rig = Rig()
    rig.raw("cam-1", "birth", NOW, partition=3)
    assert rig.written.states == [(b"cam-1", 3)]
    assert [(c.device, c.status) for c in rig.written.changes] == [("cam-1", Status.ONLINE)]
    assert rig.metrics.counts.events == 1


def test_a_repeat_is_counted_as_suppressed_and_announces_nothing() -> None:
    rig = Rig()
    rig.raw("cam-1", "birth", NOW)
    rig.raw("cam-1", "birth", NOW)  # the same record processed again after a restart
    assert len(rig.written.changes) == 1
    assert decode_state(rig.written.store[b"cam-1"]).suppressed == 1
    states = len(rig.written.states)
    rig.tick(NOW + 1_000)  # a tick with nothing due writes nothing
    assert len(rig.written.states) == states


def test_a_tick_fires_only_the_due_deadlines_of_its_own_partition() -> None:
    rig = Rig()
    rig.raw("a", "birth", NOW, partition=0)
    rig.raw("b", "birth", NOW, partition=1)
    rig.raw("a", "will", NOW + 1_000, partition=0)
    rig.raw("b", "will", NOW + 1_000, partition=1)
    assert len(rig.processor.deadlines) == 2  # both grace periods running
    rig.tick(NOW + 5_999, partition=0)  # not yet
    assert rig.status("a") is Status.ONLINE
    rig.tick(NOW + 6_000, partition=0)
    assert rig.status("a") is Status.OFFLINE
    assert rig.status("b") is Status.ONLINE  # partition 1's tick has not come
    assert len(rig.processor.deadlines) == 1
    assert rig.metrics.pending_deadlines._value.get() == 1
    statuses = rig.processor.statuses  # what /fleet and /devices?status= answer from
    assert statuses.counts({0, 1}) == {"online": 1, "offline": 1, "sleeping": 0, "flapping": 0}
    assert statuses.page({0, 1}, "offline", "", 10) == (["a"], False)
    assert statuses.page({1}, "offline", "", 10) == ([], False)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"x", b"\xff\xfe not a record", "bad_record"),
        (b"cam-2", b'{"device":"cam-1","kind":"birth","received_at":1}', "bad_record"),
        (b"cam-1", b'{"device":"cam-1","kind":"nonsense","received_at":1}', "bad_record"),
        (
            b"cam-1",
            b'{"device":"cam-1","kind":"birth","received_at":%d}' % (NOW + 10**9),
            "clock_skew",
        ),
        (b"tick", b'{"later": 5}', "bad_record"),
    ],
)
def test_a_record_that_cannot_be_processed_is_a_dead_letter_with_its_reason(
    key: bytes, value: bytes, reason: str
) -> None:
    rig = Rig()
    topic = TICKS if key == b"tick" else RAW
    rig.handle(Event(key, value, Message(topic, partition=2, offset=41)))
    assert [(k, letter["reason"], letter["source"]) for k, letter in rig.letters] == [
        (key, reason, "worker")
    ]
    assert rig.letters[0][1]["topic"] == topic
    assert rig.written.states == []
    assert rig.metrics.dead_letters.labels(reason)._value.get() == 1
    rig.raw("cam-9", "birth", NOW)  # and the agent goes on
    assert rig.status("cam-9") is Status.ONLINE


def test_a_record_kafka_refused_stops_the_agent_instead_of_a_dead_letter() -> None:
    rig = Rig()
    rig.written.failure = RuntimeError("not leader")
    with pytest.raises(DeliveryError):
        rig.raw("cam-1", "birth", NOW)
    assert rig.letters == []


def test_a_device_that_fails_on_a_tick_leaves_none_of_the_due_ones_forgotten() -> None:
    rig = Rig()
    for device in ("a", "b"):
        rig.raw(device, "birth", NOW)
        rig.raw(device, "will", NOW + 1_000)
    put_state = rig.written.put_state
    failing = {"once": True}

    async def fails_once(key: bytes, value: bytes, partition: int) -> None:
        if failing.pop("once", False):
            raise RuntimeError("the store is full")
        await put_state(key, value, partition)

    rig.written.put_state = fails_once  # type: ignore[method-assign]
    rig.tick(NOW + 6_000)
    assert [letter["reason"] for _, letter in rig.letters] == ["processing_error"]
    assert len(rig.processor.deadlines) == 2  # both still due
    rig.tick(NOW + 7_000)
    assert (rig.status("a"), rig.status("b")) == (Status.OFFLINE, Status.OFFLINE)
    assert len(rig.processor.deadlines) == 0
