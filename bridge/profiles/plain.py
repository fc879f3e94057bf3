"""Plain-text availability payloads: `online` / `offline` (Home Assistant, Zigbee2MQTT style).

No session token: the core falls back to receive order, the grace period and signs of life, and
marks its decisions unverified.
"""

from __future__ import annotations

from typing import Literal

from mqtt_presence.bridge.message import Invalid, MqttMessage
from mqtt_presence.bridge.profiles.base import ProfileSettingsBase, check_device, event_of
from mqtt_presence.bridge.topics import TopicPattern
from mqtt_presence.core import ConnectionEvent, EventKind


class PlainProfileSettings(ProfileSettingsBase):
    kind: Literal["plain"] = "plain"
    topic: str = "{device}/availability"
    online_values: tuple[str, ...] = ("online",)
    offline_values: tuple[str, ...] = ("offline",)


class PlainProfile:
    def __init__(self, settings: PlainProfileSettings) -> None:
        self.settings = settings
        self.name = "plain"
        self.pattern = TopicPattern(settings.topic)
        self._online = {v.lower() for v in settings.online_values}
        self._offline = {v.lower() for v in settings.offline_values}

    def translate(self, msg: MqttMessage, captures: dict[str, str]) -> ConnectionEvent:
        device = check_device(captures["device"])
        try:
            text = msg.payload.decode("utf-8").strip().lower()
        except UnicodeDecodeError as exc:
            raise Invalid("bad_payload", f"not UTF-8 text: {exc}") from exc
        if text in self._online:
            kind = EventKind.BIRTH
        elif text in self._offline:
            kind = EventKind.WILL
        else:
            raise Invalid(
                "bad_payload",
                f"payload {text[:40]!r} is neither of {sorted(self._online | self._offline)}",
            )
        return event_of(msg, self.name, device, kind)
