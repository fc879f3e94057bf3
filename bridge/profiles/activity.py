"""Any message a device publishes is a sign of life: telemetry topics read as activity.

`tele/{device}/#` (Tasmota's telemetry), `zigbee2mqtt/{device+}` (a Zigbee2MQTT device's state),
`shellies/{device}/#`: whatever the payload, the device was alive when it sent it. With it, a
token-less device's stale will is taken back as soon as the device is heard again within the
grace period, instead of showing a live device offline. The bridge forwards at most one activity
record per device per `coalesce_activity_s` (see the bridge's settings), so a chatty fleet does
not multiply its Kafka traffic.
"""

from __future__ import annotations

from typing import Literal

from mqtt_presence.bridge.message import MqttMessage
from mqtt_presence.bridge.profiles.base import ProfileSettingsBase, check_device, event_of
from mqtt_presence.bridge.topics import TopicPattern
from mqtt_presence.core import ConnectionEvent, EventKind


class ActivityProfileSettings(ProfileSettingsBase):
    kind: Literal["activity"] = "activity"
    topic: str = "tele/{device}/#"


class ActivityProfile:
    def __init__(self, settings: ActivityProfileSettings) -> None:
        self.settings = settings
        self.name = "activity"
        self.pattern = TopicPattern(settings.topic)

    def translate(self, msg: MqttMessage, captures: dict[str, str]) -> ConnectionEvent:
        return event_of(msg, self.name, check_device(captures["device"]), EventKind.ACTIVITY)
