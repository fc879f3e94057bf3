"""Whether an MQTT subscription filter matches a topic, as a broker decides it."""

from __future__ import annotations


def matches(subscription: str, topic: str) -> bool:
    """MQTT 5.0 4.7: `+` one level, `#` the rest (and the parent)."""
    filters, levels = subscription.split("/"), topic.split("/")
    for i, f in enumerate(filters):
        if f == "#":
            return True
        if i >= len(levels) or (f != "+" and f != levels[i]):
            return False
    return len(filters) == len(levels)
