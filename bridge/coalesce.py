"""At most one activity record per device per interval. Pure and single-threaded.

Activity (telemetry, Sparkplug NDATA, Homie `init`) says only "alive at this time"; one record
per `every_ms` says as much as a thousand. A lifecycle event of the device (birth, will, any other
kind) clears its entry, so the first sign of life after a will always goes through: that is the
record that takes a token-less stale will back. Entries older than the interval are dropped from
time to time, so memory follows the devices heard within one interval, not the fleet.
"""

from __future__ import annotations

from mqtt_presence.core import ConnectionEvent, EventKind

PURGE_EVERY = 65_536  # admissions between sweeps of stale entries


class ActivityCoalescer:
    def __init__(self, every_ms: int) -> None:
        self.every_ms = every_ms
        self._last: dict[str, int] = {}
        self._admissions = 0

    def admit(self, event: ConnectionEvent) -> bool:
        """Whether `event` goes to Kafka (False: an activity already said within the interval)."""
        if event.kind is not EventKind.ACTIVITY:
            self._last.pop(event.device, None)
            return True
        if self.every_ms <= 0:
            return True
        last = self._last.get(event.device)
        if last is not None and 0 <= event.received_at - last < self.every_ms:
            return False
        self._last[event.device] = event.received_at
        self._admissions += 1
        if self._admissions % PURGE_EVERY == 0:
            now = event.received_at
            self._last = {d: t for d, t in self._last.items() if now - t < self.every_ms}
        return True

    def __len__(self) -> int:
        return len(self._last)
