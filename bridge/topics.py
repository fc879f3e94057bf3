"""Topic patterns: `devices/{device}/status` matches a topic and captures the device id.

`{name}` captures one level, `+` matches one level, `#` (last) matches the rest. The MQTT
subscription filter is the pattern with every capture replaced by `+`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from mqtt_presence.bridge.errors import ConfigurationError

_CAPTURE = re.compile(r"^\{([a-z_]+)\}$")


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
        if "{device}" not in levels:
            raise ConfigurationError(f"topic pattern {self.pattern!r} has no {{device}} level")

    @property
    def subscription(self) -> str:
        return "/".join("+" if _CAPTURE.match(lv) else lv for lv in self.pattern.split("/"))

    def match(self, topic: str) -> dict[str, str] | None:
        """The captures if `topic` matches, else None."""
        found = self._regex.match(topic)
        return found.groupdict() if found else None

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        parts = []
        for level in self.pattern.split("/"):
            capture = _CAPTURE.match(level)
            if capture:
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
