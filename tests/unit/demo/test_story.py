"""The demo's story: each decision a person should see is picked from the core's own reasons, with
what a naive consumer did with the same message, and judged against the ground truth.

The scenarios are the field reports the demo plays (a power cycle whose stale will comes after the
new birth, a QoS 1 redelivery, a reboot within the grace, a death, a flapper) as raw events, so a
change in the core's wording that would silently empty the feed fails here.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.core import ConnectionEvent, EventKind, PresenceConfig, SessionOrder
from mqtt_presence.demo.screen import short
from mqtt_presence.demo.story import RULES, Decision, FeedLine, Story, decision_of, rows_of
from mqtt_presence.sim.live import Fate, LiveDevice

T0 = 1_796_000_000_000  # ms
GRACE = 2_000


def device(name: str, fate: Fate, *intervals: tuple[float, float | None]) -> LiveDevice:
    return LiveDevice(name, fate, intervals=list(intervals))


def ev(
    name: str, kind: str, at_ms: int, session: int | None, *, dup: bool = False
) -> ConnectionEvent:
    return ConnectionEvent(
        device=name, kind=EventKind(kind), received_at=T0 + at_ms, session=session, dup=dup
    )


def story_of(*devices: LiveDevice) -> Story:
    return Story(PresenceConfig(offline_grace_ms=GRACE), {d.name: d for d in devices}, 10_000)


def play(story: Story, events: list[ConnectionEvent], until_ms: int) -> list[FeedLine]:
    for e in events:
        story.take_raw(e)
    story.advance(T0 + until_ms + 1_000)  # + the story's lag
    return list(story.feed)


def s(ms: int) -> float:
    return (T0 + ms) / 1000


def test_a_power_cycles_stale_will_is_ignored_while_the_naive_consumer_shows_it_offline() -> None:
    # The first field report: Clean Start = 1 reboot inside the keepalive; the broker
    # publishes the old session's will 1.5 x keepalive later, after the new birth.
    cam = device("demo-x-dev-0001", Fate.POWER_CYCLE, (s(0), s(5_000)), (s(6_000), None))
    story = story_of(cam)
    feed = play(
        story,
        [
            ev(cam.name, "birth", 100, 1),
            ev(cam.name, "birth", 6_100, 2),
            ev(cam.name, "will", 11_000, 1),  # the old connection's will, late
        ],
        until_ms=20_000,
    )
    assert [line.decision for line in feed] == [Decision.STALE_WILL]
    assert "session 1 is not the current session 2" in feed[0].why
    assert feed[0].naive == "OFFLINE, wrong: device is up"
    assert story.naive[cam.name] is False  # the naive consumer still shows it offline
    assert story.naive_false_offlines == 1
    assert story.explainable == cam.name


def test_a_redelivered_birth_is_a_repeat_the_naive_consumer_sends_again() -> None:
    dev = device("demo-x-dev-0002", Fate.DUPLICATES, (s(0), None))
    story = story_of(dev)
    feed = play(
        story,
        [ev(dev.name, "birth", 100, 1), ev(dev.name, "birth", 600, 1, dup=True)],
        until_ms=5_000,
    )
    assert [line.decision for line in feed] == [Decision.REPEAT]
    assert feed[0].naive == "ONLINE"
    assert story.naive_updates[dev.name] == 2


def test_a_reboot_within_the_grace_is_hidden_and_a_death_goes_offline_after_it() -> None:
    quick = device("demo-x-dev-0003", Fate.STABLE, (s(0), s(3_000)), (s(4_000), None))
    dead = device("demo-x-dev-0004", Fate.DIES, (s(0), s(3_000)))
    story = story_of(quick, dead)
    feed = play(
        story,
        [
            ev(quick.name, "birth", 100, 1),
            ev(dead.name, "birth", 100, 1),
            ev(quick.name, "will", 3_100, 1),
            ev(dead.name, "will", 3_100, 1),
            ev(quick.name, "birth", 4_100, 2),  # back 1 s later, inside the 2 s grace
        ],
        until_ms=8_000,
    )
    by_decision = {line.decision: line for line in feed}
    assert set(by_decision) == {Decision.HIDDEN_REBOOT, Decision.OFFLINE}
    assert by_decision[Decision.HIDDEN_REBOOT].device == quick.name
    assert by_decision[Decision.HIDDEN_REBOOT].naive == "OFFLINE 1.0 s, ONLINE: 2 updates"
    offline = by_decision[Decision.OFFLINE]
    assert (offline.device, offline.at) == (dead.name, T0 + 3_100 + GRACE)
    assert offline.naive == "OFFLINE since 2.0 s (2 updates)"
    assert "2 s grace" in offline.why


def test_a_flapper_is_damped_and_the_naive_consumer_sends_every_flap() -> None:
    flapper = device("demo-x-dev-0005", Fate.FLAPPER, (s(0), None))
    story = story_of(flapper)
    events = []
    for i in range(8):
        events += [
            ev(flapper.name, "birth", i * 1_000 + 100, i + 1),
            ev(flapper.name, "will", i * 1_000 + 600, i + 1),
        ]
    feed = play(story, events, until_ms=10_000)
    damped = next(line for line in feed if line.decision is Decision.DAMPED)
    assert damped.naive.startswith("OFFLINE: its update number ")
    assert story.naive_updates[flapper.name] == 16
    # the core's reason, with its times read as times of day, not epoch milliseconds
    assert "damped until" in damped.why
    assert str(T0)[:6] not in damped.why


def test_every_rule_names_a_decision_and_routine_reasons_are_not_shown() -> None:
    assert {d for _, d in RULES} == set(Decision)
    for routine in (
        "birth opens session 3",
        "already online: nothing changes",
        "will closes session 2",
        "offline pending: emitted at 1796000002000 unless the device comes back",
        "activity dropped: the device sent it before it went offline",
    ):
        assert decision_of(routine) is None, routine


def test_a_storm_is_one_row_per_run_of_one_decision() -> None:
    lines = [
        FeedLine(T0, f"d{i}", Decision.OFFLINE if i < 5 else Decision.STALE_WILL, "", "")
        for i in range(7)
    ]
    rows = rows_of(lines, rows=10)
    assert [(r.first.decision, len(r.devices)) for r in rows] == [
        (Decision.OFFLINE, 5),
        (Decision.STALE_WILL, 2),
    ]
    assert rows_of(lines, rows=1) == rows[-1:]


def test_a_row_of_many_lines_shows_the_naive_consumers_mistake_not_just_its_first_line() -> None:
    # CI run of stop 22: five stale wills grouped in one row, the naive consumer wrong on some
    # of them, and the row showed only what it did with the first (right) one.
    fine, wrong = "OFFLINE", "OFFLINE, wrong: device is up"
    lines = [
        FeedLine(T0 + i, f"d{i}", Decision.STALE_WILL, "", wrong if i in (2, 4) else fine)
        for i in range(5)
    ]
    (row,) = rows_of(lines, rows=10)
    assert row.naive == f"{wrong} (2 of 5)"
    assert rows_of(lines[2:3], rows=1)[0].naive == wrong
    assert rows_of(lines[:2], rows=1)[0].naive == fine


@given(st.lists(st.sampled_from(list(Decision)), max_size=60), st.integers(1, 12))
def test_rows_keep_every_line_in_order(decisions: list[Decision], rows: int) -> None:
    lines = [FeedLine(T0 + i, f"d{i}", d, "", "") for i, d in enumerate(decisions)]
    grouped = rows_of(lines, rows=len(lines) + 1)
    assert [dev for r in grouped for dev in r.devices] == [line.device for line in lines]
    assert all(a.first.decision is not b.first.decision for a, b in itertools.pairwise(grouped))
    assert len(rows_of(lines, rows)) == min(rows, len(grouped))


def test_short_names_drop_the_demos_prefix_only() -> None:
    assert short("demo-1a2b3c-dev-0007") == "dev-0007"
    assert short("kitchen-sensor") == "kitchen-sensor"


def test_every_decision_is_made_of_a_reason_the_core_really_gives() -> None:
    # One device through every case the feed names; the reasons are the core's own.
    a = device("demo-x-dev-0007", Fate.FLAPPER, (s(0), None))
    events = [
        ev(a.name, "birth", 0, 1),
        ev(a.name, "will", 1_000, 2),  # a will before its birth ...
        ev(a.name, "birth", 1_100, 2),  # ... makes that birth late
        ev(a.name, "birth", 5_000, 5),
        ev(a.name, "birth", 5_050, 5),  # the same birth again
    ]
    counter = [
        ConnectionEvent(
            device=a.name,
            kind=EventKind.BIRTH,
            received_at=T0 + at,
            session=token,
            session_order=SessionOrder.COUNTER,
        )
        for at, token in ((6_000, 7), (6_100, 6))  # an older boot counter's birth, late
    ]
    flaps = [
        ev(a.name, kind, 10_000 + i * 1_000 + (500 if kind == "will" else 0), 10 + i)
        for i in range(8)
        for kind in ("birth", "will")
    ]
    story = story_of(a)
    feed = play(story, [*events, *counter, *flaps, ev(a.name, "birth", 20_000, 30)], 80_000)
    assert {line.decision for line in feed} == set(Decision)
