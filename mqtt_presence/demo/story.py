"""What the demo tells while it runs: the core's decisions that matter, each beside what a naive
consumer did with the same message, and per scenario, clean against naive.

Pure: raw events, the worker's status changes and the ground truth in; feed lines and figures out.
The reasons come from the core itself: the raw events the worker reads are run, in receive order,
through the same machine with its reasons switched on (what `presence replay --explain` prints),
and the decisions a person should see are picked from them. The clean figures are the worker's
own output; the naive consumer trusts every birth and will, as most hand-rolled consumers do.
"""

from __future__ import annotations

import heapq
import re
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from mqtt_presence.core import ConnectionEvent, Input, PresenceConfig, StatusChange, Tick
from mqtt_presence.core.devices import Devices
from mqtt_presence.sim.live import Fate, LiveDevice

LAG_MS = 1_000  # events of all partitions are put in receive order this long before they count
EPOCH_MS = re.compile(r"\b1\d{12}\b")  # a time in the core's reasons, ms since the epoch


def clock(ms: int) -> str:
    """A time of day a person reads, to the tenth of a second."""
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000 // 100}"


class Decision(StrEnum):
    """A decision of the core worth a line on screen, in words."""

    STALE_WILL = "stale will ignored"
    OLD_BIRTH = "old birth ignored"
    REPEAT = "repeat dropped"
    LATE_BIRTH = "late birth refused"
    HIDDEN_REBOOT = "reboot hidden"
    OFFLINE = "offline after grace"
    DAMPED = "flapper damped"
    RELEASED = "damping released"


# The core's reasons (machine.py) that make each decision; a reason not listed is routine.
RULES: list[tuple[re.Pattern[str], Decision]] = [
    (re.compile(r"^stale will dropped"), Decision.STALE_WILL),
    (re.compile(r"^will dropped: session .* is already closed"), Decision.STALE_WILL),
    (re.compile(r"^will \d+ ms after the latest birth dropped"), Decision.STALE_WILL),
    (re.compile(r"^disconnect \(.*\) dropped"), Decision.STALE_WILL),
    (re.compile(r"^stale birth dropped"), Decision.OLD_BIRTH),
    (re.compile(r"^redelivered birth .*dropped"), Decision.OLD_BIRTH),
    (re.compile(r"^\w+ dropped: (a redelivery|the same record)"), Decision.REPEAT),
    (re.compile(r"^birth repeats open session"), Decision.REPEAT),
    (re.compile(r"^late birth"), Decision.LATE_BIRTH),
    (re.compile(r"^back to online within the debounce delay"), Decision.HIDDEN_REBOOT),
    (re.compile(r"^debounce delay over at \d+: emitted offline"), Decision.OFFLINE),
    (re.compile(r"^flapping: penalty"), Decision.DAMPED),
    (re.compile(r"^damping released at"), Decision.RELEASED),
]

FATE_LABELS = {
    Fate.STABLE: "stable (then the storm)",
    Fate.POWER_CYCLE: "power cycles (stale wills)",
    Fate.LONG_OUTAGE: "long outages",
    Fate.DIES: "deaths",
    Fate.FLAPPER: "flappers",
    Fate.DUPLICATES: "duplicate births",
}


def decision_of(note: str) -> Decision | None:
    return next((d for pattern, d in RULES if pattern.match(note)), None)


@dataclass(frozen=True)
class FeedLine:
    at: int  # ms: the input's receive time, or the deadline's
    device: str
    decision: Decision
    why: str  # the core's own reason
    naive: str  # what the naive consumer did with the same message


@dataclass(frozen=True)
class FeedRow:
    """Consecutive feed lines of one decision, shown as one row (a storm is one row, not 40)."""

    lines: tuple[FeedLine, ...]

    @property
    def first(self) -> FeedLine:
        return self.lines[0]

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(line.device for line in self.lines)

    @property
    def naive(self) -> str:
        """What the naive consumer did, a mistake first: a row of five stale wills where the
        naive consumer was wrong on the third says so, not what it did with the first."""
        wrong = [line.naive for line in self.lines if "wrong" in line.naive]
        if not wrong:
            return self.first.naive
        if len(self.lines) == 1:
            return wrong[0]
        return f"{wrong[0]} ({len(wrong)} of {len(self.lines)})"


def rows_of(feed: Iterable[FeedLine], rows: int) -> list[FeedRow]:
    """The last `rows` rows of the feed, oldest first."""
    out: list[FeedRow] = []
    for line in feed:
        if out and out[-1].first.decision is line.decision:
            out[-1] = FeedRow((*out[-1].lines, line))
        else:
            out.append(FeedRow((line,)))
    return out[-rows:]


@dataclass
class ScenarioFigures:
    devices: int = 0
    clean_updates: int = 0
    naive_updates: int = 0
    clean_wrong: int = 0  # settled devices shown with the wrong status now
    naive_wrong: int = 0


@dataclass
class Story:
    """Feed it with `take_raw`/`take_status` as records arrive and `advance` as time passes."""

    config: PresenceConfig
    fleet: Mapping[str, LiveDevice]  # the ground truth, by device id
    settle_ms: int  # a device's truth must have held this long before it is judged
    feed: deque[FeedLine] = field(default_factory=lambda: deque(maxlen=500))
    decisions: Counter[Decision] = field(default_factory=Counter)
    raw_in: int = 0
    naive: dict[str, bool] = field(default_factory=dict)  # device -> shown online
    naive_since: dict[str, int] = field(default_factory=dict)
    naive_updates: Counter[str] = field(default_factory=Counter)
    naive_false_offlines: int = 0  # offlines it sent while the device was up
    clean: dict[str, StatusChange] = field(default_factory=dict)
    clean_updates: Counter[str] = field(default_factory=Counter)
    clean_false_offlines: int = 0
    explainable: str | None = None  # a device worth `presence replay --explain`

    def __post_init__(self) -> None:
        self._core = Devices(self.config, trace=self._heard)
        self._pending: list[tuple[int, int, ConnectionEvent]] = []
        self._arrived = 0
        self._naive_before: tuple[bool | None, int] = (None, 0)  # before the latest event

    # --- records in -------------------------------------------------------------------------

    def take_raw(self, event: ConnectionEvent) -> None:
        self.raw_in += 1
        self._arrived += 1
        heapq.heappush(self._pending, (event.received_at, self._arrived, event))

    def take_status(self, change: StatusChange) -> None:
        self.clean[change.device] = change
        self.clean_updates[change.device] += 1
        dev = self.fleet.get(change.device)
        if (
            dev is not None
            and change.status.value == "offline"
            and not change.flapping
            and was_up(dev, change.since / 1000)
        ):
            self.clean_false_offlines += 1

    def advance(self, now_ms: int) -> None:
        """Run every event received up to `now_ms - LAG_MS` through the core, in receive order,
        then the deadlines up to then."""
        horizon = now_ms - LAG_MS
        while self._pending and self._pending[0][0] <= horizon:
            _, _, event = heapq.heappop(self._pending)
            self._core.advance(event.received_at)  # earlier deadlines: before the naive hears it
            self._naive_takes(event)
            self._core.feed(event)
        self._core.advance(horizon)

    # --- the naive consumer and the core's reasons ----------------------------------------

    def _naive_takes(self, event: ConnectionEvent) -> None:
        if event.kind.value == "activity":
            return  # a naive consumer of status topics never sees telemetry
        online = event.kind.opens
        device = event.device
        self._naive_before = (self.naive.get(device), self.naive_since.get(device, 0))
        self.naive_updates[device] += 1
        if self.naive.get(device) != online:
            self.naive_since[device] = event.received_at
        self.naive[device] = online
        dev = self.fleet.get(device)
        if not online and dev is not None and was_up(dev, event.received_at / 1000):
            self.naive_false_offlines += 1

    def _heard(
        self, device: str, inp: Input, notes: list[str], _changes: list[StatusChange]
    ) -> None:
        for note in notes:
            decision = decision_of(note)
            if decision is None:
                continue
            event = None if isinstance(inp, Tick) else inp
            at = inp.now if isinstance(inp, Tick) else inp.received_at
            self.decisions[decision] += 1
            line = FeedLine(
                at,
                device,
                decision,
                self._in_words(decision, note),
                self._naive_did(device, decision, at, event),
            )
            self.feed.append(line)
            if decision is Decision.STALE_WILL and self.explainable is None:
                self.explainable = device

    def _in_words(self, decision: Decision, note: str) -> str:
        grace = self.config.offline_grace_ms / 1000
        if decision is Decision.OFFLINE:
            return f"its will held: no birth within the {grace:g} s grace"
        if decision is Decision.HIDDEN_REBOOT:
            return f"back within the {grace:g} s grace: no offline sent"
        return EPOCH_MS.sub(lambda m: clock(int(m.group())), note)

    def _naive_did(
        self, device: str, decision: Decision, at: int, event: ConnectionEvent | None
    ) -> str:
        dev = self.fleet.get(device)
        if event is None:  # a deadline: no message; what the naive consumer has shown
            shown = self.naive.get(device)
            if shown is None:
                return "-"
            since = (at - self.naive_since.get(device, at)) / 1000
            word = "ONLINE" if shown else "OFFLINE"
            return f"{word} since {since:.1f} s ({self.naive_updates[device]} updates)"
        if event.kind.value == "activity":
            return "never sees telemetry"
        if decision is Decision.DAMPED:
            word = "ONLINE" if event.kind.opens else "OFFLINE"
            return f"{word}: its update number {self.naive_updates[device]}"
        if event.kind.opens:
            if decision is Decision.HIDDEN_REBOOT and self._naive_before[0] is False:
                gap = (at - self._naive_before[1]) / 1000
                return f"OFFLINE {gap:.1f} s, ONLINE: 2 updates"
            down = dev is not None and not is_up(dev, at / 1000)
            return "ONLINE" + (", wrong: device is down" if down else "")
        up = dev is not None and was_up(dev, at / 1000)
        return "OFFLINE" + (", wrong: device is up" if up else "")

    # --- figures ------------------------------------------------------------------------------

    def scenarios(self, now_s: float) -> dict[Fate, ScenarioFigures]:
        figures = {fate: ScenarioFigures() for fate in Fate}
        for name, dev in self.fleet.items():
            f = figures[dev.fate]
            f.devices += 1
            f.clean_updates += self.clean_updates[name]
            f.naive_updates += self.naive_updates[name]
            if not settled(dev, now_s, self.settle_ms / 1000):
                continue
            change = self.clean.get(name)
            if change is not None and not change.flapping:
                f.clean_wrong += (change.status.value == "online") != dev.online
            if name in self.naive:
                f.naive_wrong += self.naive[name] != dev.online
        return figures

    def wrong_at_end(self) -> tuple[int, int]:
        """Devices shown with the wrong status (clean, naive), every device judged."""
        clean = sum(
            1
            for name, dev in self.fleet.items()
            if (c := self.clean.get(name)) is not None
            and not c.flapping
            and (c.status.value == "online") != dev.online
        )
        naive = sum(
            1 for name, dev in self.fleet.items() if self.naive.get(name, False) != dev.online
        )
        return clean, naive

    def flapping_at_end(self) -> int:
        return sum(1 for c in self.clean.values() if c.flapping)


def was_up(dev: LiveDevice, at_s: float) -> bool:
    """Was the device truly connected at `at_s` (and for a second before: no race)?"""
    return any(start <= at_s - 1 and (end is None or at_s < end) for start, end in dev.intervals)


def is_up(dev: LiveDevice, at_s: float) -> bool:
    """Was the device connected at `at_s` (a birth's receive time comes after its connect)?"""
    return any(start <= at_s and (end is None or at_s < end) for start, end in dev.intervals)


def settled(dev: LiveDevice, now_s: float, hold_s: float) -> bool:
    """Has the device's truth held for `hold_s` (wills come 1.5 x keepalive late)?"""
    if not dev.intervals:
        return True
    start, end = dev.intervals[-1]
    return now_s - (start if end is None else end) >= hold_s
