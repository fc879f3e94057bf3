"""Payload profiles: each turns one family of lifecycle messages into raw events. Pure.

Chosen by config (`[[bridge.profiles]]` tables with a `kind`); the first whose topic pattern
matches a message translates it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mqtt_presence.bridge.profiles.activity import ActivityProfile, ActivityProfileSettings
from mqtt_presence.bridge.profiles.base import Profile
from mqtt_presence.bridge.profiles.emqx import EmqxProfile, EmqxProfileSettings
from mqtt_presence.bridge.profiles.homie import HomieProfile, HomieProfileSettings
from mqtt_presence.bridge.profiles.json_status import JsonProfile, JsonProfileSettings
from mqtt_presence.bridge.profiles.plain import (
    AvailabilityProfile,
    EsphomeProfileSettings,
    PlainProfileSettings,
    ShellyProfileSettings,
    TasmotaProfileSettings,
    Zigbee2MqttProfileSettings,
)
from mqtt_presence.bridge.profiles.sparkplug import SparkplugProfile, SparkplugProfileSettings

ProfileSettings = Annotated[
    JsonProfileSettings
    | PlainProfileSettings
    | Zigbee2MqttProfileSettings
    | TasmotaProfileSettings
    | EsphomeProfileSettings
    | ShellyProfileSettings
    | HomieProfileSettings
    | EmqxProfileSettings
    | SparkplugProfileSettings
    | ActivityProfileSettings,
    Field(discriminator="kind"),
]


def build(settings: ProfileSettings) -> Profile:
    match settings:
        case JsonProfileSettings():
            return JsonProfile(settings)
        case (
            PlainProfileSettings()
            | Zigbee2MqttProfileSettings()
            | TasmotaProfileSettings()
            | EsphomeProfileSettings()
            | ShellyProfileSettings()
        ):
            return AvailabilityProfile(settings)
        case HomieProfileSettings():
            return HomieProfile(settings)
        case EmqxProfileSettings():
            return EmqxProfile(settings)
        case SparkplugProfileSettings():
            return SparkplugProfile(settings)
        case ActivityProfileSettings():
            return ActivityProfile(settings)


def subscriptions(profile: Profile) -> list[str]:
    extra = getattr(profile, "subscriptions", None)
    return list(extra) if extra is not None else profile.pattern.subscriptions


__all__ = ["Profile", "ProfileSettings", "build", "subscriptions"]
