"""Tuning of the presence core. Frozen; loaded once by the entry point and passed in."""

from __future__ import annotations

import fnmatch
import functools
import math
import re

import msgspec

from mqtt_presence.core.events import PROFILE_KINDS

MAX_HALF_LIVES = 64  # max_suppress_ms / half_life_ms: a penalty ceiling of at most 2^64 x reuse


class DampingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Flap damping in the spirit of RFC 2439 (BGP route-flap damping), tuned for devices.

    Every disconnect adds `penalty`; the penalty halves every `half_life_ms`. Above `suppress` the
    device is damped: downstream gets one change marking it flapping and then nothing, until the
    penalty has decayed below `reuse`, when it gets the true status. The penalty is capped so that
    a device is never held longer than `max_suppress_ms` after its last flap.

    Defaults, for devices rather than BGP routers (RFC 2439 suggests 1000 / 2000 / 750 with a
    15 min half-life): three disconnects within about a minute are not a reboot but a flap, so
    suppress at 3000 (a single power cycle or two in a row never trips it); a device is stable
    again when it has stayed up about one half-life (60 s) after the flapping ends; and nobody
    should wait more than 5 minutes to see the real status of a device that stopped flapping.

    A damped device that has stayed up for `release_when_up_ms` (30 s) is released then, whatever
    its penalty: a flapper that stabilised up is shown online within that time of its last
    reconnect (the penalty stays, so a relapse is damped again at once). One that stays down is
    released, offline, when the penalty has decayed (at most `max_suppress_ms` after its last drop).
    """

    enabled: bool = True
    penalty: float = 1000.0
    suppress: float = 3000.0
    reuse: float = 1000.0
    half_life_ms: int = 60_000
    max_suppress_ms: int = 300_000
    release_when_up_ms: int = 30_000

    def __post_init__(self) -> None:
        if not all(math.isfinite(x) for x in (self.penalty, self.suppress, self.reuse)):
            raise ValueError("damping penalty, suppress and reuse must be finite numbers")
        if not 0 < self.reuse < self.suppress:
            raise ValueError("damping needs 0 < reuse < suppress")
        if self.half_life_ms <= 0 or self.max_suppress_ms <= 0 or self.penalty <= 0:
            raise ValueError("damping penalty, half_life_ms and max_suppress_ms must be positive")
        if self.max_suppress_ms > MAX_HALF_LIVES * self.half_life_ms:
            raise ValueError(
                f"damping max_suppress_ms ({self.max_suppress_ms}) is more than {MAX_HALF_LIVES} "
                f"half-lives ({self.half_life_ms} ms): the penalty ceiling would be 2^"
                f"{self.max_suppress_ms // self.half_life_ms}; raise half_life_ms to at least "
                f"{-(-self.max_suppress_ms // MAX_HALF_LIVES)}"
            )
        if self.release_when_up_ms <= 0:
            raise ValueError("damping release_when_up_ms must be positive")

    @property
    def ceiling(self) -> float:
        """The highest penalty kept: it decays to `reuse` in exactly `max_suppress_ms`."""
        return float(self.reuse * 2.0 ** (self.max_suppress_ms / self.half_life_ms))

    def decay(self, penalty: float, elapsed_ms: int) -> float:
        return float(penalty * 0.5 ** (max(elapsed_ms, 0) / self.half_life_ms))

    def release_after_ms(self, penalty: float) -> int:
        """How long until `penalty` decays to `reuse` (0 if it already has)."""
        if penalty <= self.reuse:
            return 0
        return math.ceil(self.half_life_ms * math.log2(penalty / self.reuse))


class PresenceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the core turns observed connectivity into emitted status.

    offline_grace_ms: an offline is emitted only after this long with no newer session or sign of
        life. Short reconnects (a reboot, a network blip, a broker takeover) never reach
        downstream. 5 s covers a firmware restart on typical devices and adds 5 s to offline
        detection; raise it where devices reboot slowly.
    online_delay_ms: the same for online (default 0: a device that comes back is shown at once).
    inactivity_timeout_ms: for devices that send periodic messages: offline after this long
        without any message, so an offline is not missed when the will itself is lost. Off by
        default (not every device sends periodically).
    tokenless_min_will_delay_ms: for devices without session tokens: a will that arrives sooner
        than this after the birth it would close is taken for the previous session's stale will
        and dropped. Sound when set to the devices' keepalive: a broker publishes the will of a
        lost connection only once 1 to 1.5 x keepalive have passed without a packet, and the
        birth was a packet. It misjudges only wills the broker sends at once (it kicked the
        client, or a takeover under the same client id), which then show as online until the
        next signal. Off (0) by default, since the keepalive is the fleet's own.
    dedup_memory: how many recent message fingerprints each device remembers.
    known_sessions: how many recent opaque session ids each device remembers (equality only).
    superseded_reasons: broker disconnect reasons meaning "a newer connection replaced this one"
        (EMQX: `takenover`, spelt `takeovered` in 4.4, and `discarded`).
    sleeps: the devices sleep (battery sensors): an inactivity timeout or a graceful goodbye
        makes them *sleeping* (offline, with `sleeping` true), not offline; a will is still a
        death. A device that says it sleeps (Homie `sleeping`) is sleeping whatever this says.
        A sleep adds no flap-damping penalty.
    classes: device classes (`[[presence.classes]]`): the first whose `match` fits an event
        gives its device these settings instead (see `DeviceClass`).
    """

    offline_grace_ms: int = 5_000
    online_delay_ms: int = 0
    inactivity_timeout_ms: int | None = None
    tokenless_min_will_delay_ms: int = 0
    dedup_memory: int = 8
    known_sessions: int = 4
    superseded_reasons: frozenset[str] = frozenset({"takenover", "takeovered", "discarded"})
    damping: DampingConfig = DampingConfig()
    sleeps: bool = False
    classes: tuple[DeviceClass, ...] = ()

    def __post_init__(self) -> None:
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"device class names must be unique: {names}")
        if any(c.config.classes for c in self.classes):
            raise ValueError("a device class cannot have classes of its own")
        if self.offline_grace_ms < 0 or self.online_delay_ms < 0:
            raise ValueError("offline_grace_ms and online_delay_ms must be >= 0")
        if self.inactivity_timeout_ms is not None and self.inactivity_timeout_ms <= 0:
            raise ValueError("inactivity_timeout_ms must be positive when set")
        if self.dedup_memory < 0 or self.known_sessions < 1:
            raise ValueError("dedup_memory must be >= 0 and known_sessions >= 1")


class ClassMatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which devices a class is for: every criterion given must fit (at least one is needed).

    device: a glob on the device id (`cam-*`, `*/battery/*`; fnmatch, case-sensitive).
    profile: the bridge profile that read the event (`homie`, `tasmota`, `sparkplug`, ...).
    topic: an MQTT topic filter (`+` one level, `#` the rest) on the topic the event came from.
    """

    device: str | None = None
    profile: str | None = None
    topic: str | None = None

    def __post_init__(self) -> None:
        if self.device is None and self.profile is None and self.topic is None:
            raise ValueError("a class match needs at least one of device, profile, topic")
        if self.profile is not None and self.profile not in PROFILE_KINDS:
            raise ValueError(
                f"match.profile {self.profile!r} is not a bridge profile; known: "
                + ", ".join(sorted(PROFILE_KINDS))
            )
        if self.topic is not None:
            levels = self.topic.split("/")
            if any(("#" in x and x != "#") or ("+" in x and x != "+") for x in levels) or (
                "#" in levels[:-1]
            ):
                raise ValueError(f"match.topic {self.topic!r} is not a valid MQTT topic filter")

    def fits(self, device: str, profile: str, topic: str | None) -> bool:
        if self.profile is not None and profile != self.profile:
            return False
        if self.device is not None and not _glob(self.device).fullmatch(device):
            return False
        return self.topic is None or (topic is not None and topic_matches(self.topic, topic))


class DeviceClass(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A kind of device with settings of its own (cameras: a short grace; battery sensors: an
    hour's inactivity timeout and `sleeps`; flaky gateways: stronger damping).

    A device takes the class of the first class whose `match` fits one of its events, and keeps
    it until an event fits another class (an event that fits none changes nothing: telemetry on
    other topics does not reset it). `config` is the whole core configuration for its devices:
    the base `[presence]` settings with the class's own over them.
    """

    name: str
    match: ClassMatch
    config: PresenceConfig


@functools.cache
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 5.0 4.7: does `topic` fit `topic_filter` (`+` one level, `#` this level and below)?
    Topics starting with `$` fit no filter starting with a wildcard (4.7.2)."""
    want, have = topic_filter.split("/"), topic.split("/")
    if topic.startswith("$") and want[0] in ("+", "#"):
        return False
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level != "+" and level != have[i]):
            return False
    return len(want) == len(have)


def class_of(config: PresenceConfig, device: str, profile: str, topic: str | None) -> str | None:
    """The name of the first class whose match fits, or None."""
    for klass in config.classes:
        if klass.match.fits(device, profile, topic):
            return klass.name
    return None


def config_of(config: PresenceConfig, klass: str | None) -> PresenceConfig:
    """The settings of a device of class `klass` (the base ones for None or a class no longer
    configured: a renamed or removed class falls back to the base)."""
    if klass is not None:
        for c in config.classes:
            if c.name == klass:
                return c.config
    return config
