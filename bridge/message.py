"""What the bridge moves: an MQTT message in, a raw record or a dead letter out. Pure types."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from mqtt_presence.core import ConnectionEvent
from mqtt_presence.core.records import DeadLetterRecord


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
    defect: str | None = None  # what is wrong with the packet itself (e.g. a topic not UTF-8)


def dead_letter(
    msg: MqttMessage, reason: str, detail: str, source: str = "bridge"
) -> DeadLetterRecord:
    """The dead-letter record of a message: the reason, and the original bytes untouched."""
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
