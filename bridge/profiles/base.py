"""What every profile shares: the interface, and helpers for tokens and times."""

from __future__ import annotations

import re
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, field_validator

from mqtt_presence.bridge.errors import ConfigurationError
from mqtt_presence.bridge.message import Invalid, MqttMessage
from mqtt_presence.bridge.topics import TopicPattern
from mqtt_presence.core import ConnectionEvent, EventKind, SessionOrder, SessionToken
from mqtt_presence.core.events import ID_PATTERN, MAX_ID_LENGTH

_ID = re.compile(ID_PATTERN)


class ProfileSettingsBase(BaseModel):
    """What every profile's settings have: a topic pattern, checked when the config loads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str

    @field_validator("topic")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            TopicPattern(value)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from exc
        return value


class Profile(Protocol):
    """Turns the messages of one topic pattern into raw events. Pure: no I/O."""

    name: str
    pattern: TopicPattern

    def translate(self, msg: MqttMessage, captures: dict[str, str]) -> ConnectionEvent:
        """The raw event for `msg`, or raise `Invalid`."""
        ...


def event_of(
    msg: MqttMessage, source: str, device: str, kind: EventKind, **fields: Any
) -> ConnectionEvent:
    """The raw event of a message: what the profile read, plus the MQTT metadata every event
    carries (receive time, retain and dup flags, topic, user properties)."""
    return ConnectionEvent(
        device=device,
        kind=kind,
        received_at=msg.received_at,
        retain=msg.retain,
        dup=msg.dup,
        topic=msg.topic,
        source=source,
        properties=msg.user_properties,
        **fields,
    )


def check_device(device: str) -> str:
    """The device id, if the records can carry it (the rule of `ConnectionEvent.device`)."""
    if len(device) > MAX_ID_LENGTH or not _ID.match(device):
        raise Invalid(
            "bad_device_id",
            f"device id {device[:80]!r} is empty, too long or has control characters",
        )
    return device


def order_of(token: SessionToken | None, configured: str) -> SessionOrder:
    if configured != "auto":
        return SessionOrder(configured)
    return SessionOrder.COUNTER if isinstance(token, int) else SessionOrder.OPAQUE


def token_of(value: object, where: str) -> SessionToken | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Invalid(
            "bad_payload",
            f"session token in {where} must be an integer or a string, got {type(value).__name__}",
        )
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def time_of(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("bad_payload", f"{where} must be a number of ms since the epoch")
    return int(value)
