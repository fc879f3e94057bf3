"""The deadline scheduler the replay driver and the workers share: against a plain dictionary
(the obvious, slow model), with Hypothesis; and its memory follows keys, not updates."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.core import ConnectionEvent, PresenceConfig
from mqtt_presence.core.devices import Devices
from mqtt_presence.core.schedule import Schedule

KEYS = st.sampled_from([f"d{i}" for i in range(8)])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, st.none() | st.integers(0, 100)),
        st.tuples(st.just("pop"), st.just(""), st.integers(0, 100)),
    ),
    max_size=200,
)


@given(OPS)
def test_the_schedule_behaves_like_a_dictionary_scanned_in_time_order(
    ops: list[tuple[str, str, int | None]],
) -> None:
    schedule: Schedule[str] = Schedule()
    model: dict[str, int] = {}
    for op, key, value in ops:
        if op == "set":
            schedule.set(key, value)
            if value is None:
                model.pop(key, None)
            else:
                model[key] = value
        else:
            assert value is not None
            expected = sorted((due, k) for k, due in model.items() if due <= value)
            assert schedule.pop_due(value) == [k for _, k in expected]
            for _, k in expected:
                del model[k]
        assert len(schedule) == len(model)
        assert schedule.first() == min(((d, k) for k, d in model.items()), default=None)
        assert all(schedule.due_of(k) == d for k, d in model.items())


def test_memory_follows_keys_not_updates() -> None:
    schedule: Schedule[str] = Schedule()
    for i in range(50_000):
        schedule.set(f"d{i % 10}", 1000 + i)  # every event moves its device's deadline
    assert len(schedule) == 10
    assert len(schedule._heap) <= 2 * 10 + 1024


def test_replay_memory_follows_devices_not_events_with_an_inactivity_timeout() -> None:
    config = PresenceConfig(inactivity_timeout_ms=3_600_000)
    fleet = Devices(config)
    for i in range(50_000):
        line = b'{"device":"d%d","kind":"activity","received_at":%d}' % (i % 10, 1000 + i)
        fleet.feed(msgspec.json.decode(line, type=ConnectionEvent))
    assert len(fleet._schedule) == len(fleet.states) == 10
    assert len(fleet._schedule._heap) <= 2 * len(fleet.states) + 1024
