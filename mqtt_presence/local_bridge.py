"""Bridge settings for a local stack: what the demo, the benchmarks and the tests start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mqtt_presence.bridge.config import BridgeSettings, load_bridge_settings
from mqtt_presence.stack import StackInfo


def local_bridge_settings(
    info: StackInfo,
    *,
    client_id: str,
    raw_topic: str,
    dlq_topic: str,
    topic_prefix: str,
    **overrides: Any,
) -> BridgeSettings:
    """The stack's brokers (in the MQTT version its broker speaks), the given client id and
    topics, and the JSON convention under `topic_prefix` (`<prefix>/<device>/status`);
    `overrides` for any other setting (`profiles` too)."""
    settings: dict[str, Any] = {
        "mqtt_url": info.mqtt_url,
        "kafka_bootstrap": info.kafka_bootstrap,
        "client_id": client_id,
        "raw_topic": raw_topic,
        "dlq_topic": dlq_topic,
        "profiles": [{"kind": "json", "topic": f"{topic_prefix}/{{device}}/status"}],
        "state_dir": Path(info.home) / "bridge",
        "mqtt_version": "5" if info.broker.mqtt5 else "3.1.1",
    }
    return load_bridge_settings({}, **{**settings, **overrides})
