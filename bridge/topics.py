"""Topic patterns: `devices/{device}/status` matches a topic and captures the device id.

`{name}` captures one level, `+` matches one level, `#` (last) matches the rest. `{device+}`
captures one or more levels, for ids that contain `/` (Zigbee2MQTT friendly names such as
`kitchen/floor_light`); MQTT has no wildcard for "some levels" in the middle of a filter, so it
subscribes once per depth, up to `MAX_DEVICE_LEVELS`. The MQTT subscription filters are the
pattern with every capture replaced by `+`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from mqtt_presence.bridge.errors import ConfigurationError

_CAPTURE = re.compile(r"^\{([a-z_]+)(\+?)\}$")
MAX_DEVICE_LEVELS = 4  # `{device+}`: ids of up to this many topic levels


@dataclass(frozen=True)
class TopicPattern:
    pattern: str

    def __post_init__(self) -> None:
        levels = self.pattern.split("/")
        for i, level in enumerate(levels):
            if level == "#" and i != len(levels) - 1:
                raise ConfigurationError(f"topic pattern {self.pattern!r}: '#' must be last")
            if ("{" in level or "}" in level) and not _CAPTURE.match(level):
                raise ConfigurationError(
                    f"topic pattern {self.pattern!r}: a capture is a whole level like {{device}}"
                )
        multi = [lv for lv in levels if (m := _CAPTURE.match(lv)) and m.group(2)]
        if multi not in ([], ["{device+}"]):
            raise ConfigurationError(
                f"topic pattern {self.pattern!r}: only {{device+}} may span levels, once"
            )
        if "{device+}" in levels and "#" in levels:
            raise ConfigurationError(
                f"topic pattern {self.pattern!r}: {{device+}} and '#' cannot be combined"
            )
        if "{device}" not in levels and "{device+}" not in levels:
            raise ConfigurationError(f"topic pattern {self.pattern!r} has no {{device}} level")

    @property
    def subscription(self) -> str:
        """The filter of a pattern whose captures are one level each."""
        return "/".join("+" if _CAPTURE.match(lv) else lv for lv in self.pattern.split("/"))

    @property
    def subscriptions(self) -> list[str]:
        """Every filter the pattern needs: one, or one per depth of a `{device+}` capture."""
        if "{device+}" not in self.pattern.split("/"):
            return [self.subscription]
        return [
            TopicPattern(
                self.pattern.replace("{device+}", "/".join(["{device}"] * depth))
            ).subscription
            for depth in range(1, MAX_DEVICE_LEVELS + 1)
        ]

    def match(self, topic: str) -> dict[str, str] | None:
        """The captures if `topic` matches, else None."""
        found = self._regex.match(topic)
        return found.groupdict() if found else None

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        parts = []
        for level in self.pattern.split("/"):
            capture = _CAPTURE.match(level)
            if capture and capture.group(2):
                levels = MAX_DEVICE_LEVELS - 1
                parts.append(f"(?P<{capture.group(1)}>[^/]+(?:/[^/]+){{0,{levels}}})")
            elif capture:
                parts.append(f"(?P<{capture.group(1)}>[^/]+)")
            elif level == "+":
                parts.append("[^/]*")
            elif level == "#":
                parts.append(".*")
            else:
                parts.append(re.escape(level))
        body = "/".join(parts)
        if body.endswith("/.*"):  # '#' also matches the parent level itself
            body = body[:-3] + "(?:/.*)?"
        return re.compile(f"^{body}$")
