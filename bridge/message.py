"""What the bridge moves: an MQTT message in, a raw record or a dead letter out. Pure types."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import msgspec

from streams.presence import ConnectionEvent

DLQ_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """One MQTT PUBLISH as received, before any interpretation."""

    topic: str
    payload: bytes
    received_at: int  # ms since the epoch, the bridge's clock
    qos: int = 1
    retain: bool = False
    dup: bool = False
    user_properties: dict[str, str] = field(default_factory=dict)


class DeadLetterRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A message the bridge could not turn into a raw event. Record on `presence.dlq`."""

    reason: str  # machine-readable: bad_payload, unknown_topic, oversize, device_mismatch, ...
    detail: str  # for a person: what exactly was wrong
    topic: str
    payload_base64: str  # the original bytes, untouched
    received_at: int
    retain: bool = False
    dup: bool = False
    user_properties: dict[str, str] = {}
    source: str = "bridge"
    schema_version: int = DLQ_SCHEMA_VERSION

    @staticmethod
    def of(msg: MqttMessage, reason: str, detail: str, source: str = "bridge") -> DeadLetterRecord:
        return DeadLetterRecord(
            reason=reason,
            detail=detail,
            topic=msg.topic,
            payload_base64=base64.b64encode(msg.payload).decode("ascii"),
            received_at=msg.received_at,
            retain=msg.retain,
            dup=msg.dup,
            user_properties=msg.user_properties,
            source=source,
        )


class Invalid(Exception):
    """Raised by a profile: this message is not a valid lifecycle message (reason, detail)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


Translated = ConnectionEvent | DeadLetterRecord
