"""Scoring emitted status against the simulator's ground truth, for the core and a naive baseline.

The naive baseline is what the platform in field report B did: trust every lifecycle message as it
arrives (birth means online, will or offline means offline), one downstream change per message.
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from mqtt_presence.core import EventKind, PresenceConfig, Status
from mqtt_presence.core.devices import Devices
from mqtt_presence.sim.simulator import DeviceTimeline, EndKind, Simulation

TICK_MS = 1_000  # how often the workers' timer ticks
AFTER_FLAPPING_WINDOW_MS = 600_000  # how long after an episode its wrong status is counted


@dataclass(frozen=True)
class Emitted:
    """What downstream saw: one change of one device."""

    device: str
    status: Status
    flapping: bool
    since: int
    decided_at: int


def run_core(sim: Simulation, config: PresenceConfig) -> list[Emitted]:
    """Feed the simulation through the core in receive order, ticking each device when its
    deadline comes, rounded up to the workers' one-second timer, and up to the end."""
    fleet = Devices(config, tick_ms=TICK_MS)
    return [
        Emitted(c.device, c.status, c.flapping, c.since, c.decided_at)
        for c in fleet.run(sim.events, until=sim.duration_ms)
    ]


def run_naive(sim: Simulation) -> list[Emitted]:
    """Trust every lifecycle message: one change per message, in arrival order."""
    out = []
    for e in sim.events:
        if e.kind is EventKind.ACTIVITY:
            continue
        status = Status.ONLINE if e.kind.opens else Status.OFFLINE
        out.append(Emitted(e.device, status, False, e.received_at, e.received_at))
    return out


@dataclass
class Score:
    devices: int = 0
    true_transitions: int = 0
    changes: int = 0
    false_offlines: int = 0
    missed_offlines: int = 0
    detectable_offlines: int = 0
    undetectable_offlines: int = 0  # no message and no timeout could say it
    duplicate_emissions: int = 0
    flapping_episodes: int = 0
    flapping_changes: int = 0
    latencies: list[int] = field(default_factory=list)  # from the true disconnect
    latencies_after_signal: list[int] = field(default_factory=list)  # from its first signal
    wrong_ms: int = 0
    total_ms: int = 0
    after_flapping: list[int] = field(default_factory=list)  # wrong ms once an episode ended

    def row(self) -> dict[str, str]:
        lat = sorted(self.latencies)
        sig = sorted(self.latencies_after_signal)
        return {
            "devices": str(self.devices),
            "stale-will false offlines": str(self.false_offlines),
            "missed offlines (signal reached us)": f"{self.missed_offlines} / "
            f"{self.detectable_offlines}",
            "offlines with no signal at all": str(self.undetectable_offlines),
            "duplicate emissions": str(self.duplicate_emissions),
            "changes per true transition": _ratio(self.changes, self.true_transitions),
            "changes per flapping episode": _ratio(self.flapping_changes, self.flapping_episodes),
            "wrong status after a flapper stabilises p50/p99": _percentiles(
                sorted(self.after_flapping)
            ),
            "offline latency after the signal p50/p99": _percentiles(sig),
            "offline latency after the disconnect p50/p99": _percentiles(lat),
            "device-time with wrong status": f"{100 * self.wrong_ms / max(self.total_ms, 1):.3f} %",
        }

    def figures(self) -> Figures:
        """The same as `row`, as numbers (seconds, shares), for machines."""
        after = sorted(self.after_flapping)
        sig, lat = sorted(self.latencies_after_signal), sorted(self.latencies)
        return Figures(
            devices=self.devices,
            stale_will_false_offlines=self.false_offlines,
            missed_offlines=self.missed_offlines,
            detectable_offlines=self.detectable_offlines,
            offlines_without_signal=self.undetectable_offlines,
            duplicate_emissions=self.duplicate_emissions,
            changes_per_true_transition=_share(self.changes, self.true_transitions),
            changes_per_flapping_episode=_share(self.flapping_changes, self.flapping_episodes),
            wrong_after_flapper_stabilises_s=_p50_p99_s(after),
            offline_latency_after_signal_s=_p50_p99_s(sig),
            offline_latency_after_disconnect_s=_p50_p99_s(lat),
            wrong_status_share=self.wrong_ms / max(self.total_ms, 1),
        )


class Figures(msgspec.Struct, frozen=True, kw_only=True):
    """One column of a scenario's result in numbers (`presence bench accuracy --json`)."""

    devices: int
    stale_will_false_offlines: int
    missed_offlines: int
    detectable_offlines: int
    offlines_without_signal: int
    duplicate_emissions: int
    changes_per_true_transition: float | None
    changes_per_flapping_episode: float | None
    wrong_after_flapper_stabilises_s: tuple[float, float] | None  # p50, p99
    offline_latency_after_signal_s: tuple[float, float] | None
    offline_latency_after_disconnect_s: tuple[float, float] | None
    wrong_status_share: float  # of device-time


def _share(a: int, b: int) -> float | None:
    return a / b if b else None


def _p50_p99_s(values: list[int]) -> tuple[float, float] | None:
    if not values:
        return None
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return statistics.median(values) / 1000, p99 / 1000


def _ratio(a: int, b: int) -> str:
    share = _share(a, b)
    return "-" if share is None else f"{share:.2f}"


def _percentiles(values: list[int]) -> str:
    p50_p99 = _p50_p99_s(values)
    return "-" if p50_p99 is None else f"{p50_p99[0]:.1f} / {p50_p99[1]:.1f} s"


def score(
    sim: Simulation, emitted: Iterable[Emitted], config: PresenceConfig, with_token: bool
) -> Score:
    """Score the devices with (or without) session tokens."""
    by_device: dict[str, list[Emitted]] = defaultdict(list)
    for em in emitted:
        by_device[em.device].append(em)
    result = Score()
    slack = config.offline_grace_ms + sim.spec.reorder_jitter_ms + 1_000
    for tl in sim.timelines:
        if tl.has_token is not with_token:
            continue
        ems = sorted(by_device.get(tl.device, []), key=lambda x: x.decided_at)
        result.devices += 1
        _score_device(sim, tl, ems, config, slack, result)
    return result


def _gaps(tl: DeviceTimeline, end: int) -> list[tuple[int, int, int | None]]:
    """True offline periods (start, end, when a signal of it could reach the pipeline)."""
    gaps = []
    for i, s in enumerate(tl.sessions):
        if s.end is None:
            continue
        nxt = tl.sessions[i + 1].start if i + 1 < len(tl.sessions) else end
        gaps.append((s.end, nxt, s.signal_at))
    return gaps


def _score_device(
    sim: Simulation,
    tl: DeviceTimeline,
    ems: list[Emitted],
    config: PresenceConfig,
    slack: int,
    result: Score,
) -> None:
    end = sim.duration_ms
    result.true_transitions += sum(1 + (s.end is not None) for s in tl.sessions)
    result.changes += len(ems)
    result.duplicate_emissions += sum(
        1 for a, b in itertools.pairwise(ems) if (a.status, a.flapping) == (b.status, b.flapping)
    )
    gaps = _gaps(tl, end)
    for em in ems:
        if (
            em.status is Status.OFFLINE
            and not em.flapping
            and not any(g0 <= em.decided_at and g1 > em.since for g0, g1, _ in gaps)
        ):
            result.false_offlines += 1
    timeout = config.inactivity_timeout_ms
    for i, (g0, g1, delivered) in enumerate(gaps):
        session, signal = tl.sessions[i], delivered
        if signal is None and timeout is not None and tl.heartbeat_ms:
            # The last sign of life is the last heartbeat (or the birth) of the session.
            beats = (g0 - session.start) // tl.heartbeat_ms
            signal = session.start + beats * tl.heartbeat_ms + timeout
        if session.end_kind is EndKind.LOST_WILL and (timeout is None or not tl.heartbeat_ms):
            signal = None
        if signal is None or g1 <= signal + slack:
            if signal is None and g1 - g0 > slack:
                result.undetectable_offlines += 1
            continue
        result.detectable_offlines += 1
        shown = _shown_at(ems, g1 - 1)
        if shown is None or (shown.status is Status.ONLINE and not shown.flapping):
            result.missed_offlines += 1
            continue
        first = next(
            (
                em
                for em in ems
                if g0 <= em.decided_at < g1 and (em.status is Status.OFFLINE or em.flapping)
            ),
            None,
        )
        if first is not None:  # (else it was shown offline before the gap already)
            result.latencies.append(first.decided_at - g0)
            result.latencies_after_signal.append(max(first.decided_at - signal, 0))
    for a, b in tl.flapping:
        result.flapping_episodes += 1
        release = config.damping.max_suppress_ms if config.damping.enabled else 0
        result.flapping_changes += sum(1 for em in ems if a <= em.decided_at <= b + release)
        # Once the episode is over, "flapping" is no longer the truth: the real status is.
        window_end = min(end, b + AFTER_FLAPPING_WINDOW_MS)
        result.after_flapping.append(
            _wrong_time(tl, ems, window_end, start=b, flapping_is_right=False)
        )
    result.wrong_ms += _wrong_time(tl, ems, end)
    result.total_ms += end - (tl.sessions[0].start if tl.sessions else 0)


def _shown_at(ems: list[Emitted], t: int) -> Emitted | None:
    """The change downstream was showing at time `t`."""
    shown = None
    for em in ems:
        if em.decided_at > t:
            break
        shown = em
    return shown


def _wrong_time(
    tl: DeviceTimeline,
    ems: list[Emitted],
    end: int,
    start: int = 0,
    flapping_is_right: bool = True,
) -> int:
    """How long, between `start` and `end`, downstream showed a status other than the truth
    (flapping counts as right while the device flaps: it says it is unstable, which it is)."""
    points = sorted(
        t
        for t in {
            start,
            end,
            *(em.decided_at for em in ems),
            *(s.start for s in tl.sessions),
            *(s.end for s in tl.sessions if s.end),
        }
        if start <= t <= end
    )
    wrong = 0
    idx = -1
    for t0, t1 in itertools.pairwise(points):
        while idx + 1 < len(ems) and ems[idx + 1].decided_at <= t0:
            idx += 1
        if idx < 0 or t0 < tl.sessions[0].start:
            continue
        shown = ems[idx]
        if shown.flapping and flapping_is_right:
            continue
        if (shown.status is Status.ONLINE) != tl.online_at(t0):
            wrong += t1 - t0
    return wrong


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    description: str
    events: int
    columns: dict[str, dict[str, str]]  # column title -> metric -> value
    figures: dict[str, Figures]  # column title -> the same in numbers


def evaluate(sim: Simulation, config: PresenceConfig) -> ScenarioResult:
    """The core and the naive baseline on one simulation, for devices with and without tokens."""
    core, naive = run_core(sim, config), run_naive(sim)
    scores = {
        "core, tokens": score(sim, core, config, True),
        "naive, tokens": score(sim, naive, config, True),
        "core, no tokens": score(sim, core, config, False),
        "naive, no tokens": score(sim, naive, config, False),
    }
    return ScenarioResult(
        sim.spec.name,
        sim.spec.description,
        len(sim.events),
        {title: s.row() for title, s in scores.items()},
        {title: s.figures() for title, s in scores.items()},
    )


def config_for(sim: Simulation, base: PresenceConfig) -> PresenceConfig:
    """What an operator who knows the fleet would set: the keepalive as the token-less will
    delay, and for devices that send a heartbeat an inactivity timeout of three heartbeats, never
    shorter than the broker's own detection of a dead connection (1.5 x keepalive): a timeout
    shorter than a reboot would call a device that is merely restarting offline."""
    config = base
    if not config.tokenless_min_will_delay_ms:
        config = msgspec.structs.replace(config, tokenless_min_will_delay_ms=sim.spec.keepalive_ms)
    if sim.spec.heartbeat_ms and config.inactivity_timeout_ms is None:
        timeout = max(3 * sim.spec.heartbeat_ms, sim.spec.keepalive_ms * 3 // 2)
        config = msgspec.structs.replace(config, inactivity_timeout_ms=timeout)
    return config
