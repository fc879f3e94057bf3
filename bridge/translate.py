"""From an MQTT message to a raw event or a dead letter: size check, profile by topic, payload."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.message import Invalid, MqttMessage, Translated, dead_letter
from bridge.profiles import Profile


class Translator:
    """Pure: the same message always gives the same record."""

    def __init__(self, profiles: Sequence[Profile], max_payload_bytes: int = 64 * 1024) -> None:
        self.profiles = list(profiles)
        self.max_payload_bytes = max_payload_bytes

    def translate(self, msg: MqttMessage) -> Translated:
        if len(msg.payload) > self.max_payload_bytes:
            return dead_letter(
                msg, "oversize", f"{len(msg.payload)} bytes > limit {self.max_payload_bytes}"
            )
        for profile in self.profiles:
            captures = profile.pattern.match(msg.topic)
            if captures is None:
                continue
            try:
                return profile.translate(msg, captures)
            except Invalid as exc:
                return dead_letter(msg, exc.reason, exc.detail, profile.name)
        return dead_letter(msg, "unknown_topic", "no profile's topic pattern matches this topic")
