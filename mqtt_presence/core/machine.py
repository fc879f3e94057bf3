"""The presence state machine: `transition(state, input, config) -> (state, [changes])`.

Pure and deterministic: no I/O, no clock of its own, no randomness. An input is a raw
`ConnectionEvent` or a `Tick`; both carry the time. The machine works in two layers:

1. Observation. Each event is checked against the device's sessions (README, *Sessions*): a
   repeat is dropped, a will only closes its own session, a stale will or a late birth changes
   nothing, and what is left moves the *observed* status (the truth as the events tell it).
2. Emission. The observed status reaches downstream only when it has held for its debounce delay
   (the offline grace period), and not while the device is damped for flapping (RFC 2439 style).
   Every change carries a version that goes up by one per device.

Deadlines (debounce, damping release, inactivity) are kept in the state and fired by whatever input
comes first at or after them, in time order, with the deadline's own time, so the output does not
depend on how ticks are spaced.

`step` does the work and can also say, in words, what it decided and why (`presence replay
--explain`); `transition` is the same without the words.

The session rules, as devices and brokers really behave (each rule's source is cited beside its
test in tests/unit/core/test_sessions.py):

- One clock. Order and deadlines run on the bridge's receive time. A device's or broker's own
  time (`event_time`) is compared only with times from the same device, never with receive time.
- Repeats. The same record twice (a worker processing it again after a restart: same content,
  same receive time) is dropped. A message flagged DUP (MQTT 5.0 3.3.1.1: a redelivery) whose
  content (kind, token, device time, sequence, id, topic) was seen is dropped. A message without
  the flag is never a repeat: the broker does not forward the publisher's DUP (3.3.1.1), so a
  device's own retry arrives like a new message, and it was sent on a live connection anyway.
  Fingerprints are 64-bit (XXH3): no realistic chance of calling a real message a repeat, and a
  device that crafted collisions could only hide its own messages (memory is per device).
- Retained messages (retain set on delivery: sent because of a new subscription, MQTT 5.0
  3.3.1.3) are the broker's memory, not news: they set the status of a device never seen, and
  are ignored for any other.
- A will, graceful offline or disconnect closes the device only if its token is the current
  session's (the Sparkplug 3.0 host rule: an NDEATH counts only if its bdSeq equals the bdSeq of
  the node's current NBIRTH), whatever bdSeq, timestamps and opaque ids say of older and newer:
  they restart, clocks are reset, broker nodes disagree. A will of another token is stale, with
  one exception: a token never seen born whose will is from a later connection than the open
  session's birth (device times say so, or, without them, counter order, as for births): that
  connection came and died before its birth arrived (a broker-cluster race), and the device is
  offline. A will of a token never seen born is remembered: its birth, when it comes, is late
  and opens a session that is already over. A token used again (a counter that restarted at a
  value it had, a boot counter after a quick reconnect) remembers the device time of the birth
  it replaced: a will of that token from before it is an older connection's.
- A birth (or broker connect) opens the current session. Against an open session, device times
  decide when both are present; without them, counters follow token order (an older counter is a
  late birth: its connection is over), and Sparkplug bdSeq, timestamps and opaque ids follow
  receive order (Sparkplug's own rule: every NBIRTH starts the node's session; a timestamp token
  is a clock, and clocks are reset and disagree across broker nodes), except a token already
  seen born and replaced, which is a late birth. Against a closed
  session, receive order: a birth after a will is a device that is back, whatever its token
  (boot counters are reused across reconnects, counters restart at 0, clocks reset), unless it is
  the late birth of a will seen before it. A redelivered (DUP) birth is news only when its device
  time proves it newer: a redelivery can be arbitrarily old.
- Without tokens: receive order, with the keepalive rule (a will sooner than the keepalive after
  the latest birth is the previous connection's) and signs of life.
- Classes and sleep. A device's settings are its class's (`[[presence.classes]]`: the first class
  that fits an event; an event that fits none keeps the class). An offline the device announced
  as sleep (Homie `sleeping`), or, for devices whose settings say they sleep, an inactivity
  timeout or a graceful goodbye, is emitted as offline with `sleeping` set; it adds no flap
  penalty. A will is always a death.

What tokens cannot protect against: without device times, a counter that restarts while its old
session is still open is taken for a late birth until that session's will arrives (the restarted
device shows offline until its next birth or sign of life); a will that overtakes its own birth
on a broker cluster, without device times, is stale until that birth comes; without tokens, a
stale will that arrives later than the keepalive after the new birth takes a live device
offline until its next sign of life.
"""

from __future__ import annotations

from enum import Enum

import msgspec
import xxhash

from mqtt_presence.core.config import PresenceConfig, class_of, config_of
from mqtt_presence.core.events import (
    REASON_OF_KIND,
    ConnectionEvent,
    EventKind,
    Input,
    Reason,
    SessionOrder,
    SessionToken,
    Status,
    StatusChange,
    Tick,
)
from mqtt_presence.core.sessions import Cmp, compare
from mqtt_presence.core.state import DeviceState

Notes = list[str] | None


def _copy(state: DeviceState) -> DeviceState:
    """A shallow copy (msgspec's C `__copy__`; the machine mutates only the copy)."""
    return state.__copy__()  # type: ignore[attr-defined, no-any-return]


_pack = msgspec.msgpack.Encoder().encode  # a stable, typed encoding of a fingerprint's fields
_xxh64 = xxhash.xxh3_64_intdigest  # XXH3, 64 bits: stable across processes, unlike hash()

# Module constants: in the hot path, enum members and sets are cheaper looked up here.
_ACTIVITY = EventKind.ACTIVITY
_OPENING = frozenset({EventKind.BIRTH, EventKind.CONNECTED})
_ONLINE, _OFFLINE = Status.ONLINE, Status.OFFLINE


def step(
    state: DeviceState | None, event: Input, config: PresenceConfig, notes: Notes
) -> tuple[DeviceState | None, list[StatusChange], Notes]:
    """`transition`, appending a sentence per decision to `notes` when it is a list."""
    new_state, changes = transition(state, event, config, notes)
    return new_state, changes, notes


def transition(
    state: DeviceState | None, event: Input, config: PresenceConfig, notes: Notes = None
) -> tuple[DeviceState | None, list[StatusChange]]:
    """Apply one event or tick to one device's state; returns the new state and its changes.
    (`notes`: see `step`; the work is done here, the hot path, with no call in between.)"""
    changes: list[StatusChange] = []
    if isinstance(event, Tick):
        if state is None:
            return None, changes
        s = _copy(state)
        s.clock = max(s.clock, event.now)
        if config.classes:
            config = config_of(config, s.device_class)
        _fire_deadlines(s, config, changes, notes)
        return s, changes

    s = state.__copy__() if state is not None else DeviceState(device=event.device)  # type: ignore[attr-defined]
    received = event.received_at
    now = received if received > s.clock else s.clock
    s.clock = now
    if config.classes:
        config = _classify(s, event, config, notes)
    if s.due is not None or s.release_due is not None or config.inactivity_timeout_ms:
        _fire_deadlines(s, config, changes, notes)
    emitted_before = len(changes)

    e = event
    fp = _xxh64(_pack((e.kind, e.session, e.event_time, e.seq, e.message_id, e.topic, e.reason)))
    # ^ fingerprint(event), inlined: this is the hot path
    recent = s.recent
    repeat = _repeat_of(s, fp, event) if fp in recent else None
    if repeat is not None:
        if notes is not None:
            notes.append(f"{event.kind} dropped: {repeat}")
    else:
        keep = config.dedup_memory
        if keep:
            cap = 2 * keep  # (fingerprint, receive time) pairs
            s.recent = (
                (*recent, fp, received)
                if len(recent) < cap
                else (*recent[len(recent) - cap + 2 :], fp, received)
            )
        kind = event.kind
        if event.retain and s.observed is not None:
            if notes is not None:
                notes.append(f"retained {kind} ignored: the broker's memory, not news")
        elif kind is _ACTIVITY:
            _on_activity(s, event, now, config, changes, notes)
        elif kind in _OPENING:
            _on_open(s, event, now, config, changes, notes)
        else:
            _on_close(s, event, now, config, changes, notes)
    if len(changes) == emitted_before:
        s.suppressed += 1
    return s, changes


def _classify(
    s: DeviceState, e: ConnectionEvent, config: PresenceConfig, notes: Notes
) -> PresenceConfig:
    """The device's class after this event (an event that fits no class keeps it), and its
    settings."""
    klass = class_of(config, e.device, e.source, e.topic)
    if klass is not None and klass != s.device_class:
        if notes is not None:
            notes.append(f"device class {klass!r} (its settings apply from now on)")
        s.device_class = klass
    return config_of(config, s.device_class)


def next_deadline(state: DeviceState, config: PresenceConfig) -> int | None:
    """The earliest time a `Tick` would change this state, or None: a driver only needs to tick
    devices whose deadline has come."""
    if config.classes:
        config = config_of(config, state.device_class)
    due, release_due = state.due, state.release_due
    timeout = config.inactivity_timeout_ms
    if timeout is not None and state.observed is _ONLINE:
        inactive = state.last_seen + timeout
        due = inactive if due is None or inactive < due else due
    if release_due is not None and (due is None or release_due < due):
        return release_due
    return due


def last_change(state: DeviceState) -> StatusChange | None:
    """The last change this state emitted, exactly as it was emitted (None before the first).
    A worker re-announces it after recovery: the same version with the same content."""
    if state.status is None or state.reason is None:
        return None
    return StatusChange(
        device=state.device,
        status=state.status,
        flapping=state.flapping,
        version=state.version,
        since=state.since,
        decided_at=state.decided_at,
        reason=state.reason,
        session=state.last_session,
        verified=state.verified,
        suppressed=state.last_suppressed,
        sleeping=state.sleeping,
        cause=state.cause,
    )


def fingerprint(event: ConnectionEvent) -> int:
    """A 64-bit identity of what a message says (receive time left out): two deliveries of one
    message have the same; two messages that differ in anything they carry do not."""
    e = event
    return _xxh64(_pack((e.kind, e.session, e.event_time, e.seq, e.message_id, e.topic, e.reason)))


def _repeat_of(s: DeviceState, fp: int, e: ConnectionEvent) -> str | None:
    """Why `e`, whose fingerprint `fp` is among the recent ones, is a repeat; None if news."""
    if e.dup:
        return "a redelivery (DUP) of a message already seen"
    recent = s.recent
    for i in range(0, len(recent) - 1, 2):
        if recent[i] == fp and recent[i + 1] == e.received_at:
            return "the same record again (processed twice)"
    return None


def _on_open(
    s: DeviceState,
    e: ConnectionEvent,
    now: int,
    config: PresenceConfig,
    changes: list[StatusChange],
    notes: Notes,
) -> None:
    reason = REASON_OF_KIND[e.kind]
    token = e.session
    if token is None:
        if s.session_open and s.session is None and s.observed is Status.ONLINE:
            s.last_seen = now
            s.birth_at = now
            if notes is not None:
                notes.append(f"{e.kind} without a session while online: already known")
            return
        if e.dup and s.observed is not None:
            if notes is not None:
                notes.append(f"redelivered {e.kind} without a session dropped: it may be old")
            return
        _replace_session(s, None, e, config, is_open=True)
        s.last_seen = s.birth_at = now
        _observe(s, Status.ONLINE, now, reason, False, config, changes, notes)
        return
    verdict = _birth_verdict(s, token, e)
    if verdict is _Birth.LIFE:
        s.last_seen = now
        if _later(e.event_time, s.session_time):
            # The same token on a newer connection (a counter restarted at the same value, a
            # boot counter after a quick reconnect): the old connection's will is still to come.
            s.reborn_from, s.session_time = s.session_time, e.event_time
            if notes is not None:
                notes.append(
                    f"{e.kind} of open session {token!r} from a newer connection (device time "
                    f"{e.event_time}): a will of the older one will be stale"
                )
        elif notes is not None:
            notes.append(f"{e.kind} repeats open session {token!r}: evidence of life only")
        return
    if verdict is _Birth.STALE:
        if notes is not None:
            notes.append(
                f"stale {e.kind} dropped: session {token!r} is older than the open "
                f"session {s.session!r}"
            )
        return
    if verdict is _Birth.REDELIVERED:
        if notes is not None:
            notes.append(
                f"redelivered {e.kind} of session {token!r} dropped: nothing proves it newer"
            )
        return
    if verdict is _Birth.LATE:
        _replace_session(s, token, e, config, is_open=False)
        s.session_time = e.event_time
        s.born_dead = tuple(t for t in s.born_dead if t != token)  # its birth has come now
        if notes is not None:
            notes.append(
                f"late {e.kind}: the will of session {token!r} came before it; "
                "that connection is already over"
            )
        _observe(s, Status.OFFLINE, now, Reason.WILL, True, config, changes, notes)
        return
    reopened = token == s.session
    # A token used before (reused, or a counter that restarted): a will of this token from
    # before the connection this birth replaces is an older connection's, not this one's.
    reused = reopened or token in s.known_sessions
    replaced_time = s.session_time
    _replace_session(s, token, e, config, is_open=True)
    s.session_time, s.closed_time = e.event_time, None
    s.reborn_from = replaced_time if reused else None
    s.last_seen = s.birth_at = now
    if notes is not None:
        notes.append(
            f"{e.kind} opens session {token!r} again (a new connection with the same token)"
            if reopened
            else f"{e.kind} opens session {token!r}"
        )
    _observe(s, Status.ONLINE, now, reason, True, config, changes, notes)


class _Birth(Enum):
    NEW = "new"  # opens the current session
    LIFE = "life"  # the open session's own birth again
    STALE = "stale"  # older than the open session
    REDELIVERED = "redelivered"  # a DUP birth nothing proves newer
    LATE = "late"  # its own will came first: the session is born over


def _birth_verdict(s: DeviceState, token: SessionToken, e: ConnectionEvent) -> _Birth:
    if token == s.session and s.session_open:
        return _Birth.LIFE
    if s.session is None and s.observed is None and token not in s.born_dead:
        return _Birth.NEW  # the first we hear of the device
    et, st = e.event_time, s.session_time
    newer_by_time = None if et is None or st is None else et > st  # _later, inlined: hot path
    if e.dup and newer_by_time is not True:
        return _Birth.REDELIVERED
    late = token in s.born_dead and not _later(e.event_time, _dead_time(s, token))
    if not s.session_open:  # after a will, a birth is a device that is back
        return _Birth.LATE if late else _Birth.NEW
    if newer_by_time is not None:
        newer = newer_by_time
    elif e.session_order is SessionOrder.COUNTER and s.session is not None:
        newer = compare(token, s.session, e.session_order) is not Cmp.OLDER
    else:  # bdSeq, timestamps (clocks reset, broker nodes disagree), opaque ids: receive order
        newer = token not in s.known_sessions
    if not newer:
        return _Birth.STALE
    return _Birth.LATE if late else _Birth.NEW


def _will_is_newer(s: DeviceState, token: SessionToken, e: ConnectionEvent) -> bool:
    """Whether a will of another token than the open session's comes from a later connection:
    by device times when both are there, else by counter order (as births are judged); bdSeq,
    timestamps and opaque ids cannot say, and such a will is stale (Sparkplug's rule)."""
    later = _later(e.event_time, s.session_time)
    if later is not None:
        return later
    if e.session_order is SessionOrder.COUNTER and s.session is not None:
        return compare(token, s.session, SessionOrder.COUNTER) is Cmp.NEWER
    return False


def _later(a: int | None, b: int | None) -> bool | None:
    """Whether device time `a` is later than device time `b`; None when either is missing."""
    if a is None or b is None:
        return None
    return a > b


def _dead_time(s: DeviceState, token: SessionToken) -> int | None:
    return s.closed_time if token == s.session else None


def _on_close(
    s: DeviceState,
    e: ConnectionEvent,
    now: int,
    config: PresenceConfig,
    changes: list[StatusChange],
    notes: Notes,
) -> None:
    reason = REASON_OF_KIND[e.kind]
    token = e.session
    asleep = e.sleeping or (config.sleeps and e.kind is EventKind.OFFLINE)

    def offline(verified: bool) -> None:
        _observe(
            s, Status.OFFLINE, now, reason, verified, config, changes, notes, sleeping=asleep,
            cause=e.reason,
        )  # fmt: skip

    if e.kind is EventKind.DISCONNECTED and e.reason in config.superseded_reasons:
        if token is not None and token != s.session and token not in s.known_sessions:
            s.known_sessions = (*s.known_sessions, token)[-config.known_sessions :]
        if notes is not None:
            notes.append(f"disconnect ({e.reason}) dropped: a newer connection replaced it")
        return
    if token is None:
        early = config.tokenless_min_will_delay_ms
        if (
            early
            and e.kind is EventKind.WILL
            and s.session is None
            and s.observed is Status.ONLINE
            and now - s.birth_at < early
        ):
            if notes is not None:
                notes.append(
                    f"will {now - s.birth_at} ms after the latest birth dropped: too "
                    "early to be this connection's (keepalive), so a stale one"
                )
            return
        s.session_open = False
        if notes is not None and s.observed is not Status.OFFLINE:
            notes.append(f"{e.kind} without a session closes the current one (receive order)")
        offline(verified=False)
        return
    if token == s.session:
        if not s.session_open:
            if notes is not None:
                notes.append(f"{e.kind} dropped: session {token!r} is already closed")
            return
        if s.reborn_from is not None and _later(e.event_time, s.reborn_from) is False:
            if notes is not None:
                notes.append(
                    f"stale {e.kind} dropped: device time {e.event_time} is the older "
                    f"connection's of the reused token {token!r}"
                )
            return
        s.session_open = False
        s.closed_time = e.event_time
        if notes is not None:
            notes.append(f"{e.kind} closes session {token!r}")
        offline(verified=True)
        return
    never_born = token not in s.known_sessions
    if s.session is None or (s.session_open and never_born and _will_is_newer(s, token, e)):
        # The first we hear of the device, or a later connection that died before its birth
        # arrived (device times, or else counter order, say so): the device is offline.
        _replace_session(s, token, e, config, is_open=False)
        s.born_dead = (*s.born_dead, token)[-config.known_sessions :]
        s.session_time = s.closed_time = e.event_time
        if notes is not None:
            notes.append(
                f"{e.kind} for session {token!r} came before its birth: "
                "the session is over and its late birth will not revive it"
            )
        offline(verified=True)
        return
    if never_born and token not in s.born_dead:
        s.born_dead = (*s.born_dead, token)[-config.known_sessions :]
    if notes is not None:
        notes.append(
            f"stale {e.kind} dropped: session {token!r} is not the current session {s.session!r}"
        )


def _on_activity(
    s: DeviceState,
    e: ConnectionEvent,
    now: int,
    config: PresenceConfig,
    changes: list[StatusChange],
    notes: Notes,
) -> None:
    if s.observed is Status.ONLINE:
        s.last_seen = max(s.last_seen, now)
        return
    if s.observed is Status.OFFLINE and _later(e.event_time, s.closed_time) is False:
        if notes is not None:
            notes.append("activity dropped: the device sent it before it went offline")
        return
    if e.dup:
        if notes is not None:
            notes.append("redelivered activity dropped: it may be from before the offline")
        return
    s.last_seen = now
    if notes is not None:
        notes.append("activity while offline: the device is alive (no session says which)")
    _observe(s, Status.ONLINE, now, Reason.ACTIVITY, False, config, changes, notes)


def _replace_session(
    s: DeviceState,
    token: SessionToken | None,
    e: ConnectionEvent,
    config: PresenceConfig,
    *,
    is_open: bool,
) -> None:
    if s.session is not None and s.session != token:
        s.known_sessions = (*s.known_sessions, s.session)[-config.known_sessions :]
    s.session = token
    s.session_order = e.session_order
    s.session_open = is_open


def _observe(
    s: DeviceState,
    status: Status,
    at: int,
    reason: Reason,
    verified: bool,
    config: PresenceConfig,
    changes: list[StatusChange],
    notes: Notes,
    delay: int | None = None,
    sleeping: bool = False,
    cause: str | None = None,
) -> None:
    """The raw events say the device is now `status` (asleep, when `sleeping`): damp, debounce
    or emit. A sleep is not a flap: it adds no damping penalty."""
    previous = s.observed
    label = "sleeping" if sleeping else status
    if previous is status and s.observed_sleeping == sleeping:
        if notes is not None:
            notes.append(f"already {label}: nothing changes")
        return
    s.observed, s.observed_since = status, at
    s.observed_reason, s.observed_verified = reason, verified
    s.observed_sleeping = sleeping
    s.observed_cause = cause
    damping = config.damping
    if status is Status.OFFLINE and previous is Status.ONLINE and damping.enabled and not sleeping:
        penalty = damping.decay(s.penalty, at - s.penalty_at) + damping.penalty
        s.penalty, s.penalty_at = min(penalty, damping.ceiling), at
        if s.flapping or s.penalty >= damping.suppress:
            s.release_due = at + damping.release_after_ms(s.penalty)
            s.due = None
            if not s.flapping:
                _emit(s, status, True, at, at, Reason.DAMPED, verified, changes, False)
                if notes is not None:
                    notes.append(
                        f"flapping: penalty {s.penalty:.0f} >= {damping.suppress:.0f}, "
                        f"damped until {s.release_due}"
                    )
            elif notes is not None:
                notes.append(f"damped: penalty now {s.penalty:.0f}, release at {s.release_due}")
            return
    if s.flapping:
        if status is Status.ONLINE and damping.enabled:
            stable = at + damping.release_when_up_ms
            if s.release_due is None or stable < s.release_due:
                s.release_due = stable  # released once it has stayed up this long
        if notes is not None:
            notes.append(f"damped: {label} not emitted until release at {s.release_due}")
        return
    if status is s.status and sleeping == s.sleeping:
        s.due = None
        if notes is not None:
            notes.append(f"back to {label} within the debounce delay: nothing emitted")
        return
    if delay is None:
        delay = config.offline_grace_ms if status is Status.OFFLINE else config.online_delay_ms
    if delay == 0:
        s.due = None
        _emit(s, status, False, at, at, reason, verified, changes, sleeping)
        if notes is not None:
            notes.append(f"emitted {label} (version {s.version})")
    else:
        s.due = at + delay
        if notes is not None:
            notes.append(f"{label} pending: emitted at {s.due} unless the device comes back")


def _fire_deadlines(
    s: DeviceState, config: PresenceConfig, changes: list[StatusChange], notes: Notes
) -> None:
    """Fire every deadline at or before the state's clock, earliest first, each at its own time."""
    timeout = config.inactivity_timeout_ms
    while True:
        due = next_deadline(s, config)
        if due is None or due > s.clock:
            return
        if due == s.due:
            s.due = None
            if (
                not s.flapping
                and s.observed is not None
                and (s.observed is not s.status or s.observed_sleeping != s.sleeping)
            ):
                _emit(
                    s,
                    s.observed,
                    False,
                    s.observed_since,
                    due,
                    s.observed_reason,
                    s.observed_verified,
                    changes,
                    s.observed_sleeping,
                )
                if notes is not None:
                    label = "sleeping" if s.observed_sleeping else s.observed
                    notes.append(
                        f"debounce delay over at {due}: emitted {label} (version {s.version})"
                    )
        elif due == s.release_due:
            s.release_due = None
            if s.flapping and s.observed is not None:
                _emit(
                    s,
                    s.observed,
                    False,
                    s.observed_since,  # its last real transition, not when damping began
                    due,
                    Reason.RELEASED,
                    s.observed_verified,
                    changes,
                    s.observed_sleeping,
                )
                if notes is not None:
                    notes.append(
                        f"damping released at {due}: emitted {s.observed} (version {s.version})"
                    )
        else:
            if notes is not None:
                notes.append(f"no message for {timeout} ms: inactivity timeout at {due}")
            _observe(
                s,
                Status.OFFLINE,
                due,
                Reason.INACTIVITY_TIMEOUT,
                False,
                config,
                changes,
                notes,
                delay=0,
                sleeping=config.sleeps,
            )


def _emit(
    s: DeviceState,
    status: Status,
    flapping: bool,
    since: int,
    decided_at: int,
    reason: Reason,
    verified: bool,
    changes: list[StatusChange],
    sleeping: bool,
) -> None:
    s.version += 1
    s.status, s.flapping, s.since, s.sleeping = status, flapping, since, sleeping
    s.reason, s.verified, s.cause = reason, verified, s.observed_cause  # emitted = observed
    s.decided_at, s.last_session, s.last_suppressed = decided_at, s.session, s.suppressed
    changes.append(
        StatusChange(
            device=s.device,
            status=status,
            flapping=flapping,
            version=s.version,
            since=since,
            decided_at=decided_at,
            reason=reason,
            session=s.session,
            verified=verified,
            suppressed=s.suppressed,
            sleeping=sleeping,
            cause=s.cause,
        )
    )
    s.suppressed = 0
