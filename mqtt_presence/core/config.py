"""Tuning of the presence core. Frozen; loaded once by the entry point and passed in."""

from __future__ import annotations

import math

import msgspec

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
    """

    offline_grace_ms: int = 5_000
    online_delay_ms: int = 0
    inactivity_timeout_ms: int | None = None
    tokenless_min_will_delay_ms: int = 0
    dedup_memory: int = 8
    known_sessions: int = 4
    superseded_reasons: frozenset[str] = frozenset({"takenover", "takeovered", "discarded"})
    damping: DampingConfig = DampingConfig()

    def __post_init__(self) -> None:
        if self.offline_grace_ms < 0 or self.online_delay_ms < 0:
            raise ValueError("offline_grace_ms and online_delay_ms must be >= 0")
        if self.inactivity_timeout_ms is not None and self.inactivity_timeout_ms <= 0:
            raise ValueError("inactivity_timeout_ms must be positive when set")
        if self.dedup_memory < 0 or self.known_sessions < 1:
            raise ValueError("dedup_memory must be >= 0 and known_sessions >= 1")
