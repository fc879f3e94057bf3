"""The in-order acknowledgement window. Pure and single-threaded.

MQTT 5 (4.6) wants PUBACKs in the order the PUBLISHes arrived, and we may acknowledge a message
only once Kafka has its record. So every QoS 1 message takes a slot at the tail with the pending
write (kafka-python's future); only the prefix whose writes are done is released for
acknowledgement, so the loop only ever looks at the head. A new connection empties the window:
packet ids of the old connection mean nothing on the new one, and the broker redelivers those
messages instead.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol


class Pending(Protocol):
    """A write in progress (kafka-python's `FutureRecordMetadata` is one)."""

    @property
    def is_done(self) -> bool: ...

    @property
    def exception(self) -> BaseException | None: ...


class NothingToWrite:
    """The slot of a message acknowledged without a Kafka write (coalesced activity)."""

    is_done = True
    exception = None


NOTHING_TO_WRITE = NothingToWrite()
PROBE = NothingToWrite()  # the slot of a progress probe (see `progress`): not a device's message


class AllWritten:
    """The slot of a message that became several records (a Sparkplug node's death and its
    devices' wills): done when all are, failed when one failed."""

    def __init__(self, writes: list[Pending]) -> None:
        self.writes = writes

    @property
    def is_done(self) -> bool:
        return all(w.is_done for w in self.writes) or self.exception is not None

    @property
    def exception(self) -> BaseException | None:
        return next((w.exception for w in self.writes if w.is_done and w.exception), None)


class AckWindow:
    def __init__(self) -> None:
        self._slots: deque[tuple[int, Pending]] = deque()
        self._released_unwritten = 0
        self._released_probes = 0

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, mid: int, pending: Pending) -> None:
        self._slots.append((mid, pending))

    def release(self) -> tuple[list[int], BaseException | None]:
        """Packet ids that may be acknowledged now, in arrival order, and the error of the
        oldest write if it failed (then nothing behind it is released)."""
        out: list[int] = []
        slots = self._slots
        while slots:
            mid, pending = slots[0]
            if not pending.is_done:
                break
            if pending.exception is not None:
                return out, pending.exception
            slots.popleft()
            out.append(mid)
            if pending is NOTHING_TO_WRITE:
                self._released_unwritten += 1
            elif pending is PROBE:
                self._released_probes += 1
        return out, None

    def take_released_unwritten(self) -> int:
        """How many of the messages released since the last call had nothing written."""
        count, self._released_unwritten = self._released_unwritten, 0
        return count

    def take_released_probes(self) -> int:
        """How many of the messages released since the last call were progress probes."""
        count, self._released_probes = self._released_probes, 0
        return count

    def reset(self) -> int:
        """A new connection: forget every slot. Returns how many were left unacknowledged."""
        dropped = len(self._slots)
        self._slots.clear()
        return dropped
