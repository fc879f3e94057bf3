"""Homie 3/4 device state: `homie/{device}/$state`.

`ready` is the birth, `lost` is Homie's Last Will, `disconnected` and `sleeping` are the
device's own goodbyes (`sleeping` marks the event as a sleep: the device shows as sleeping, not
offline), `init` and `alert` are signs of life. No session token.
"""

from __future__ import annotations

from typing import Literal

from mqtt_presence.bridge.message import Invalid, MqttMessage
from mqtt_presence.bridge.profiles.base import ProfileSettingsBase, check_device, event_of
from mqtt_presence.bridge.topics import TopicPattern
from mqtt_presence.core import ConnectionEvent, EventKind

STATES = {
    "ready": EventKind.BIRTH,
    "lost": EventKind.WILL,
    "disconnected": EventKind.OFFLINE,
    "sleeping": EventKind.OFFLINE,
    "init": EventKind.ACTIVITY,
    "alert": EventKind.ACTIVITY,
}


class HomieProfileSettings(ProfileSettingsBase):
    kind: Literal["homie"] = "homie"
    topic: str = "homie/{device}/$state"


class HomieProfile:
    def __init__(self, settings: HomieProfileSettings) -> None:
        self.settings = settings
        self.name = "homie"
        self.pattern = TopicPattern(settings.topic)

    def translate(self, msg: MqttMessage, captures: dict[str, str]) -> ConnectionEvent:
        device = check_device(captures["device"])
        state = msg.payload.decode("utf-8", errors="replace").strip()
        kind = STATES.get(state)
        if kind is None:
            raise Invalid(
                "bad_payload", f"Homie $state {state[:40]!r} is not one of {sorted(STATES)}"
            )
        if state == "sleeping":
            return event_of(msg, self.name, device, kind, sleeping=True)
        return event_of(msg, self.name, device, kind)
