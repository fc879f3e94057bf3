"""Driving the machine for many devices at once, in time order. Pure, like the machine.

`Devices` keeps each device's state and a heap of pending deadlines, so time can be advanced for the
whole fleet by ticking only the devices whose deadline has come. Replay, the benchmarks and the
simulator-driven tests use it; a worker does the same per partition with its table.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator

from mqtt_presence.core.config import PresenceConfig
from mqtt_presence.core.events import ConnectionEvent, Input, StatusChange, Tick
from mqtt_presence.core.machine import Notes, next_deadline, step
from mqtt_presence.core.state import DeviceState

Trace = Callable[[Input, list[str], list[StatusChange]], None]


class Devices:
    """The states of many devices, advanced together. `tick_ms` rounds deadline ticks up to a
    timer period (what a worker's timer does); 0 ticks at each deadline itself. `trace`, with
    `traced` (a device id), hears every input of that device with the machine's reasons."""

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
        self._deadlines: list[tuple[int, str]] = []

    def feed(self, event: ConnectionEvent) -> list[StatusChange]:
        """Advance time to the event (firing earlier deadlines), then apply it."""
        changes = self.advance(event.received_at)
        changes += self._apply(event.device, event)
        return changes

    def advance(self, now: int) -> list[StatusChange]:
        """Fire every deadline up to `now`, in time order."""
        changes: list[StatusChange] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            due, device = heapq.heappop(heap)
            tick_at = -(-due // self.tick_ms) * self.tick_ms if self.tick_ms else due
            if tick_at > now:
                heapq.heappush(heap, (due, device))
                break
            state = self.states.get(device)
            if state is not None and next_deadline(state, self.config) == due:
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
        notes: Notes = [] if self.trace is not None and device == self.traced else None
        state, changes, _ = step(self.states.get(device), inp, self.config, notes)
        if self.trace is not None and notes is not None:
            self.trace(inp, notes, changes)
        if state is not None:
            self.states[device] = state
            due = next_deadline(state, self.config)
            if due is not None:
                heapq.heappush(self._deadlines, (due, device))
                if len(self._deadlines) > 2 * len(self.states) + 1024:
                    self._compact()
        return changes

    def _compact(self) -> None:
        """Keep one heap entry per device, its current deadline: with an inactivity timeout every
        event moves a deadline, and the superseded entries would grow with events, not devices."""
        self._deadlines = [
            (due, device)
            for device, state in self.states.items()
            if (due := next_deadline(state, self.config)) is not None
        ]
        heapq.heapify(self._deadlines)
