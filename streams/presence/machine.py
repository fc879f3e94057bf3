"""The presence state machine: `transition(state, input, config) -> (state, [changes])`.

Pure and deterministic: no I/O, no clock of its own, no randomness. An input is a raw
`ConnectionEvent` or a `Tick`; both carry the time. The machine works in two layers:

1. Observation. Each event is checked against the device's sessions (PRODUCT.md section 3): a
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
"""

from __future__ import annotations

import zlib

from streams.presence.config import PresenceConfig
from streams.presence.events import (
    REASON_OF_KIND,
    ConnectionEvent,
    EventKind,
    Input,
    Reason,
    SessionToken,
    Status,
    StatusChange,
    Tick,
)
from streams.presence.sessions import Cmp, compare
from streams.presence.state import DeviceState

Notes = list[str] | None


def _copy(state: DeviceState) -> DeviceState:
    """A shallow copy (msgspec's C `__copy__`; the machine mutates only the copy)."""
    return state.__copy__()  # type: ignore[attr-defined, no-any-return]


# Module constants: in the hot path, enum members and sets are cheaper looked up here.
_ACTIVITY = EventKind.ACTIVITY
_OPENING = frozenset({EventKind.BIRTH, EventKind.CONNECTED})
_ONLINE, _OFFLINE = Status.ONLINE, Status.OFFLINE


def transition(
    state: DeviceState | None, event: Input, config: PresenceConfig
) -> tuple[DeviceState | None, list[StatusChange]]:
    """Apply one event or tick to one device's state; returns the new state and its changes."""
    new_state, changes, _ = step(state, event, config, None)
    return new_state, changes


def step(
    state: DeviceState | None, event: Input, config: PresenceConfig, notes: Notes
) -> tuple[DeviceState | None, list[StatusChange], Notes]:
    """`transition`, appending a sentence per decision to `notes` when it is a list."""
    changes: list[StatusChange] = []
    if isinstance(event, Tick):
        if state is None:
            return None, changes, notes
        s = _copy(state)
        s.clock = max(s.clock, event.now)
        _fire_deadlines(s, config, changes, notes)
        return s, changes, notes

    s = _copy(state) if state is not None else DeviceState(device=event.device)
    now = event.received_at
    now = max(now, s.clock)
    s.clock = now
    _fire_deadlines(s, config, changes, notes)
    emitted_before = len(changes)

    fp = fingerprint(event)
    if fp in s.recent:
        if notes is not None:
            notes.append(f"{event.kind} dropped: a repeat of a message already seen")
    else:
        if config.dedup_memory:
            s.recent = (*s.recent, fp)[-config.dedup_memory :]
        kind = event.kind
        if kind is _ACTIVITY:
            _on_activity(s, event, now, config, changes, notes)
        elif event.retain and event.session is None and s.observed is not None:
            if notes is not None:
                notes.append(f"retained {kind} ignored: a replay of an old state, not news")
        elif kind in _OPENING:
            _on_open(s, event, now, config, changes, notes)
        else:
            _on_close(s, event, now, config, changes, notes)
    if len(changes) == emitted_before:
        s.suppressed += 1
    return s, changes, notes


def next_deadline(state: DeviceState, config: PresenceConfig) -> int | None:
    """The earliest time a `Tick` would change this state, or None: a driver only needs to tick
    devices whose deadline has come."""
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
    )


def fingerprint(event: ConnectionEvent) -> int:
    """A stable identity of the message behind an event, for dropping repeats.

    What the source says about the message (kind, session, its own time, sequence, id) names it
    across redeliveries. When it says nothing, only the bridge's receive time does, which catches
    a record processed twice (a worker restart) but not a broker's redelivery: those are made
    harmless by the session rules and by idempotent status instead.
    """
    e = event
    if e.session is None and e.event_time is None and e.seq is None and e.message_id is None:
        key = f"{e.kind}|@{e.received_at}|{e.topic}"
    else:
        key = f"{e.kind}|{e.session!r}|{e.event_time}|{e.seq}|{e.message_id}"
    return zlib.crc32(key.encode())


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
            if notes is not None:
                notes.append(f"{e.kind} without a session while online: already known")
            return
        _replace_session(s, None, e, config, is_open=True)
        s.last_seen = now
        _observe(s, Status.ONLINE, now, reason, False, config, changes, notes)
        return
    rel = _relation(s, token, e, config)
    if rel is Cmp.NEWER:
        _replace_session(s, token, e, config, is_open=True)
        s.last_seen = now
        if notes is not None:
            notes.append(f"{e.kind} opens session {token!r}")
        _observe(s, Status.ONLINE, now, reason, True, config, changes, notes)
    elif rel is Cmp.SAME and s.session_open:
        s.last_seen = now
        if s.observed is not Status.ONLINE:
            _observe(s, Status.ONLINE, now, reason, True, config, changes, notes)
        elif notes is not None:
            notes.append(f"{e.kind} repeats open session {token!r}: evidence of life only")
    elif notes is not None:
        why = "is already closed" if rel is Cmp.SAME else f"is older than {s.session!r}"
        notes.append(f"stale {e.kind} dropped: session {token!r} {why}")


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
            and now - s.observed_since < early
        ):
            if notes is not None:
                notes.append(
                    f"will {now - s.observed_since} ms after the birth dropped: too "
                    "early to be this connection's (keepalive), so a stale one"
                )
            return
        s.session_open = False
        if notes is not None and s.observed is not Status.OFFLINE:
            notes.append(f"{e.kind} without a session closes the current one (receive order)")
        _observe(s, Status.OFFLINE, now, reason, False, config, changes, notes)
        return
    rel = _relation(s, token, e, config)
    if rel is Cmp.UNORDERED and s.session_open:
        s.known_sessions = (*s.known_sessions, token)[-config.known_sessions :]
        if notes is not None:
            notes.append(
                f"{e.kind} for unknown session {token!r} dropped: "
                f"session {s.session!r} is open and the two have no order"
            )
        return
    if rel is Cmp.SAME:
        if not s.session_open:
            if notes is not None:
                notes.append(f"{e.kind} dropped: session {token!r} is already closed")
            return
        s.session_open = False
        if notes is not None:
            notes.append(f"{e.kind} closes session {token!r}")
        _observe(s, Status.OFFLINE, now, reason, True, config, changes, notes)
    elif rel in (Cmp.NEWER, Cmp.UNORDERED):
        _replace_session(s, token, e, config, is_open=False)
        if notes is not None:
            notes.append(
                f"{e.kind} for session {token!r} came before its birth: "
                "the session is closed and its late birth will not revive it"
            )
        _observe(s, Status.OFFLINE, now, reason, True, config, changes, notes)
    elif notes is not None:
        notes.append(f"stale {e.kind} dropped: session {token!r} is older than {s.session!r}")


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
    if (
        s.observed is Status.OFFLINE
        and e.event_time is not None
        and (e.event_time <= s.observed_since)
    ):
        if notes is not None:
            notes.append("activity dropped: sent before the device went offline")
        return
    s.last_seen = now
    if notes is not None:
        notes.append("activity while offline: the device is alive (no session says which)")
    _observe(s, Status.ONLINE, now, Reason.ACTIVITY, False, config, changes, notes)


def _relation(
    s: DeviceState, token: SessionToken, e: ConnectionEvent, config: PresenceConfig
) -> Cmp:
    """How an event's session relates to the device's current one; unordered ids seen before
    count as older, new ones as newer (receive order)."""
    if s.session is None:
        return Cmp.OLDER if token in s.known_sessions else Cmp.NEWER
    rel = compare(token, s.session, e.session_order)
    if rel is Cmp.UNORDERED:
        if token in s.known_sessions:
            return Cmp.OLDER
        if e.kind.opens:
            return Cmp.NEWER
    return rel


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
) -> None:
    """The raw events say the device is now `status`: damp, debounce or emit."""
    previous = s.observed
    if previous is status:
        if notes is not None:
            notes.append(f"already {status}: nothing changes")
        return
    s.observed, s.observed_since = status, at
    s.observed_reason, s.observed_verified = reason, verified
    damping = config.damping
    if status is Status.OFFLINE and previous is Status.ONLINE and damping.enabled:
        penalty = damping.decay(s.penalty, at - s.penalty_at) + damping.penalty
        s.penalty, s.penalty_at = min(penalty, damping.ceiling), at
        if s.flapping or s.penalty >= damping.suppress:
            s.release_due = at + damping.release_after_ms(s.penalty)
            s.due = None
            if not s.flapping:
                _emit(s, status, True, at, at, Reason.DAMPED, verified, changes)
                if notes is not None:
                    notes.append(
                        f"flapping: penalty {s.penalty:.0f} >= {damping.suppress:.0f}, "
                        f"damped until {s.release_due}"
                    )
            elif notes is not None:
                notes.append(f"damped: penalty now {s.penalty:.0f}, release at {s.release_due}")
            return
    if s.flapping:
        if notes is not None:
            notes.append(f"damped: {status} not emitted until release at {s.release_due}")
        return
    if status is s.status:
        s.due = None
        if notes is not None:
            notes.append(f"back to {status} within the debounce delay: nothing emitted")
        return
    if delay is None:
        delay = config.offline_grace_ms if status is Status.OFFLINE else config.online_delay_ms
    if delay == 0:
        s.due = None
        _emit(s, status, False, at, at, reason, verified, changes)
        if notes is not None:
            notes.append(f"emitted {status} (version {s.version})")
    else:
        s.due = at + delay
        if notes is not None:
            notes.append(f"{status} pending: emitted at {s.due} unless the device comes back")


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
            if not s.flapping and s.observed is not None and s.observed is not s.status:
                _emit(
                    s,
                    s.observed,
                    False,
                    s.observed_since,
                    due,
                    s.observed_reason,
                    s.observed_verified,
                    changes,
                )
                if notes is not None:
                    notes.append(
                        f"debounce delay over at {due}: emitted {s.observed} (version {s.version})"
                    )
        elif due == s.release_due:
            s.release_due = None
            if s.flapping and s.observed is not None:
                since = s.observed_since if s.observed is not s.status else s.since
                _emit(
                    s, s.observed, False, since, due, Reason.RELEASED, s.observed_verified, changes
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
) -> None:
    s.version += 1
    s.status, s.flapping, s.since = status, flapping, since
    s.reason, s.verified = reason, verified
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
        )
    )
    s.suppressed = 0
