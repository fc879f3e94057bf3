"""After Faust recovered the table: the deadline index rebuilt, inherited changes re-announced
at a bounded pace, and a recovery that stalls ended (Faust's can wait forever after a
rebalance)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from mqtt_presence.core import PresenceConfig, decode_state, last_change, next_deadline
from mqtt_presence.streams.output import partition_of
from mqtt_presence.streams.processor import DeadlineIndex, Output
from mqtt_presence.streams.status_index import StatusIndex, category

log = logging.getLogger("presence.worker")

RECOVERY_PROGRESS_EVERY = 50_000  # devices between progress lines while a worker recovers
RECOVERY_WATCH_INTERVAL_S = 5.0
ANNOUNCE_SLICE_S = 0.05  # the re-announcement sends a slice of its pace, then yields this long


@dataclass
class RecoveryWatch:
    """Tells when a table recovery has stalled: changelog records remain to be read and none
    was read for `stall_s` seconds. Faust's recovery can wait forever after a rebalance (seen
    here, and in Faust's tracker: robinhood/faust#218); a fresh process recovers afresh."""

    stall_s: float
    _remaining: int | None = None
    _since: float = 0.0

    def stalled(self, now: float, in_recovery: bool, remaining: int) -> bool:
        if not in_recovery or remaining != self._remaining:
            self._remaining = remaining if in_recovery else None
            self._since = now
            return False
        return remaining > 0 and now - self._since >= self.stall_s


@dataclass
class Recovered:
    index: DeadlineIndex
    statuses: StatusIndex
    devices: int
    to_announce: dict[int, list[bytes]]  # partition taken over -> its devices with a change


async def rebuild(
    states: Iterable[tuple[bytes, bytes | None]],
    *,
    partitions: int,
    taken_over: set[int],
    config: PresenceConfig,
    reannounce: bool,
) -> Recovered:
    """The deadline and status indexes of the recovered states, and, by partition taken over,
    the devices whose last change is to be sent again (see `Announcer`)."""
    index, statuses = DeadlineIndex(), StatusIndex()
    to_announce: dict[int, list[bytes]] = {}
    devices = 0
    for key, value in states:
        devices += 1
        if devices % RECOVERY_PROGRESS_EVERY == 0:  # a big fleet takes a while: say so
            log.info("recovery: %d devices read back", devices)
            await asyncio.sleep(0)  # let the web views and the timers run meanwhile
        if value is None:
            continue
        state = decode_state(value)
        partition = partition_of(key, partitions)
        index.update(partition, key, next_deadline(state, config))
        statuses.update(partition, state.device, None, category(state))
        if reannounce and partition in taken_over and last_change(state) is not None:
            to_announce.setdefault(partition, []).append(key)
    return Recovered(index, statuses, devices, to_announce)


@dataclass
class Announcer:
    """Sends again the last change of every device of the partitions a worker took over: a
    crash between writing a state to the changelog and its change to presence.status would
    otherwise lose that change. Consumers upsert by version, so a repeat (same version, same
    content) is harmless.

    Paced at `per_s` records a second and in the background, so that taking over a partition
    of a million devices neither floods Kafka and the consumers of presence.status in one burst
    nor holds the agent back. Each device's change is read from the table when it is sent, so
    a device the agent changed meanwhile is announced with its newest change, never an older
    one after it. A partition this worker loses before its turn is dropped (its new owner
    announces it); if the process dies first, whoever recovers the partition next does."""

    store: Mapping[bytes, bytes]
    output: Output
    per_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    pending: dict[int, deque[bytes]] = field(default_factory=dict)
    announced: int = 0

    def take_over(self, to_announce: Mapping[int, list[bytes]]) -> None:
        for partition, keys in to_announce.items():
            self.pending[partition] = deque(keys)

    def keep_only(self, active: set[int]) -> None:
        for partition in set(self.pending) - active:
            del self.pending[partition]

    @property
    def remaining(self) -> int:
        return sum(len(keys) for keys in self.pending.values())

    async def announce(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Send what is pending at the pace, partition by partition; returns how many were
        sent. Between slices it sleeps, so the agent and the web views run meanwhile."""
        sent = 0
        started = self.clock()
        while self.pending and not should_stop():
            budget = int(self.per_s * (self.clock() - started)) - sent
            if budget <= 0:
                await self.sleep(ANNOUNCE_SLICE_S)
                continue
            for partition in list(self.pending):
                keys = self.pending[partition]
                while keys and budget > 0:
                    key = keys.popleft()
                    value = self.store.get(key)
                    change = last_change(decode_state(value)) if value is not None else None
                    if change is not None:
                        await self.output.send_status(key, change, partition, count=False)
                        sent += 1
                        budget -= 1
                if not keys:
                    self.pending.pop(partition, None)
                if budget <= 0:
                    break
        self.announced += sent
        return sent
