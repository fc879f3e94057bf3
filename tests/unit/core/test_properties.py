"""Properties of the presence core over generated event histories (Hypothesis).

The default example count keeps CI fast; `--hypothesis-profile=long` (see tests/conftest.py) runs
many thousands more.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import given, note
from hypothesis import strategies as st

from mqtt_presence.core import (
    ConnectionEvent,
    DeviceState,
    EventKind,
    Input,
    PresenceConfig,
    SessionOrder,
    Status,
    StatusChange,
    Tick,
    decode_state,
    encode_state,
    last_change,
    transition,
)

GRACE = 5_000
CONFIG = PresenceConfig(offline_grace_ms=GRACE)
FAR = 10**9  # a tick this late fires every pending deadline (damping is capped at 5 min)


def run(
    inputs: Sequence[Input], config: PresenceConfig = CONFIG, roundtrip: bool = False
) -> tuple[DeviceState | None, list[StatusChange]]:
    state: DeviceState | None = None
    out: list[StatusChange] = []
    for inp in inputs:
        state, changes = transition(state, inp, config)
        if roundtrip and state is not None:
            state = decode_state(encode_state(state))
        out.extend(changes)
    return state, out


def content(changes: Sequence[StatusChange]) -> list[tuple[object, ...]]:
    """A change without its `suppressed` count (repeats are counted there, on purpose)."""
    return [
        (c.status, c.flapping, c.version, c.since, c.decided_at, c.reason, c.session, c.verified)
        for c in changes
    ]


# --- strategies --------------------------------------------------------------------------------


@st.composite
def session_history(draw: st.DrawFn, max_sessions: int = 8) -> list[ConnectionEvent]:
    """A device's true sessions 1..n and what a broker delivers for them, in receive order:
    births promptly, wills late (up to 1.5 x a 30 s keepalive, so after the next birth when the
    device reconnected with Clean Start = 1), some wills lost, some graceful offlines."""
    n = draw(st.integers(1, max_sessions))
    t = 0
    events: list[ConnectionEvent] = []
    for token in range(1, n + 1):
        t += draw(st.integers(1, 120_000))
        events.append(
            ConnectionEvent(
                device="d",
                kind=EventKind.BIRTH,
                received_at=t,
                session=token,
                session_order=SessionOrder.COUNTER,
                event_time=t,
            )
        )
        up = draw(st.integers(100, 120_000))
        end = t + up
        fate = draw(st.sampled_from(["will", "will", "late-will", "offline", "lost"]))
        if fate != "lost":
            kind = EventKind.OFFLINE if fate == "offline" else EventKind.WILL
            delay = draw(st.integers(0, 45_000)) if fate == "late-will" else 0
            events.append(
                ConnectionEvent(
                    device="d",
                    kind=kind,
                    received_at=end + delay,
                    session=token,
                    session_order=SessionOrder.COUNTER,
                )
            )
        t = end
    events.sort(key=lambda e: e.received_at)
    return events


def any_event(t: int, kind: EventKind, session: int | None, retain: bool) -> ConnectionEvent:
    return ConnectionEvent(
        device="d",
        kind=kind,
        received_at=t,
        session=session,
        session_order=SessionOrder.COUNTER,
        retain=retain,
    )


arbitrary_inputs = st.lists(
    st.one_of(
        st.builds(
            any_event,
            st.integers(0, 600_000),
            st.sampled_from(list(EventKind)),
            st.one_of(st.none(), st.integers(0, 6)),
            st.booleans(),
        ),
        st.builds(Tick, st.integers(0, 600_000)),
    ),
    max_size=60,
).map(lambda xs: sorted(xs, key=lambda x: x.now if isinstance(x, Tick) else x.received_at))


# --- properties --------------------------------------------------------------------------------


@given(arbitrary_inputs)
def test_emitted_changes_alternate_and_versions_go_up_by_one(inputs: list[Input]) -> None:
    _, out = run([*inputs, Tick(FAR)])
    assert [c.version for c in out] == list(range(1, len(out) + 1))
    for before, after in itertools.pairwise(out):
        assert (before.status, before.flapping) != (after.status, after.flapping)
        assert after.decided_at >= before.decided_at


@given(arbitrary_inputs)
def test_same_inputs_give_the_same_outputs(inputs: list[Input]) -> None:
    assert run(inputs) == run(inputs)


@given(arbitrary_inputs)
def test_the_input_state_is_never_mutated(inputs: list[Input]) -> None:
    state: DeviceState | None = None
    for inp in inputs:
        before = encode_state(state) if state is not None else None
        new_state, _ = transition(state, inp, CONFIG)
        assert (encode_state(state) if state is not None else None) == before
        state = new_state


@given(arbitrary_inputs)
def test_the_state_reproduces_its_last_change_exactly(inputs: list[Input]) -> None:
    # What a worker re-announces after recovery must be the same version with the same content.
    state: DeviceState | None = None
    for inp in [*inputs, Tick(FAR)]:
        state, changes = transition(state, inp, CONFIG)
        if changes:
            assert state is not None
            assert last_change(state) == changes[-1]


@given(arbitrary_inputs)
def test_state_restored_from_its_encoding_continues_exactly(inputs: list[Input]) -> None:
    # What a worker does after a restart: decode the table's value and carry on.
    assert run([*inputs, Tick(FAR)], roundtrip=True) == run([*inputs, Tick(FAR)])


@given(session_history(), st.data())
def test_duplicates_anywhere_change_nothing(
    events: list[ConnectionEvent], data: st.DataObject
) -> None:
    noisy: list[ConnectionEvent] = list(events)
    for _ in range(data.draw(st.integers(1, 6), label="repeats")):
        i = data.draw(st.integers(0, len(noisy) - 1), label="original")
        j = data.draw(st.integers(i + 1, len(noisy)), label="position")
        # A QoS 1 redelivery: the same message, flagged dup, received again later.
        original = noisy[i]
        fields = {f: getattr(original, f) for f in original.__struct_fields__}
        noisy.insert(
            j, ConnectionEvent(**{**fields, "received_at": noisy[j - 1].received_at, "dup": True})
        )
    note(f"noisy: {noisy}")
    assert content(run([*events, Tick(FAR)])[1]) == content(run([*noisy, Tick(FAR)])[1])


@given(session_history())
def test_a_stale_will_never_takes_down_a_newer_open_session(events: list[ConnectionEvent]) -> None:
    state: DeviceState | None = None
    newest_birth: int | None = None
    closed: set[int] = set()
    for e in events:
        state, _ = transition(state, e, CONFIG)
        assert isinstance(e.session, int)
        if e.kind is EventKind.BIRTH:
            newest_birth = max(newest_birth or 0, e.session)
        else:
            closed.add(e.session)
        assert state is not None
        if newest_birth is not None and newest_birth not in closed:
            assert state.status is Status.ONLINE or state.flapping, (e, state)


@given(
    session_history(),
    st.lists(st.integers(0, 400_000), max_size=30),
    st.lists(st.integers(0, 400_000), max_size=30),
)
def test_output_does_not_depend_on_how_ticks_are_spaced(
    events: list[ConnectionEvent], ticks_a: list[int], ticks_b: list[int]
) -> None:
    def with_ticks(ticks: list[int]) -> list[Input]:
        merged: list[Input] = [*events, *(Tick(t) for t in ticks)]
        merged.sort(key=lambda x: x.now if isinstance(x, Tick) else x.received_at)
        return [*merged, Tick(FAR)]

    assert run(with_ticks(ticks_a))[1] == run(with_ticks(ticks_b))[1]


def _pair(kind: EventKind, session: int) -> tuple[EventKind, int]:
    return (kind, session)


SESSION_PAIR_CASES = {
    # the events of an old session (1) and a new one (2), and the true final status
    "old session over, new one open": (
        [(EventKind.BIRTH, 1), (EventKind.WILL, 1), (EventKind.BIRTH, 2)],
        Status.ONLINE,
    ),
    "both sessions over": (
        [(EventKind.BIRTH, 1), (EventKind.WILL, 1), (EventKind.BIRTH, 2), (EventKind.WILL, 2)],
        Status.OFFLINE,
    ),
    "old session over, new one said goodbye": (
        [(EventKind.BIRTH, 1), (EventKind.WILL, 1), (EventKind.BIRTH, 2), (EventKind.OFFLINE, 2)],
        Status.OFFLINE,
    ),
}


@given(
    st.sampled_from(sorted(SESSION_PAIR_CASES)),
    st.randoms(use_true_random=False),
    st.integers(0, 3_000),
)
def test_any_order_of_one_session_pair_gives_the_same_final_status(
    case: str, rnd: object, spacing: int
) -> None:
    pairs, truth = SESSION_PAIR_CASES[case]
    order = list(pairs)
    rnd.shuffle(order)  # type: ignore[attr-defined]
    events = [
        ConnectionEvent(
            device="d",
            kind=k,
            received_at=i * spacing,
            session=s,
            session_order=SessionOrder.COUNTER,
        )
        for i, (k, s) in enumerate(order)
    ]
    state, _ = run([*events, Tick(FAR)])
    assert state is not None
    assert state.status is truth, order
