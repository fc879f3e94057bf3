"""At most one activity record per device per interval, and never in the way of the sign of life
that takes a stale will back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.bridge.coalesce import PURGE_EVERY, ActivityCoalescer
from mqtt_presence.core import ConnectionEvent, EventKind


def ev(device: str, at: int, kind: EventKind = EventKind.ACTIVITY) -> ConnectionEvent:
    return ConnectionEvent(device=device, kind=kind, received_at=at)


def test_one_activity_per_interval_per_device() -> None:
    c = ActivityCoalescer(every_ms=1_000)
    assert [c.admit(ev("a", t)) for t in (0, 10, 999, 1_000, 1_500, 2_000)] == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]
    assert c.admit(ev("b", 10))  # another device has its own interval


def test_the_first_sign_of_life_after_a_will_always_goes_through() -> None:
    c = ActivityCoalescer(every_ms=60_000)
    assert c.admit(ev("a", 0))
    assert c.admit(ev("a", 100, EventKind.WILL))  # lifecycle events are never held back
    assert c.admit(ev("a", 200))  # the telemetry that proves the will was stale
    assert not c.admit(ev("a", 300))


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 10_000)), max_size=60))
def test_every_device_reports_at_least_once_per_interval_it_was_heard(
    heard: list[tuple[str, int]],
) -> None:
    c = ActivityCoalescer(every_ms=1_000)
    sent: dict[str, list[int]] = {}
    for device, at in sorted(heard, key=lambda h: h[1]):
        if c.admit(ev(device, at)):
            sent.setdefault(device, []).append(at)
    for device, at in heard:  # nothing heard goes unsaid for longer than the interval
        assert any(0 <= at - s < 1_000 for s in sent[device])


def test_memory_follows_the_devices_heard_within_one_interval() -> None:
    c = ActivityCoalescer(every_ms=1_000)
    for i in range(PURGE_EVERY * 2):
        c.admit(ev(f"d{i}", i * 10))  # a new device every 10 ms
    assert len(c) <= PURGE_EVERY


def test_zero_forwards_everything() -> None:
    c = ActivityCoalescer(every_ms=0)
    assert all(c.admit(ev("a", 5)) for _ in range(3))
