"""After a table recovery: the deadline index rebuilt from the states, the changes of the
partitions taken over re-announced (once, not counted as new), and a stalled recovery noticed."""

from __future__ import annotations

import asyncio

from mqtt_presence.core import ConnectionEvent, EventKind, PresenceConfig, StatusChange, transition
from mqtt_presence.core.state import encode_state
from mqtt_presence.streams.processor import partition_of
from mqtt_presence.streams.recovery import RecoveryWatch, rebuild

PARTITIONS = 4
CONFIG = PresenceConfig(offline_grace_ms=5_000)


class Announced:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, StatusChange, bool]] = []

    async def put_state(self, key: bytes, value: bytes, partition: int) -> None:
        raise AssertionError("recovery writes no state")

    async def send_status(self, key: bytes, change: StatusChange, *, count: bool = True) -> None:
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
    output = Announced()
    recovered = asyncio.run(
        rebuild(
            states,
            partitions=PARTITIONS,
            taken_over=taken_over,
            config=CONFIG,
            output=output,
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
    announced = {key for key, _, _ in output.sent}
    expected = {k for k, v in states if v is not None and partition_of(k, PARTITIONS) in taken_over}
    assert announced == expected
    assert recovered.announced == len(expected)
    assert all(count is False for _, _, count in output.sent)  # a repeat, not a new change


def test_a_worker_that_is_stopping_cuts_the_announcement_short() -> None:
    states = [stored(f"d{i}", EventKind.BIRTH) for i in range(10)]
    output = Announced()
    recovered = asyncio.run(
        rebuild(
            states,
            partitions=PARTITIONS,
            taken_over=set(range(PARTITIONS)),
            config=CONFIG,
            output=output,
            reannounce=True,
            should_stop=lambda: len(output.sent) >= 3,
        )
    )
    assert recovered.cut_short
    assert len(output.sent) == 3


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
