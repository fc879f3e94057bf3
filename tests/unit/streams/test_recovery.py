"""After a table recovery: the deadline index rebuilt from the states, the changes of the
partitions taken over re-announced (once, not counted as new), and a stalled recovery noticed."""

from __future__ import annotations

import asyncio

from mqtt_presence.core import (
    ConnectionEvent,
    EventKind,
    PresenceConfig,
    StatusChange,
    Tick,
    decode_state,
    transition,
)
from mqtt_presence.core.state import encode_state
from mqtt_presence.streams.output import partition_of
from mqtt_presence.streams.recovery import Announcer, RecoveryWatch, rebuild

PARTITIONS = 4
CONFIG = PresenceConfig(offline_grace_ms=5_000)


class Announced:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, StatusChange, bool]] = []

    async def put_state(self, key: bytes, value: bytes, partition: int) -> None:
        raise AssertionError("recovery writes no state")

    async def send_status(
        self, key: bytes, change: StatusChange, partition: int, *, count: bool = True
    ) -> None:
        self.sent.append((key, change, count))

    def raise_failure(self) -> None:
        pass


def stored(device: str, *kinds: EventKind) -> tuple[bytes, bytes]:
    state = None
    for at, kind in enumerate(kinds, 1):
        event = ConnectionEvent(device=device, kind=kind, received_at=at * 1000, session=1)
        state, _ = transition(state, event, CONFIG)
    assert state is not None
    return device.encode(), encode_state(state)


def test_the_index_holds_the_pending_deadlines_and_only_taken_over_partitions_are_announced() -> (
    None
):
    states = [stored(f"d{i}", EventKind.BIRTH) for i in range(40)]
    states += [stored(f"w{i}", EventKind.BIRTH, EventKind.WILL) for i in range(40)]  # in grace
    states.append((b"tombstone", None))  # type: ignore[arg-type]
    taken_over = {0, 1}
    recovered = asyncio.run(
        rebuild(
            states,
            partitions=PARTITIONS,
            taken_over=taken_over,
            config=CONFIG,
            reannounce=True,
        )
    )
    assert recovered.devices == 81
    assert len(recovered.index) == 40  # the wills' grace periods, nothing for the online ones
    everything = range(PARTITIONS)  # the statuses shown are the last emitted: all still online
    assert recovered.statuses.counts(everything) == {
        "online": 80,
        "offline": 0,
        "sleeping": 0,
        "flapping": 0,
    }
    for i in range(40):
        key = f"w{i}".encode()
        schedule = recovered.index.by_partition[partition_of(key, PARTITIONS)]
        assert schedule.due_of(key) == 2_000 + 5_000
    queued = {key for keys in recovered.to_announce.values() for key in keys}
    expected = {k for k, v in states if v is not None and partition_of(k, PARTITIONS) in taken_over}
    assert queued == expected
    assert set(recovered.to_announce) == taken_over
    # and the announcer sends each of them once, as a repeat, not counted as a new change
    output = Announced()
    announcer = Announcer(dict(s for s in states if s[1] is not None), output, per_s=1e9)
    announcer.take_over(recovered.to_announce)
    assert asyncio.run(announcer.announce()) == len(expected)
    assert sorted(key for key, _, _ in output.sent) == sorted(expected)
    assert all(count is False for _, _, count in output.sent)
    assert announcer.pending == {}


class FakeTime:
    """A clock that moves only when the announcer sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def announcer_of(devices: int, per_s: float) -> tuple[Announcer, Announced, FakeTime]:
    states = dict(stored(f"d{i}", EventKind.BIRTH) for i in range(devices))
    output, t = Announced(), FakeTime()
    a = Announcer(states, output, per_s=per_s, clock=t.clock, sleep=t.sleep)
    by_partition: dict[int, list[bytes]] = {}
    for key in states:
        by_partition.setdefault(partition_of(key, PARTITIONS), []).append(key)
    a.take_over(by_partition)
    return a, output, t


def test_the_re_announcement_keeps_its_pace() -> None:
    # 2,000 devices at 500/s: about 4 s of the announcer's clock, never ahead of the pace
    a, output, t = announcer_of(2_000, per_s=500)
    assert asyncio.run(a.announce()) == 2_000
    assert 3.9 <= t.now <= 4.2
    assert len(output.sent) == 2_000


def test_a_device_changed_meanwhile_is_announced_with_its_newest_change() -> None:
    a, output, _ = announcer_of(10, per_s=1e9)
    key, in_grace = stored("d3", EventKind.BIRTH, EventKind.WILL)
    offline, _ = transition(decode_state(in_grace), Tick(60_000), CONFIG)  # the grace ran out
    assert offline is not None
    assert isinstance(a.store, dict)
    a.store[key] = encode_state(offline)  # the agent applied it before d3's turn
    asyncio.run(a.announce())
    (change,) = [c for k, c, _ in output.sent if k == key]
    assert (change.version, change.status) == (2, "offline")  # not version 1, online


def test_a_partition_lost_before_its_turn_is_left_to_its_new_owner() -> None:
    a, output, _ = announcer_of(200, per_s=1e9)
    a.keep_only({0})
    asyncio.run(a.announce())
    assert {partition_of(k, PARTITIONS) for k, _, _ in output.sent} == {0}


def test_a_worker_that_is_stopping_cuts_the_announcement_short() -> None:
    a, output, _ = announcer_of(100, per_s=1e9)
    sent = asyncio.run(a.announce(should_stop=lambda: len(output.sent) >= 3))
    assert sent == len(output.sent) >= 3
    assert a.remaining == 100 - sent  # left for whoever recovers next


def test_a_recovery_that_reads_nothing_for_the_stall_time_is_stalled() -> None:
    watch = RecoveryWatch(stall_s=30)
    assert not watch.stalled(0, True, 500)
    assert not watch.stalled(29, True, 500)
    assert watch.stalled(30, True, 500)


def test_a_recovery_that_progresses_or_ends_is_not_stalled() -> None:
    watch = RecoveryWatch(stall_s=30)
    for second in range(0, 300, 10):  # slow, but it reads
        assert not watch.stalled(second, True, 10_000 - second)
    assert not watch.stalled(400, False, 0)  # finished; then idle for a long time
    assert not watch.stalled(10_000, False, 0)
    assert not watch.stalled(10_001, True, 0)  # nothing left to read: waiting is fine
    assert not watch.stalled(20_000, True, 0)
    assert not watch.stalled(20_001, True, 7)  # a new recovery starts its own clock
    assert watch.stalled(20_031, True, 7)
