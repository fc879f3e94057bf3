"""Driving the machine for many devices at once, in time order. Pure, like the machine.

`Devices` keeps each device's state and their pending deadlines (a `Schedule`, the one a worker
uses per partition too), so time can be advanced for the whole fleet by ticking only the devices
whose deadline has come. Replay, the benchmarks and the
simulator-driven tests use it; a worker does the same per partition with its table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from mqtt_presence.core.config import PresenceConfig
from mqtt_presence.core.events import ConnectionEvent, Input, StatusChange, Tick
from mqtt_presence.core.machine import Notes, next_deadline, step
from mqtt_presence.core.schedule import Schedule
from mqtt_presence.core.state import DeviceState

Trace = Callable[[str, Input, list[str], list[StatusChange]], None]  # device, input, reasons, out


class Devices:
    """The states of many devices, advanced together. `tick_ms` rounds deadline ticks up to a
    timer period (what a worker's timer does); 0 ticks at each deadline itself. `trace` hears
    every input with the machine's reasons: of the device `traced`, or of every device when
    `traced` is None (what the demo's decision feed reads)."""

    def __init__(
        self,
        config: PresenceConfig,
        tick_ms: int = 0,
        *,
        traced: str | None = None,
        trace: Trace | None = None,
    ) -> None:
        self.config = config
        self.tick_ms = tick_ms
        self.traced = traced
        self.trace = trace
        self.states: dict[str, DeviceState] = {}
        self._schedule: Schedule[str] = Schedule()

    def feed(self, event: ConnectionEvent) -> list[StatusChange]:
        """Advance time to the event (firing earlier deadlines), then apply it."""
        changes = self.advance(event.received_at)
        changes += self._apply(event.device, event)
        return changes

    def advance(self, now: int) -> list[StatusChange]:
        """Fire every deadline up to `now`, in time order."""
        changes: list[StatusChange] = []
        schedule = self._schedule
        while (first := schedule.first()) is not None:
            due, device = first
            tick_at = -(-due // self.tick_ms) * self.tick_ms if self.tick_ms else due
            if tick_at > now:
                break
            schedule.set(device, None)
            changes += self._apply(device, Tick(tick_at))
        return changes

    def run(
        self, events: Iterable[ConnectionEvent], until: int | None = None
    ) -> Iterator[StatusChange]:
        last = 0
        for event in events:
            last = max(last, event.received_at)
            yield from self.feed(event)
        yield from self.advance(last if until is None else until)

    def pending_after(self, now: int) -> list[tuple[str, int]]:
        """Devices with a deadline still to come after `now` (a grace period running, say),
        earliest first."""
        pending = (
            (device, due)
            for device, state in self.states.items()
            if (due := next_deadline(state, self.config)) is not None and due > now
        )
        return sorted(pending, key=lambda item: (item[1], item[0]))

    def _apply(self, device: str, inp: Input) -> list[StatusChange]:
        traced = self.trace is not None and self.traced in (None, device)
        notes: Notes = [] if traced else None
        state, changes, _ = step(self.states.get(device), inp, self.config, notes)
        if self.trace is not None and notes is not None:
            self.trace(device, inp, notes, changes)
        if state is not None:
            self.states[device] = state
            self._schedule.set(device, next_deadline(state, self.config))
        return changes
