"""Which devices of each partition are online, offline, sleeping or flapping, kept up to date as
the agent applies changes: `/fleet` counts and `/devices?status=` pages without reading the fleet.

One sorted set of device ids per (partition, category), so a count is a sum over the owned
partitions and a page is a merge of their sets from the cursor on, in time proportional to the
page. Rebuilt with the deadline index after every table recovery (so it is exact after a restart
and a rebalance); kept in memory (about 150 bytes per device).
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator

from sortedcontainers import SortedSet

from mqtt_presence.core import DeviceState

CATEGORIES = ("online", "offline", "sleeping", "flapping")


def category(state: DeviceState | None) -> str | None:
    """What `/devices?status=` lists a device under: flapping, else sleeping, else its status;
    None before its first change."""
    if state is None or state.status is None:
        return None
    if state.flapping:
        return "flapping"
    return "sleeping" if state.sleeping else state.status.value


class StatusIndex:
    def __init__(self) -> None:
        self._sets: dict[tuple[int, str], SortedSet] = {}

    def update(self, partition: int, device: str, old: str | None, new: str | None) -> None:
        if old == new:
            return
        if old is not None:
            self._sets[partition, old].discard(device)
        if new is not None:
            devices = self._sets.get((partition, new))
            if devices is None:
                devices = self._sets[partition, new] = SortedSet()
            devices.add(device)

    def counts(self, partitions: Iterable[int]) -> Counter[str]:
        owned = set(partitions)
        counts: Counter[str] = Counter(dict.fromkeys(CATEGORIES, 0))
        for (partition, cat), devices in self._sets.items():
            if partition in owned:
                counts[cat] += len(devices)
        return counts

    def page(
        self, partitions: Iterable[int], status: str | None, after: str, limit: int
    ) -> tuple[list[str], bool]:
        """Up to `limit` device ids after `after`, in id order, of the owned partitions (of one
        category, or of all of them), and whether more follow."""
        owned = set(partitions)
        wanted = CATEGORIES if status is None else (status,)
        runs: list[Iterator[str]] = [
            devices.irange(minimum=after, inclusive=(False, True)) if after else iter(devices)
            for (partition, cat), devices in self._sets.items()
            if partition in owned and cat in wanted
        ]
        taken = list(itertools.islice(heapq.merge(*runs), limit + 1))
        return taken[:limit], len(taken) > limit

    def __len__(self) -> int:
        return sum(len(devices) for devices in self._sets.values())
