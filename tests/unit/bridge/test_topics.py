"""Topic patterns with a multi-level device capture (`{device+}`): Zigbee2MQTT friendly names may
contain `/` ("You can use the / separator in friendly_name to structure devices",
https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub as matches  # the broker-side rule, paho's

from mqtt_presence.bridge.errors import ConfigurationError
from mqtt_presence.bridge.topics import MAX_DEVICE_LEVELS, TopicPattern

Z2M = TopicPattern("zigbee2mqtt/{device+}/availability")
LEVEL = st.text(st.characters(blacklist_characters="/+#\x00", codec="utf-8"), min_size=1)


def test_a_friendly_name_with_levels_is_one_device() -> None:
    assert Z2M.match("zigbee2mqtt/kitchen/floor_light/availability") == {
        "device": "kitchen/floor_light"
    }
    assert Z2M.match("zigbee2mqtt/0x00158d0001/availability") == {"device": "0x00158d0001"}
    assert Z2M.match("zigbee2mqtt/kitchen/floor_light") is None  # its telemetry, not availability
    assert Z2M.match("zigbee2mqtt/bridge/state") is None


def test_one_subscription_per_depth_and_none_wider() -> None:
    assert Z2M.subscriptions == [
        "zigbee2mqtt/+/availability",
        "zigbee2mqtt/+/+/availability",
        "zigbee2mqtt/+/+/+/availability",
        "zigbee2mqtt/+/+/+/+/availability",
    ]  # not zigbee2mqtt/#: the bridge would receive every device's telemetry


@given(st.lists(LEVEL, min_size=1, max_size=MAX_DEVICE_LEVELS))
def test_any_name_of_up_to_four_levels_is_captured_and_subscribed(levels: list[str]) -> None:
    name = "/".join(levels)
    topic = f"zigbee2mqtt/{name}/availability"
    assert Z2M.match(topic) == {"device": name}
    assert any(matches(f, topic) for f in Z2M.subscriptions)


@pytest.mark.parametrize(
    "bad", ["a/{device+}/{site+}", "a/{device+}/#", "a/{site+}/status", "a/{device+}{x}/s"]
)
def test_patterns_the_capture_cannot_serve_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        TopicPattern(bad)
