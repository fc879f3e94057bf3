"""The in-order acknowledgement window. Pure and single-threaded.

MQTT 5 (4.6) wants PUBACKs in the order the PUBLISHes arrived, and we may acknowledge a message
only once Kafka has its record. So every QoS 1 message takes a slot at the tail; Kafka's answers
complete slots in any order; only the completed prefix is released for acknowledgement. A new
connection starts a new epoch: slots of the old one can never be acknowledged (their packet ids
mean nothing on the new connection; the broker redelivers those messages instead).
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple


class Slot(NamedTuple):
    epoch: int
    seq: int


class AckWindow:
    def __init__(self) -> None:
        self.epoch = 0
        self._next_seq = 0
        self._first_seq = 0
        self._mids: deque[int] = deque()
        self._done: deque[bool] = deque()

    def __len__(self) -> int:
        return len(self._mids)

    def add(self, mid: int) -> Slot:
        slot = Slot(self.epoch, self._next_seq)
        self._next_seq += 1
        self._mids.append(mid)
        self._done.append(False)
        return slot

    def complete(self, slot: Slot) -> bool:
        """Mark a slot written to Kafka; False if it belongs to an earlier connection."""
        if slot.epoch != self.epoch:
            return False
        self._done[slot.seq - self._first_seq] = True
        return True

    def release(self) -> list[int]:
        """Packet ids that may be acknowledged now, in arrival order."""
        out = []
        while self._done and self._done[0]:
            self._done.popleft()
            out.append(self._mids.popleft())
            self._first_seq += 1
        return out

    def reset(self) -> int:
        """A new connection: forget every slot. Returns how many were dropped unacknowledged."""
        dropped = len(self._mids)
        self.epoch += 1
        self._mids.clear()
        self._done.clear()
        self._first_seq = self._next_seq = 0
        return dropped
