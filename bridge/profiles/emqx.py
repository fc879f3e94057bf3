"""EMQX broker client events: `$SYS/brokers/{node}/clients/{device}/connected|disconnected`.

The broker itself says when a client connected and disconnected, with its `connected_at` time (the
session token, compared as a timestamp) and a reason for the disconnect. `takenover` (EMQX 4.4
spells it `takeovered`) and `discarded` mean a newer connection replaced this one; `normal` is the
client's own DISCONNECT.

EMQX up to 4.2 gives `connected_at` in seconds, 4.3 and later in milliseconds (`ts` is always
milliseconds): a time below 10^11 is read as seconds (10^11 ms is March 1973; 10^11 s the year
5138), so sessions compare across a fleet of mixed brokers.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from mqtt_presence.bridge.message import Invalid, MqttMessage
from mqtt_presence.bridge.profiles.base import ProfileSettingsBase, check_device, event_of, time_of
from mqtt_presence.bridge.topics import TopicPattern
from mqtt_presence.core import ConnectionEvent, EventKind, SessionOrder

_decode = msgspec.json.Decoder().decode


SECONDS_BELOW = 100_000_000_000


def ms(value: int | None) -> int | None:
    """Milliseconds since the epoch, from EMQX's seconds (up to 4.2) or milliseconds."""
    if value is None or value >= SECONDS_BELOW or value <= 0:
        return value
    return value * 1000


class EmqxProfileSettings(ProfileSettingsBase):
    kind: Literal["emqx"] = "emqx"
    topic: str = "$SYS/brokers/{node}/clients/{device}/{event}"


class EmqxProfile:
    def __init__(self, settings: EmqxProfileSettings) -> None:
        self.settings = settings
        self.name = "emqx"
        self.pattern = TopicPattern(settings.topic)

    def translate(self, msg: MqttMessage, captures: dict[str, str]) -> ConnectionEvent:
        device = check_device(captures["device"])
        event = captures.get("event")
        if event not in ("connected", "disconnected"):
            raise Invalid(
                "unknown_topic", f"EMQX client event {event!r} is not connected or disconnected"
            )
        try:
            body = _decode(msg.payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # bad bytes inside a string
            raise Invalid("bad_payload", f"not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise Invalid("bad_payload", "expected a JSON object")
        clientid = body.get("clientid")
        if clientid is not None and clientid != device:
            raise Invalid("device_mismatch", f"payload clientid {clientid!r}, topic {device!r}")
        connected_at = ms(time_of(body.get("connected_at"), "connected_at"))
        event_time = ms(time_of(body.get("ts") or body.get("disconnected_at"), "ts"))
        reason = body.get("reason")
        kind = EventKind.CONNECTED if event == "connected" else EventKind.DISCONNECTED
        return event_of(
            msg,
            self.name,
            device,
            kind,
            session=connected_at,
            session_order=SessionOrder.TIMESTAMP,
            event_time=event_time,
            reason=str(reason) if reason is not None else None,
        )
