"""From an MQTT message to a raw event or a dead letter: size check, profile by topic, payload.

Whatever a message holds, the answer is a record: a profile's `Invalid` becomes a dead letter with
its reason, an event whose values no consumer could read back (a token of 2**70, a NUL in an id)
becomes an `out_of_range` dead letter, and an exception nobody foresaw in a profile becomes an
`internal_error` dead letter, so one message can never stop the flow of the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from mqtt_presence.bridge.message import Invalid, MqttMessage, Translated, dead_letter
from mqtt_presence.bridge.profiles import Profile
from mqtt_presence.core.records import check_raw


class Translator:
    """Pure: the same message always gives the same record."""

    def __init__(self, profiles: Sequence[Profile], max_payload_bytes: int = 64 * 1024) -> None:
        self.profiles = list(profiles)
        self.max_payload_bytes = max_payload_bytes

    def translate(self, msg: MqttMessage) -> Translated:
        if msg.defect is not None:
            return dead_letter(msg, "bad_packet", msg.defect)
        if len(msg.payload) > self.max_payload_bytes:
            return dead_letter(
                msg, "oversize", f"{len(msg.payload)} bytes > limit {self.max_payload_bytes}"
            )
        for profile in self.profiles:
            captures = profile.pattern.match(msg.topic)
            if captures is None:
                continue
            try:
                return check_raw(profile.translate(msg, captures))
            except Invalid as exc:
                return dead_letter(msg, exc.reason, exc.detail, profile.name)
            except msgspec.ValidationError as exc:
                return dead_letter(msg, "out_of_range", str(exc), profile.name)
            except Exception as exc:  # a bug of ours: this message must not stop the others
                detail = f"the {profile.name} profile failed: {type(exc).__name__}: {exc}"
                return dead_letter(msg, "internal_error", detail, profile.name)
        return dead_letter(msg, "unknown_topic", "no profile's topic pattern matches this topic")
