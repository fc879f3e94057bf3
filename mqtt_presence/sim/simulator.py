"""A seeded fleet simulator: true connected intervals, and the raw events brokers really deliver.

Pure and reproducible (one `random.Random(seed)`), no I/O. Each device lives a timeline of
sessions; each session produces the lifecycle messages a real broker would hand a subscriber, with
the field reports' faults: the old session's will published 1-1.5 x keepalive late after a Clean
Start = 1 reconnect (the stale will), lost wills, QoS 1 redeliveries, reordering between broker
nodes, retained births replayed when the subscriber reconnects, flapping clients, a reconnect storm
after a broker restart, and devices with and without session tokens; tokens that count
connections or only reboots, counters that restart, device clocks that are off by hours, and
redeliveries that arrive long after the message they repeat.

The same timelines drive the core here (`events`) and real MQTT clients through the real pipeline
later (the `Session` list says when each device connects and how it ends).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from mqtt_presence.core import ConnectionEvent, EventKind, SessionOrder


class EndKind(StrEnum):
    WILL = "will"  # connection lost; the broker publishes the will after the keepalive expires
    TAKEOVER = "takeover"  # lost, and the device reconnected under the same client id: will at once
    LOST_WILL = "lost_will"  # the will never reaches the pipeline
    GRACEFUL = "graceful"  # the device says "offline" itself before disconnecting
    KICKED = "kicked"  # the broker closes the connection (rate limits): will at once
    STILL_UP = "still_up"  # connected at the end of the simulation


@dataclass(frozen=True)
class Session:
    """One true connection of a device."""

    token: int
    start: int  # ms
    end: int | None  # ms, None while still connected at the end
    end_kind: EndKind
    signal_at: int | None = None  # ms: when the first message saying it ended reached us


@dataclass
class DeviceTimeline:
    device: str
    has_token: bool
    heartbeat_ms: int | None
    clock_offset_ms: int = 0  # the device's clock minus true time
    flapping: list[tuple[int, int]] = field(default_factory=list)  # flapping episodes
    sessions: list[Session] = field(default_factory=list)

    def online_at(self, t: int) -> bool:
        return any(s.start <= t and (s.end is None or t < s.end) for s in self.sessions)


@dataclass(frozen=True)
class ScenarioSpec:
    """The fault mix of one scenario."""

    name: str
    description: str
    duration_ms: int = 3_600_000
    keepalive_ms: int = 60_000
    mean_uptime_ms: int = 900_000
    reboot_share: float = 0.6  # of outages: short power cycles (Clean Start = 1 reconnects)
    takeover_share: float = 0.2  # of ungraceful ends: same client id, will published at once
    graceful_share: float = 0.1
    lost_will_share: float = 0.0
    duplicate_share: float = 0.0  # of deliveries: a QoS 1 redelivery follows
    reorder_jitter_ms: int = 0  # delivery jitter between broker nodes
    retained_births: bool = False
    subscriber_reconnect_every_ms: int | None = None  # retained replays to the bridge
    flapping_share: float = 0.0
    storm_at_ms: int | None = None
    heartbeat_ms: int | None = None  # devices send activity this often
    tokenless_share: float = 0.2
    control: bool = False  # no fault at all: what a naive consumer already gets right
    boot_counter: bool = False  # tokens count reboots: a network drop reconnects with the same
    counter_reset_share: float = 0.0  # of reboots: the counter starts again at 1
    clock_skew_ms: int = 0  # each device's clock is off by up to this much, either way
    redelivery_delay_ms: tuple[int, int] = (10, 5_000)  # how late a QoS 1 redelivery comes


SCENARIOS: dict[str, ScenarioSpec] = {
    s.name: s
    for s in [
        ScenarioSpec(
            "stale-will",
            "power cycles with Clean Start = 1 inside the keepalive window: "
            "the old session's will arrives after the new birth (field report B)",
            reboot_share=0.9,
            takeover_share=0.0,
        ),
        ScenarioSpec(
            "stale-will-telemetry",
            "the stale-will fleet, and every device also publishes telemetry every 3 s (an "
            "`activity` profile): a sign of life that takes a token-less stale will back",
            reboot_share=0.9,
            takeover_share=0.0,
            heartbeat_ms=3_000,
        ),
        ScenarioSpec(
            "long-outage",
            "control, no fault: power off longer than the keepalive, so the will comes before "
            "the birth; the naive consumer is right here, the core pays its grace period",
            reboot_share=0.0,
            mean_uptime_ms=600_000,
            control=True,
        ),
        ScenarioSpec(
            "lost-will",
            "wills lost on the way; devices send a heartbeat every 30 s",
            lost_will_share=0.5,
            heartbeat_ms=30_000,
            reboot_share=0.3,
        ),
        ScenarioSpec(
            "duplicates", "QoS 1 redeliveries of a third of all messages", duplicate_share=0.33
        ),
        ScenarioSpec(
            "reorder",
            "two broker nodes: deliveries jittered by up to 3 s",
            reorder_jitter_ms=3_000,
            duplicate_share=0.1,
            mean_uptime_ms=120_000,
        ),
        ScenarioSpec(
            "retained-replay",
            "retained births replayed every time the subscriber "
            "reconnects (every 10 min), also for devices that are off",
            retained_births=True,
            subscriber_reconnect_every_ms=600_000,
            reboot_share=0.3,
        ),
        ScenarioSpec(
            "flapping",
            "a quarter of the fleet flaps every 1-3 s for a minute, "
            "kicked by the broker's rate limits (field report A)",
            flapping_share=0.25,
        ),
        ScenarioSpec(
            "reconnect-storm",
            "the broker restarts: every device drops at once, wills "
            "lost, all reconnect within 30 s",
            storm_at_ms=1_800_000,
            retained_births=True,
        ),
        ScenarioSpec(
            "boot-counter",
            "tokens count reboots, not connections: a device whose network drops reconnects "
            "with the token of its closed session",
            boot_counter=True,
            reboot_share=0.4,
            mean_uptime_ms=600_000,
        ),
        ScenarioSpec(
            "counter-reset",
            "a third of reboots start the counter again at 1 (firmware without a persisted "
            "counter, as Sparkplug nodes that restart bdSeq at 0)",
            counter_reset_share=0.33,
            reboot_share=0.8,
        ),
        ScenarioSpec(
            "clock-skew",
            "device clocks off by up to an hour either way; wills lost, heartbeats every 30 s",
            clock_skew_ms=3_600_000,
            lost_will_share=0.3,
            heartbeat_ms=30_000,
        ),
        ScenarioSpec(
            "long-uptime",
            "devices up for hours, then power-cycled inside the keepalive window (the "
            "token-less keepalive rule measured from the latest birth)",
            duration_ms=6 * 3_600_000,
            mean_uptime_ms=2 * 3_600_000,
            reboot_share=0.9,
            takeover_share=0.0,
            tokenless_share=0.5,
        ),
        ScenarioSpec(
            "retained-after-timeout",
            "wills lost, heartbeats every 30 s (offline by inactivity), and retained births "
            "replayed every 10 min when the subscriber reconnects",
            lost_will_share=0.6,
            heartbeat_ms=30_000,
            retained_births=True,
            subscriber_reconnect_every_ms=600_000,
        ),
        ScenarioSpec(
            "late-redelivery",
            "QoS 1 redeliveries through a second bridge on a shared subscription arrive up to a "
            "minute late, after the device's next birth or will",
            duplicate_share=0.25,
            redelivery_delay_ms=(5_000, 60_000),
        ),
    ]
}


@dataclass
class Simulation:
    spec: ScenarioSpec
    seed: int
    timelines: list[DeviceTimeline]
    events: list[ConnectionEvent]  # in receive order

    @property
    def duration_ms(self) -> int:
        return self.spec.duration_ms


def simulate(spec: ScenarioSpec, devices: int = 1_000, seed: int = 1) -> Simulation:
    rnd = random.Random(f"{spec.name}:{seed}")
    timelines = [_timeline(spec, rnd, f"dev-{i:06d}") for i in range(devices)]
    events: list[ConnectionEvent] = []
    for tl in timelines:
        events.extend(_deliveries(spec, rnd, tl))
    if spec.subscriber_reconnect_every_ms:
        events.extend(_retained_replays(spec, timelines, spec.subscriber_reconnect_every_ms))
    if spec.storm_at_ms is not None and spec.retained_births:
        events.extend(_retained_replays_at(spec, timelines, spec.storm_at_ms + 500))
    events.sort(key=lambda e: (e.received_at, e.device))
    return Simulation(spec, seed, timelines, events)


def _timeline(spec: ScenarioSpec, rnd: random.Random, device: str) -> DeviceTimeline:
    tl = DeviceTimeline(
        device=device,
        has_token=rnd.random() >= spec.tokenless_share,
        heartbeat_ms=spec.heartbeat_ms,
        clock_offset_ms=rnd.randrange(-spec.clock_skew_ms, spec.clock_skew_ms + 1),
    )
    if rnd.random() < spec.flapping_share:
        start = rnd.randrange(60_000, max(spec.duration_ms - 120_000, 60_001))
        tl.flapping.append((start, start + 60_000))
    t = rnd.randrange(0, 10_000)
    token = rnd.randrange(1, 1_000)
    ka = spec.keepalive_ms
    while t < spec.duration_ms:
        in_flap = next(((a, b) for a, b in tl.flapping if a <= t < b), None)
        reboot = False  # kicked, a broker restart: the device keeps running
        if in_flap:
            up, down, end_kind = (
                rnd.randrange(500, 1_500),
                rnd.randrange(500, 1_500),
                EndKind.KICKED,
            )
        else:
            up = int(rnd.expovariate(1 / spec.mean_uptime_ms)) + 1_000
            if spec.storm_at_ms is not None and t < spec.storm_at_ms < t + up:
                up = spec.storm_at_ms - t
                down, end_kind = rnd.randrange(1_000, 30_000), EndKind.LOST_WILL
            else:
                down, end_kind, reboot = _outage(spec, rnd, ka)
            nxt = next((a for a, _ in tl.flapping if t < a < t + up), None)
            if nxt is not None:  # the flapping episode starts: cut this session there
                up = nxt - t
        end = t + up
        if end >= spec.duration_ms:
            tl.sessions.append(Session(token, t, None, EndKind.STILL_UP))
            break
        tl.sessions.append(Session(token, t, end, end_kind))
        if reboot or not spec.boot_counter:
            token += 1
        if reboot and rnd.random() < spec.counter_reset_share:
            token = 1
        t = end + down
    return tl


def _outage(spec: ScenarioSpec, rnd: random.Random, ka: int) -> tuple[int, EndKind, bool]:
    """How long the device is away, how its session ends, and whether it rebooted."""
    r = rnd.random()
    if r < spec.graceful_share:
        return rnd.randrange(60_000, 300_000), EndKind.GRACEFUL, True
    if rnd.random() < spec.lost_will_share:
        kind = EndKind.LOST_WILL
    elif rnd.random() < spec.takeover_share:
        kind = EndKind.TAKEOVER
    else:
        kind = EndKind.WILL
    if rnd.random() < spec.reboot_share:
        return rnd.randrange(5_000, 30_000), kind, True  # a power cycle: back within the keepalive
    return rnd.randrange(2 * ka, 10 * ka), kind, False  # the network went, the device stayed up


def _deliveries(
    spec: ScenarioSpec, rnd: random.Random, tl: DeviceTimeline
) -> list[ConnectionEvent]:
    out: list[ConnectionEvent] = []

    def deliver(
        kind: EventKind,
        sent: int,
        token: int | None,
        *,
        retain: bool = False,
        event_time: int | None = None,
    ) -> int | None:
        at = (
            sent
            + rnd.randrange(5, 50)
            + (rnd.randrange(0, spec.reorder_jitter_ms) if spec.reorder_jitter_ms else 0)
        )
        if at >= spec.duration_ms:
            return None
        e = ConnectionEvent(
            device=tl.device,
            kind=kind,
            received_at=at,
            session=token if tl.has_token else None,
            session_order=SessionOrder.COUNTER,
            retain=retain,
            event_time=event_time + tl.clock_offset_ms
            if tl.has_token and event_time is not None
            else None,
            topic=f"devices/{tl.device}/status",
        )
        out.append(e)
        if rnd.random() < spec.duplicate_share:
            again = at + rnd.randrange(*spec.redelivery_delay_ms)
            if again < spec.duration_ms:
                out.append(ConnectionEvent(**{**_fields(e), "received_at": again, "dup": True}))
        return at

    ka = spec.keepalive_ms
    # Device times as the JSON convention has them: a birth and the will registered with the same
    # CONNECT carry the connect time; a graceful offline carries the time it was sent.
    for i, s in enumerate(tl.sessions):
        deliver(EventKind.BIRTH, s.start, s.token, event_time=s.start)  # live: retain flag 0
        if tl.heartbeat_ms:
            hb = s.start + tl.heartbeat_ms
            while hb < (s.end if s.end is not None else spec.duration_ms):
                deliver(EventKind.ACTIVITY, hb, None, event_time=hb)
                hb += tl.heartbeat_ms
        if s.end is None:
            continue
        signal: int | None = None
        if s.end_kind is EndKind.GRACEFUL:
            signal = deliver(EventKind.OFFLINE, s.end, s.token, event_time=s.end)
        elif s.end_kind is EndKind.KICKED:
            signal = deliver(EventKind.WILL, s.end, s.token, event_time=s.start)
        elif s.end_kind is EndKind.TAKEOVER:
            nxt = tl.sessions[i + 1].start if i + 1 < len(tl.sessions) else None
            detected = s.end + rnd.randrange(ka, ka * 3 // 2)
            # Reconnecting under the same client id takes the old session over: will at once.
            signal = deliver(
                EventKind.WILL,
                min(detected, nxt - 1) if nxt else detected,
                s.token,
                event_time=s.start,
            )
        elif s.end_kind is EndKind.WILL:
            signal = deliver(
                EventKind.WILL, s.end + rnd.randrange(ka, ka * 3 // 2), s.token, event_time=s.start
            )
        tl.sessions[i] = replace(s, signal_at=signal)
    return out


def _retained_replays(
    spec: ScenarioSpec, timelines: list[DeviceTimeline], every: int
) -> list[ConnectionEvent]:
    out: list[ConnectionEvent] = []
    for at in range(every, spec.duration_ms, every):
        out.extend(_retained_replays_at(spec, timelines, at))
    return out


def _retained_replays_at(
    spec: ScenarioSpec, timelines: list[DeviceTimeline], at: int
) -> list[ConnectionEvent]:
    """The subscriber (re)connects at `at`: the broker sends each device's last retained birth."""
    out = []
    for tl in timelines:
        last = next((s for s in reversed(tl.sessions) if s.start <= at), None)
        if last is None:
            continue
        out.append(
            ConnectionEvent(
                device=tl.device,
                kind=EventKind.BIRTH,
                received_at=at,
                session=last.token if tl.has_token else None,
                session_order=SessionOrder.COUNTER,
                event_time=last.start + tl.clock_offset_ms if tl.has_token else None,
                retain=True,
                topic=f"devices/{tl.device}/status",
            )
        )
    return out


def _fields(e: ConnectionEvent) -> dict[str, Any]:
    return {f: getattr(e, f) for f in e.__struct_fields__}
