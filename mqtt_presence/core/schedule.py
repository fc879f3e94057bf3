"""When each device is next due: the one deadline scheduler of the project. Pure, like the core.

The replay driver (`Devices`) and a worker (one per partition it owns) both keep, for each device
with a pending deadline (a grace period, a damping release, an inactivity timeout), when that is,
and need the due ones in time order without looking at the others. A heap of (due, key) with the
current due per key beside it: setting a deadline is O(log n), the due ones come out earliest
first (ties by key), and an entry a later `set` superseded is skipped when it surfaces. The heap
is rebuilt when superseded entries outnumber the live ones (with an inactivity timeout every
event moves a deadline: the heap would otherwise grow with events, not devices).
"""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

K = TypeVar("K", str, bytes)


class Schedule(Generic[K]):
    def __init__(self) -> None:
        self._due: dict[K, int] = {}
        self._heap: list[tuple[int, K]] = []

    def set(self, key: K, due: int | None) -> None:
        """`key` is next due at `due` (None: nothing pending)."""
        if due is None:
            self._due.pop(key, None)
            return
        if self._due.get(key) == due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, key))
        if len(self._heap) > 2 * len(self._due) + 1024:
            self._heap = [(when, k) for k, when in self._due.items()]
            heapq.heapify(self._heap)

    def first(self) -> tuple[int, K] | None:
        """The earliest pending (due, key), or None."""
        heap = self._heap
        while heap:
            due, key = heap[0]
            if self._due.get(key) == due:
                return due, key
            heapq.heappop(heap)  # superseded by a later `set`
        return None

    def pop_due(self, now: int) -> list[K]:
        """The keys due at or before `now`, earliest first, taken out of the schedule."""
        due_keys = []
        while (first := self.first()) is not None and first[0] <= now:
            heapq.heappop(self._heap)
            del self._due[first[1]]
            due_keys.append(first[1])
        return due_keys

    def due_of(self, key: K) -> int | None:
        return self._due.get(key)

    def __len__(self) -> int:
        return len(self._due)
