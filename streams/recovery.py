"""After Faust recovered the table: the deadline index rebuilt, inherited changes re-announced,
and a recovery that stalls ended (Faust's can wait forever after a rebalance)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mqtt_presence.core import PresenceConfig, decode_state, last_change, next_deadline
from mqtt_presence.streams.processor import DeadlineIndex, Output, partition_of
from mqtt_presence.streams.status_index import StatusIndex, category

log = logging.getLogger("presence.worker")

RECOVERY_PROGRESS_EVERY = 50_000  # devices between progress lines while a worker recovers
RECOVERY_WATCH_INTERVAL_S = 5.0


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
    announced: int
    cut_short: bool = False


async def rebuild(
    states: Iterable[tuple[bytes, bytes | None]],
    *,
    partitions: int,
    taken_over: set[int],
    config: PresenceConfig,
    output: Output,
    reannounce: bool,
    should_stop: Callable[[], bool] = lambda: False,
) -> Recovered:
    """The deadline and status indexes of the recovered states, and the last change of each
    device of the partitions `taken_over` sent again: a crash between writing a state to the
    changelog and its change to presence.status would otherwise lose that change. Consumers
    upsert by version, so the repeat (same version, same content) is harmless."""
    index, statuses = DeadlineIndex(), StatusIndex()
    devices = announced = 0
    for key, value in states:
        devices += 1
        if devices % RECOVERY_PROGRESS_EVERY == 0:  # a big fleet takes a while: say so
            log.info("recovery: %d devices read back, %d changes re-announced", devices, announced)
            await asyncio.sleep(0)  # let the web views and the timers run meanwhile
        if value is None:
            continue
        state = decode_state(value)
        partition = partition_of(key, partitions)
        index.update(partition, key, next_deadline(state, config))
        statuses.update(partition, state.device, None, category(state))
        if reannounce and partition in taken_over:
            change = last_change(state)
            if should_stop():  # the producer is closing: whoever recovers next announces
                log.info("stopping: re-announcement cut short after %d changes", announced)
                return Recovered(index, statuses, devices, announced, cut_short=True)
            if change is not None:
                await output.send_status(key, change, count=False)  # not a new change
                announced += 1
    return Recovered(index, statuses, devices, announced)
