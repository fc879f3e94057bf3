"""The default convention (README, *The device convention*): JSON status payloads on
`devices/{device}/status`.

`{"status": "online"|"offline", "session": <token>, "ts": <ms>}` for birth, will and graceful
offline; `"graceful": true` marks an offline the device sent itself. Field names, values and the
topic pattern are configurable, so a fleet like field report B's cameras (`aTopic/{device}`) needs
only a config file. The session token may also come from an MQTT 5 user property.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from mqtt_presence.bridge.message import Invalid, MqttMessage
from mqtt_presence.bridge.profiles.base import (
    ProfileSettingsBase,
    check_device,
    event_of,
    order_of,
    time_of,
    token_of,
)
from mqtt_presence.bridge.topics import TopicPattern
from mqtt_presence.core import ConnectionEvent, EventKind

_decode = msgspec.json.Decoder().decode


class JsonProfileSettings(ProfileSettingsBase):
    kind: Literal["json"] = "json"
    topic: str = "devices/{device}/status"
    status_field: str = "status"
    session_field: str = "session"
    time_field: str = "ts"
    device_field: str = "device"  # if present in the payload, must equal the topic's device
    graceful_field: str = "graceful"
    session_property: str | None = "session"  # MQTT 5 user property, when the payload has none
    online_values: tuple[str, ...] = ("online",)
    offline_values: tuple[str, ...] = ("offline",)
    session_order: Literal["auto", "counter", "serial8", "timestamp", "opaque"] = "auto"


class JsonProfile:
    def __init__(self, settings: JsonProfileSettings) -> None:
        self.settings = settings
        self.name = "json"
        self.pattern = TopicPattern(settings.topic)

    def translate(self, msg: MqttMessage, captures: dict[str, str]) -> ConnectionEvent:
        s = self.settings
        device = check_device(captures["device"])
        try:
            body = _decode(msg.payload)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # bad bytes inside a string
            raise Invalid("bad_payload", f"not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise Invalid("bad_payload", f"expected a JSON object, got {type(body).__name__}")
        status = body.get(s.status_field)
        if status in s.online_values:
            kind = EventKind.BIRTH
        elif status in s.offline_values:
            kind = EventKind.OFFLINE if body.get(s.graceful_field) is True else EventKind.WILL
        else:
            raise Invalid(
                "bad_payload",
                f"field {s.status_field!r} is {status!r}; expected one "
                f"of {[*s.online_values, *s.offline_values]}",
            )
        claimed = body.get(s.device_field)
        if claimed is not None and claimed != device:
            raise Invalid(
                "device_mismatch", f"payload says device {claimed!r}, topic says {device!r}"
            )
        raw_token = body.get(s.session_field)
        if raw_token is None and s.session_property:
            raw_token = msg.user_properties.get(s.session_property)
        token = token_of(raw_token, f"field {s.session_field!r}")
        return event_of(
            msg,
            self.name,
            device,
            kind,
            session=token,
            session_order=order_of(token, s.session_order),
            event_time=time_of(body.get(s.time_field), f"field {s.time_field!r}"),
        )
