"""Raw records the agent was never given: a Faust bug around rebalances, caught and undone.

Faust can hand the agent a partition's records from past where it should (faust-streaming/faust
#216: "in the middle of the rebalance the agent gets a new event which skips offsets ... the
node just keeps going from the skipped offset and never seeks back"). Seen here after Kafka
was stopped for 15 s (`python -m bench.faults --faults stop-kafka`): one raw partition's
committed offset stayed at 225 of 733 (Faust commits no further than the first gap) while the
devices of the skipped records kept a wrong status until their next message.

`SkipWatch` knows the offset each raw partition should deliver next: the one after the last
record the agent was given, and after a rebalance at least the group's committed offset. A
record further on is a skip only if Kafka has records in between (the bridge writes without
transactions and `presence.raw` is not compacted, but a gap of transaction markers or of
records deleted by retention is not one): then the process ends with status 75 before it
handles the record, so nothing past the skipped ones is committed, and a fresh process reads
the partition again from the committed offset.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger("presence.worker")


class SkipWatch:
    """`count_between(partition, start, end)`: how many records Kafka holds with offsets in
    [start, end). `on_skipped(why)` ends the process (in a worker, `exit_for_restart`)."""

    def __init__(
        self,
        count_between: Callable[[int, int, int], Awaitable[int]],
        on_skipped: Callable[[str], None],
    ) -> None:
        self.count_between = count_between
        self.on_skipped = on_skipped
        self.next_offset: dict[int, int] = {}
        self.gaps = 0  # forward jumps over offsets that hold no records

    def rebalanced(self, committed: Mapping[int, int]) -> None:
        """After a rebalance: a partition's next record is at least where the group committed
        it (another owner may have gone on meanwhile) and at least past what this process was
        given (Faust may go on from its own position rather than seek back)."""
        for partition, offset in committed.items():
            self.next_offset[partition] = max(self.next_offset.get(partition, offset), offset)

    def in_order(self, partition: int, offset: int) -> bool:
        """The common case, without a coroutine: `offset` is not past the next expected one
        (then it is recorded, and True); False leaves the question to `check`."""
        expected = self.next_offset.get(partition)
        if expected is not None and offset > expected:
            return False
        self.next_offset[partition] = offset + 1
        return True

    async def check(self, partition: int, offset: int) -> bool:
        """Before the agent handles the raw record at `offset`: False when records before it
        were skipped (and `on_skipped` was called), else True."""
        expected = self.next_offset.get(partition)
        if expected is not None and offset > expected:
            try:
                found = await self.count_between(partition, expected, offset)
            except Exception as exc:  # cannot tell: a restart re-reads, a skip would lose
                self.on_skipped(
                    f"raw partition {partition} jumped from offset {expected} to {offset} and "
                    f"Kafka could not be asked what lies between ({exc!r})"
                )
                return False
            if found:
                self.on_skipped(
                    f"raw partition {partition} was handed offset {offset} where {expected} "
                    f"was next: {found} records in between were never processed (a Faust "
                    "rebalance bug, faust-streaming/faust#216); a fresh process reads them "
                    "from the committed offset"
                )
                return False
            self.gaps += 1
            log.info(
                "raw partition %d: offsets %d to %d hold no records (transaction markers or "
                "deleted by retention); going on",
                partition,
                expected,
                offset - 1,
            )
        self.next_offset[partition] = offset + 1
        return True
