"""Domain types of the presence core: what goes in (events, ticks) and what comes out.

These are also the wire records: msgspec structs, frozen and typed, encoded to and decoded from the
JSON that travels over Kafka, each with a schema version field. msgspec validates on decode (a bad
record is a clear `msgspec.ValidationError`), and can emit the JSON Schema of each record.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec

RAW_SCHEMA_VERSION = 1
STATUS_SCHEMA_VERSION = 1

SessionToken = int | str

# What every consumer of the records can represent: a signed 64-bit integer (Java's long, a
# PostgreSQL bigint, the JSON numbers most parsers read exactly are narrower still, but Kafka's own
# consumers are Java), and text without control characters. A record outside these is refused
# where it is read (msgspec checks the bounds on decode), so the bridge, the worker and replay
# apply one rule: the bridge checks what it writes by decoding it with the same type.
INT64_MAX = 2**63 - 1
MAX_ID_LENGTH = 256
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # no control characters (NUL, newline, DEL, ...)

DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]  # ms since the epoch
Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
WireToken = Count | DeviceId  # a session token as the records may carry it


class EventKind(StrEnum):
    """What a raw lifecycle message says happened."""

    BIRTH = "birth"  # the device announced itself after connecting
    WILL = "will"  # the broker published the device's Last Will: its connection died
    OFFLINE = "offline"  # the device said goodbye itself before disconnecting
    CONNECTED = "connected"  # a broker client event: a connection was accepted
    DISCONNECTED = "disconnected"  # a broker client event: a connection ended
    ACTIVITY = "activity"  # any other message from the device: evidence of life

    @property
    def opens(self) -> bool:
        return self in (EventKind.BIRTH, EventKind.CONNECTED)


class SessionOrder(StrEnum):
    """How two session tokens of one device compare (README, *Sessions*)."""

    COUNTER = "counter"  # integers that only go up (connection or boot counter)
    SERIAL8 = "serial8"  # 8-bit counter that wraps at 255 (Sparkplug bdSeq): RFC 1982
    TIMESTAMP = "timestamp"  # connect time in ms (device or broker clock)
    OPAQUE = "opaque"  # an id with no order: equality only, newer = later received


class Status(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Reason(StrEnum):
    """Why a status change was emitted."""

    BIRTH = "birth"
    WILL = "will"
    GRACEFUL_OFFLINE = "graceful_offline"
    BROKER_CONNECTED = "broker_connected"
    BROKER_DISCONNECTED = "broker_disconnected"
    ACTIVITY = "activity"
    INACTIVITY_TIMEOUT = "inactivity_timeout"
    DAMPED = "damped"  # flapping: suppressed until the penalty decays
    RELEASED = "released"  # damping released: the true status again


REASON_OF_KIND = {
    EventKind.BIRTH: Reason.BIRTH,
    EventKind.WILL: Reason.WILL,
    EventKind.OFFLINE: Reason.GRACEFUL_OFFLINE,
    EventKind.CONNECTED: Reason.BROKER_CONNECTED,
    EventKind.DISCONNECTED: Reason.BROKER_DISCONNECTED,
    EventKind.ACTIVITY: Reason.ACTIVITY,
}


# The bridge profiles an event can come from (`ConnectionEvent.source`); classes match on them.
PROFILE_KINDS = frozenset(
    {
        "json",
        "plain",
        "zigbee2mqtt",
        "tasmota",
        "esphome",
        "shelly",
        "homie",
        "emqx",
        "sparkplug",
        "activity",
    }
)


class ConnectionEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One raw lifecycle message, normalised by a bridge profile. Record on `presence.raw`."""

    device: DeviceId
    kind: EventKind
    received_at: Millis  # when the bridge received it (the pipeline's clock)
    session: WireToken | None = None  # token of the connection this event belongs to
    session_order: SessionOrder = SessionOrder.OPAQUE
    event_time: Millis | None = None  # the device's or broker's own time, if it sent one
    seq: Count | None = None  # a per-device message sequence number, if it sent one
    message_id: str | None = None  # an identity the source gives the message, if any
    reason: str | None = None  # the broker's reason for a disconnect (e.g. "takenover")
    retain: bool = False
    dup: bool = False
    topic: str | None = None
    source: str = "json"  # the bridge profile that produced it (one of PROFILE_KINDS)
    properties: dict[str, str] = {}  # MQTT 5 user properties
    sleeping: bool = False  # an offline the device announced as sleep (Homie `sleeping`)
    schema_version: int = RAW_SCHEMA_VERSION


class Tick(msgspec.Struct, frozen=True):
    """Time passes: fire every deadline at or before `now` (ms)."""

    now: int


Input = ConnectionEvent | Tick


class StatusChange(msgspec.Struct, frozen=True, kw_only=True):
    """One clean status change of one device. Record on `presence.status` (key = device id)."""

    device: str
    status: Status
    flapping: bool
    version: int  # per device, starts at 1, +1 per change: upsert where version is greater
    since: int  # ms: when the device entered this status
    decided_at: int  # ms: the event or deadline time that decided it
    reason: Reason
    session: SessionToken | None
    verified: bool  # True when a session token backs the decision
    suppressed: int  # raw events since the previous change that changed nothing downstream
    sleeping: bool = False  # an offline that is a sleep (the device said so, or its class)
    # The broker's or host's own word for an offline, when the event gave one: a Sparkplug host's
    # `node_death` / `node_rebirth`, EMQX's `keepalive_timeout`, `kicked`, ...
    cause: str | None = None
    schema_version: int = STATUS_SCHEMA_VERSION
