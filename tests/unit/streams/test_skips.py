"""The skip watch: a raw record handed to the agent past records it never got ends the worker
before it is handled, unless Kafka holds nothing in between.

Outside reference: faust-streaming/faust#216 ("in the middle of the rebalance the agent gets a
new event which skips offsets ... keeps going from the skipped offset and never seeks back");
Faust then commits no further than the gap (faust-streaming/faust#312), which is what
`python -m bench.faults --faults stop-kafka` showed: a committed offset stuck at 225 of 733 and
29 devices wrong. Offsets in a partition written without transactions are consecutive; a gap
with no records is transaction markers or retention (Kafka's documentation, "Message Delivery
Semantics" and log retention), which must not restart the worker forever.
"""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.streams.skips import SkipWatch


class Kafka:
    """What a partition holds: the offsets that are records (the rest are gaps)."""

    def __init__(self, records: set[int]) -> None:
        self.records = records
        self.asked: list[tuple[int, int, int]] = []

    async def count_between(self, partition: int, start: int, end: int) -> int:
        self.asked.append((partition, start, end))
        return sum(start <= o < end for o in self.records)


def watch(records: set[int]) -> tuple[SkipWatch, Kafka, list[str]]:
    kafka, why = Kafka(records), list[str]()
    return SkipWatch(kafka.count_between, why.append), kafka, why


def run(w: SkipWatch, partition: int, offsets: list[int]) -> list[bool]:
    """As the processor asks: the synchronous fast path, then the whole check."""

    async def go() -> list[bool]:
        return [w.in_order(partition, o) or await w.check(partition, o) for o in offsets]

    return asyncio.run(go())


def test_consecutive_offsets_never_ask_kafka() -> None:
    w, kafka, why = watch(set(range(100)))
    assert all(run(w, 0, list(range(100))))
    assert kafka.asked == []
    assert why == []


def test_a_jump_over_records_ends_the_worker_before_the_record_is_handled() -> None:
    w, kafka, why = watch(set(range(1000)))
    assert run(w, 3, [224, 225, 733]) == [True, True, False]
    assert kafka.asked == [(3, 226, 733)]
    assert len(why) == 1
    assert "507 records in between were never processed" in why[0]


def test_a_jump_over_offsets_that_hold_no_records_goes_on() -> None:
    w, _, why = watch(set(range(10)) | set(range(20, 30)))  # 10-19: markers or deleted
    assert all(run(w, 0, [*range(10), *range(20, 30)]))
    assert why == []
    assert w.gaps == 1


def test_going_back_is_reprocessing_not_a_skip() -> None:
    w, kafka, why = watch(set(range(1000)))
    assert all(run(w, 0, [500, 501, 300, 301, 302]))
    assert kafka.asked == []
    assert why == []


def test_after_a_rebalance_the_committed_offset_is_where_the_partition_resumes() -> None:
    # The partition moved away and came back: the other owner went on to 400 and committed it.
    w, _, why = watch(set(range(1000)))
    run(w, 0, [100, 101])
    w.rebalanced({0: 400})
    assert run(w, 0, [400, 401]) == [True, True]
    assert why == []
    # a first record past the committed offset: Faust jumped (#216)
    w.rebalanced({0: 600})
    assert run(w, 0, [650]) == [False]
    assert "50 records" in why[0]


def test_a_rebalance_does_not_move_the_expectation_back() -> None:
    # Faust may go on from its own position, past an older committed offset: not a skip.
    w, kafka, why = watch(set(range(1000)))
    run(w, 0, list(range(200, 300)))
    w.rebalanced({0: 225})
    assert run(w, 0, [300]) == [True]
    assert kafka.asked == []
    assert why == []


def test_when_kafka_cannot_be_asked_the_worker_ends_rather_than_risk_a_loss() -> None:
    async def unreachable(partition: int, start: int, end: int) -> int:
        raise OSError("Kafka is away")

    why = list[str]()
    w = SkipWatch(unreachable, why.append)
    assert run(w, 0, [1, 5]) == [True, False]
    assert "could not be asked" in why[0]


@given(st.lists(st.integers(0, 60), min_size=1, max_size=80), st.sets(st.integers(0, 60)))
def test_it_ends_the_worker_exactly_when_a_record_was_jumped_over(
    offsets: list[int], records: set[int]
) -> None:
    w, _, why = watch(records)
    results = run(w, 0, offsets)
    # the model: the first forward jump with a record strictly in between
    expected_stop = None
    for i in range(1, len(offsets)):
        before, now = offsets[i - 1], offsets[i]
        if any(before + 1 <= r < now for r in records):
            expected_stop = i
            break
    if expected_stop is None:
        assert all(results)
        assert why == []
    else:
        assert results[expected_stop] is False
        assert all(results[:expected_stop])
