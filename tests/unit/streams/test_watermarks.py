"""Offline graces held back to the slowest bridge's progress.

The case (issue 11's storm with two bridges sharing a subscription): a device's stale will
reached Kafka through one bridge while its new birth still waited, more than the grace, in the
other bridge's queue at the broker; the worker ended the grace on its own clock and showed a
device offline that never was (10 of 95,000). Outside reference: with a shared subscription
the broker hands each message to one member ("$share", MQTT 5.0, 4.8.2), so two messages of one
device may travel different queues; order is kept only within one session's queue.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.core.records import BRIDGE_HEADER, PROGRESS_HEADER
from mqtt_presence.core.state import decode_state
from mqtt_presence.streams.watermarks import Watermarks, in_time

from .test_processor import NOW, RAW, Event, Message, Rig


def test_without_progress_records_the_clock_is_the_workers() -> None:
    assert Watermarks(silence_ms=15_000).clock(3, NOW) == NOW


def test_the_slowest_live_bridge_holds_the_clock_back() -> None:
    w = Watermarks(silence_ms=15_000)
    w.update(0, "bridge-a", NOW - 500, read_at=NOW)
    w.update(0, "bridge-b", NOW - 6_000, read_at=NOW)
    assert w.clock(0, NOW) == NOW - 6_000
    assert w.behind(0, NOW) == 6_000
    assert w.clock(1, NOW) == NOW  # another partition: nothing read there


def test_a_bridge_silent_longer_than_the_bound_holds_nothing_back() -> None:
    w = Watermarks(silence_ms=15_000)
    w.update(0, "gone", NOW - 60_000, read_at=NOW - 16_000)
    w.update(0, "alive", NOW - 1_000, read_at=NOW)
    assert w.clock(0, NOW) == NOW - 1_000


def test_a_bridge_watermark_never_goes_back() -> None:
    w = Watermarks(silence_ms=15_000)
    w.update(0, "b", NOW - 1_000, read_at=NOW)
    w.update(0, "b", NOW - 3_000, read_at=NOW)  # a probe from a bridge with a slower clock
    assert w.clock(0, NOW) == NOW - 1_000


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 100_000), st.integers(0, 100)),
        max_size=40,
    ),
    st.integers(0, 200_000),
)
def test_the_clock_is_never_ahead_of_now_nor_of_a_live_bridge(
    updates: list[tuple[str, int, int]], now: int
) -> None:
    w = Watermarks(silence_ms=50)
    for bridge, watermark, age in updates:
        w.update(0, bridge, watermark, read_at=now - age)
    clock = w.clock(0, now)
    assert clock <= now
    for watermark, read_at in w.by_partition.get(0, {}).values():
        if now - read_at <= 50:
            assert clock <= watermark


def progress(rig: Rig, bridge: str, watermark: int, partition: int = 0) -> None:
    value = json.dumps({"bridge": bridge, "watermark": watermark}).encode()
    message: Any = Message(RAW, partition)
    message.headers = [(PROGRESS_HEADER, bridge.encode())]
    rig.handle(Event(b"", value, message))


def test_a_will_does_not_end_in_offline_while_a_bridge_lags_behind_its_deadline() -> None:
    rig = Rig()
    rig.raw("cam", "birth", NOW - 20_000)
    rig.raw("cam", "will", NOW - 10_000)  # through bridge a; grace 5 s: due at NOW - 5,000
    progress(rig, "a", NOW)
    progress(rig, "b", NOW - 8_000)  # bridge b is 8 s behind at the broker
    rig.tick(NOW)
    assert [c.status for c in rig.written.changes] == ["online"]  # held: no offline yet
    # b catches up: the birth of session 2 was waiting in its queue
    rig.raw("cam", "birth", NOW - 7_000, session=2)
    progress(rig, "b", NOW)
    rig.tick(NOW)
    assert [c.status for c in rig.written.changes] == ["online"]  # never offline
    assert rig.letters == []


def test_a_will_ends_in_offline_once_every_bridge_passed_its_deadline() -> None:
    rig = Rig()
    rig.raw("cam", "birth", NOW - 20_000)
    rig.raw("cam", "will", NOW - 10_000)
    progress(rig, "a", NOW - 8_000)
    rig.tick(NOW)
    assert [c.status for c in rig.written.changes] == ["online"]
    progress(rig, "a", NOW - 4_000)  # past the deadline (NOW - 5,000): nothing came meanwhile
    rig.tick(NOW)
    assert [c.status for c in rig.written.changes] == ["online", "offline"]
    assert rig.written.changes[-1].decided_at == NOW - 5_000  # at the deadline itself


def test_progress_records_are_not_device_events_nor_dead_letters() -> None:
    rig = Rig()
    progress(rig, "a", NOW)
    assert rig.written.changes == []
    assert rig.written.states == []
    assert rig.letters == []
    asyncio.run(asyncio.sleep(0))


def raw_from(rig: Rig, bridge: str, device: str, kind: str, at: int, session: int) -> None:
    body = {"device": device, "kind": kind, "received_at": at, "session": session}
    message: Any = Message(RAW, 0)
    message.headers = [(BRIDGE_HEADER, bridge.encode())]
    rig.handle(Event(device.encode(), json.dumps(body).encode(), message))


def test_a_birth_handed_on_late_by_a_lagging_bridge_counts_as_in_time() -> None:
    # The case CI's two-bridge test found: the grace was held while bridge b lagged, but the
    # birth it then handed on, stamped with its late receive time (past the deadline), made the
    # core end the grace first: offline, then online again.
    rig = Rig()
    raw_from(rig, "b", "cam", "birth", NOW - 20_000, session=1)
    progress(rig, "b", NOW - 12_000)  # b's last word before it stalled
    raw_from(rig, "a", "cam", "will", NOW - 10_000, session=1)  # due at NOW - 5,000
    progress(rig, "a", NOW)
    rig.tick(NOW)
    raw_from(rig, "b", "cam", "birth", NOW + 1_000, session=2)  # b back: received late
    # a reboot within the grace: hidden, never offline
    assert [c.status for c in rig.written.changes] == ["online"]
    state = decode_state(rig.written.store[b"cam"])
    assert (state.status, state.session, state.due) == ("online", 2, None)
    rig.tick(NOW + 60_000)
    assert [c.status for c in rig.written.changes] == ["online"]


def test_a_birth_from_a_bridge_that_had_passed_the_deadline_is_a_return() -> None:
    rig = Rig()
    raw_from(rig, "b", "cam", "birth", NOW - 20_000, session=1)
    raw_from(rig, "a", "cam", "will", NOW - 10_000, session=1)
    progress(rig, "a", NOW)
    progress(rig, "b", NOW - 4_000)  # b had passed the deadline: nothing of cam was queued
    rig.tick(NOW)
    raw_from(rig, "b", "cam", "birth", NOW + 1_000, session=2)
    assert [c.status for c in rig.written.changes] == ["online", "offline", "online"]


@given(
    st.integers(0, 10_000),
    st.one_of(st.none(), st.integers(0, 10_000)),
    st.one_of(st.none(), st.integers(1, 10_000)),
    st.integers(0, 10_000),
)
def test_in_time_only_ever_moves_a_late_sign_of_life_to_just_before_the_deadline(
    received_at: int, watermark: int | None, due: int | None, clock: int
) -> None:
    at = in_time(received_at, watermark, due, clock)
    if at != received_at:
        assert watermark is not None
        assert due is not None
        assert watermark < due <= received_at  # the bridge lagged, the message came late
        assert at == max(clock, due - 1)
