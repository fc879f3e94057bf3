"""The partition check every part runs on the topics it uses (pure: the counts Kafka reported)."""

from __future__ import annotations

import pytest

from mqtt_presence.errors import PresenceError
from mqtt_presence.kafka_topics import TopicLayoutError, TopicSpec, check_layout

SPECS = [
    TopicSpec("presence.raw", 8),
    TopicSpec("presence.ticks", 8),
    TopicSpec("app-changelog", 8),
]


def test_topics_as_configured_or_not_there_yet_pass() -> None:
    check_layout({"presence.raw": 8, "presence.ticks": 8}, SPECS)


def test_a_topic_with_another_count_stops_with_its_name_and_both_counts() -> None:
    with pytest.raises(TopicLayoutError) as caught:
        check_layout({"presence.raw": 8, "presence.ticks": 8, "app-changelog": 4}, SPECS)
    assert "app-changelog has 4 partitions, the configuration says 8" in str(caught.value)
    assert "presence.raw" not in str(caught.value)
    assert isinstance(caught.value, PresenceError)  # the CLI prints it, no traceback


def test_every_wrong_topic_is_named_at_once() -> None:
    with pytest.raises(TopicLayoutError) as caught:
        check_layout({"presence.raw": 12, "presence.ticks": 3}, SPECS)
    message = str(caught.value)
    assert "presence.raw has 12 partitions" in message
    assert "presence.ticks has 3 partitions" in message
