"""Time as the bridges' progress allows: when a worker may end offline graces, and when a late
sign of life may still have come in time.

Each bridge writes its watermark into every raw partition (`BridgeProgress`, see the bridge's
`progress`): every message the broker handed it before that time is in the partition before the
record. Read in the partition's order, the smallest watermark over the bridges is the time up to
which the partition is complete. A tick asks `clock(partition, now)`: `now` (the worker's
clock), held back to that time, so a will's grace does not end while the birth that cancels it
still waits in a slower bridge's queue at the broker (a shared subscription split the two) or
in the worker's own backlog of raw records. A bridge that wrote nothing for `silence_ms` (by the
worker's clock: stopped, gone, or its probes refused) holds nothing back any more; without any
progress record (no bridge writes them, or raw records from elsewhere) the clock is `now`.

The other half: a birth that a lagging bridge hands on after a device's grace deadline, stamped
with the bridge's late receive time, may have reached the broker before the deadline: all that
is known is that it came after the bridge's watermark. `in_time` gives it the benefit of the
doubt, so the core does not end the grace first and show a device offline that never was.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Watermarks:
    silence_ms: int
    # partition -> bridge -> (watermark, when the worker read it), both ms since the epoch
    by_partition: dict[int, dict[str, tuple[int, int]]] = field(default_factory=dict)

    def update(self, partition: int, bridge: str, watermark: int, read_at: int) -> None:
        bridges = self.by_partition.setdefault(partition, {})
        previous = bridges.get(bridge)
        # a bridge's watermark never goes back (a probe from a bridge with a slower clock)
        newest = watermark if previous is None else max(previous[0], watermark)
        bridges[bridge] = (newest, read_at)

    def clock(self, partition: int, now: int) -> int:
        """`now`, held back to the slowest live bridge's watermark in `partition`."""
        bridges = self.by_partition.get(partition)
        if not bridges:
            return now
        live = [w for w, read_at in bridges.values() if now - read_at <= self.silence_ms]
        return min(now, *live) if live else now

    def of(self, partition: int, bridge: str) -> int | None:
        """The last watermark of `bridge` read in `partition`, or None."""
        found = self.by_partition.get(partition, {}).get(bridge)
        return found[0] if found is not None else None

    def behind(self, partition: int, now: int) -> int:
        """How far the partition's clock is held back, ms (0: not at all)."""
        return now - self.clock(partition, now)


def in_time(received_at: int, watermark: int | None, due: int | None, clock: int) -> int:
    """The time to apply a sign of life (a birth, an activity) at. A bridge whose watermark was
    still before the device's grace deadline `due` when it handed the message on may have had it
    queued at the broker since before the deadline: then it counts as just in time (`due - 1`,
    never before the device's `clock`), not as a return after an offline that never was.
    Otherwise its own time (`received_at`)."""
    if watermark is None or due is None or received_at < due or watermark >= due:
        return received_at
    return max(clock, due - 1)
