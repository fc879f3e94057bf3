"""Per-device state of the presence core: small, bounded, and complete.

Everything the machine needs to continue after a restart is here, pending deadlines included, so a
worker that restores this record from its table's changelog carries on exactly. msgspec encodes it
as a compact JSON array (`array_like`), and `gc=False` keeps a million of them cheap to hold.
"""

from __future__ import annotations

import msgspec

from mqtt_presence.core.events import Reason, SessionOrder, SessionToken, Status

STATE_SCHEMA_VERSION = 1


class DeviceState(msgspec.Struct, kw_only=True, array_like=True, gc=False):
    """One device. Treated as immutable: the machine copies it before it changes anything."""

    device: str
    # What downstream was told last.
    status: Status | None = None
    flapping: bool = False
    version: int = 0
    since: int = 0
    reason: Reason | None = None
    verified: bool = False
    decided_at: int = 0
    last_session: SessionToken | None = None
    last_suppressed: int = 0
    # What the raw events say right now (before debounce and damping).
    observed: Status | None = None
    observed_since: int = 0
    observed_reason: Reason = Reason.BIRTH
    observed_verified: bool = False
    last_seen: int = 0
    # The device's current session and the few it had before (for opaque ids).
    session: SessionToken | None = None
    session_order: SessionOrder = SessionOrder.OPAQUE
    session_open: bool = False
    known_sessions: tuple[SessionToken, ...] = ()
    # Pending deadlines (ms): emit `observed` (debounce), release damping.
    due: int | None = None
    release_due: int | None = None
    # Flap damping: the penalty as of `penalty_at`.
    penalty: float = 0.0
    penalty_at: int = 0
    # Raw events absorbed since the last change; the recent messages, as (fingerprint, receive
    # time) pairs laid flat; the clock.
    suppressed: int = 0
    recent: tuple[int, ...] = ()
    clock: int = 0
    schema_version: int = STATE_SCHEMA_VERSION
    # Added later (array_like: new fields go last, so older encodings still decode).
    session_time: int | None = None  # device time of the current session's birth, if it sent one
    closed_time: int | None = None  # device time of the event that closed it, if it sent one
    born_dead: tuple[SessionToken, ...] = ()  # tokens whose will came before any birth of theirs
    birth_at: int = 0  # receive time of the latest birth
    reborn_from: int | None = None  # a reused token: device time of the birth it replaced
    sleeping: bool = False  # the emitted offline is a sleep
    observed_sleeping: bool = False  # the observed offline is a sleep
    device_class: str | None = None  # the [[presence.classes]] entry it belongs to
    cause: str | None = None  # the emitted change's cause (a broker's or host's word)
    observed_cause: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeviceState)


def encode_state(state: DeviceState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes) -> DeviceState:
    return _decoder.decode(data)
