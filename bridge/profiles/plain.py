"""Availability messages: one topic per device that says `online` or `offline` (as text, or as one
field of a JSON object). The device publishes the online message when it connects and registers
the offline one as its MQTT Last Will, so they are read as birth and will.

One profile, and presets for the conventions fleets run (each kind's defaults say what its
documentation says; see the README's profile table):

- `plain`: `{device}/availability`, `online` / `offline` (Home Assistant's convention);
- `zigbee2mqtt`: `zigbee2mqtt/{device+}/availability` (friendly names may contain `/`), text
  `online` / `offline` in 1.x and JSON `{"state": "online"}` in 2.x, both read;
- `tasmota`: `tele/{device}/LWT`, `Online` / `Offline`;
- `esphome`: `{device}/status`, `online` / `offline`;
- `shelly`: Shelly Gen2 `{device}/online`, `true` / `false`.

Values compare without case. None of them carries a session token: the core falls back to
receive order, the grace period and signs of life, and marks its decisions unverified.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from mqtt_presence.bridge.message import Invalid, MqttMessage
from mqtt_presence.bridge.profiles.base import ProfileSettingsBase, check_device, event_of
from mqtt_presence.bridge.topics import TopicPattern
from mqtt_presence.core import ConnectionEvent, EventKind


class AvailabilitySettings(ProfileSettingsBase):
    online_values: tuple[str, ...] = ("online",)
    offline_values: tuple[str, ...] = ("offline",)
    json_field: str | None = None  # read this field when the payload is a JSON object


class PlainProfileSettings(AvailabilitySettings):
    kind: Literal["plain"] = "plain"
    topic: str = "{device}/availability"


class Zigbee2MqttProfileSettings(AvailabilitySettings):
    kind: Literal["zigbee2mqtt"] = "zigbee2mqtt"
    topic: str = "zigbee2mqtt/{device+}/availability"
    json_field: str | None = "state"


class TasmotaProfileSettings(AvailabilitySettings):
    kind: Literal["tasmota"] = "tasmota"
    topic: str = "tele/{device}/LWT"


class EsphomeProfileSettings(AvailabilitySettings):
    kind: Literal["esphome"] = "esphome"
    topic: str = "{device}/status"


class ShellyProfileSettings(AvailabilitySettings):
    kind: Literal["shelly"] = "shelly"
    topic: str = "{device}/online"
    online_values: tuple[str, ...] = ("true",)
    offline_values: tuple[str, ...] = ("false",)


AvailabilityKinds = (
    PlainProfileSettings
    | Zigbee2MqttProfileSettings
    | TasmotaProfileSettings
    | EsphomeProfileSettings
    | ShellyProfileSettings
)

_decode_object = msgspec.json.Decoder(dict[str, object]).decode


class AvailabilityProfile:
    def __init__(self, settings: AvailabilityKinds) -> None:
        self.settings = settings
        self.name: str = settings.kind
        self.pattern = TopicPattern(settings.topic)
        self._online = {v.lower() for v in settings.online_values}
        self._offline = {v.lower() for v in settings.offline_values}

    def translate(self, msg: MqttMessage, captures: dict[str, str]) -> ConnectionEvent:
        device = check_device(captures["device"])
        try:
            text = msg.payload.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise Invalid("bad_payload", f"not UTF-8 text: {exc}") from exc
        field = self.settings.json_field
        if field is not None and text.startswith("{"):
            text = self._field(text, field)
        value = text.lower()
        if value in self._online:
            kind = EventKind.BIRTH
        elif value in self._offline:
            kind = EventKind.WILL
        else:
            raise Invalid(
                "bad_payload",
                f"payload {text[:40]!r} is neither of {sorted(self._online | self._offline)}",
            )
        return event_of(msg, self.name, device, kind)

    @staticmethod
    def _field(text: str, field: str) -> str:
        try:
            value = _decode_object(text).get(field)
        except msgspec.DecodeError as exc:
            raise Invalid("bad_payload", f"not a JSON object: {exc}") from exc
        if isinstance(value, bool):
            return "true" if value else "false"
        if not isinstance(value, str):
            raise Invalid("bad_payload", f"JSON without a text field {field!r}")
        return value
