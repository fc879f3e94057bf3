"""Real clients for the integration tests: paho publishers, kafka-python readers, a bridge."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from kafka import KafkaConsumer
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_presence.bridge.app import Bridge
from mqtt_presence.bridge.config import BridgeSettings
from mqtt_presence.core.records import is_progress
from mqtt_presence.local_bridge import local_bridge_settings
from mqtt_presence.settings import render_config
from mqtt_presence.stack import StackInfo


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Publisher:
    """A real MQTT client that waits for each QoS 1 PUBACK."""

    def __init__(self, info: StackInfo, client_id: str | None = None, **connect: Any) -> None:
        self.mqtt5 = info.broker.mqtt5
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or unique("pub"),
            protocol=mqtt.MQTTv5 if self.mqtt5 else mqtt.MQTTv311,
        )
        self.client.connect(info.mqtt_host, info.mqtt_port, **connect)
        self.client.loop_start()

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        user_properties: dict[str, str] | None = None,
    ) -> None:
        props = None
        if user_properties:
            assert self.mqtt5, "user properties are MQTT 5"
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = list(user_properties.items())
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"no PUBACK for {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connack_code(c: mqtt.Client, port: int, timeout: float = 5.0) -> int | None:
    """Connect `c` to 127.0.0.1:`port`: the CONNACK's reason code, None when the broker is not
    up or closed the connection without one."""
    codes: list[int] = []
    c.on_connect = lambda _c, _u, _f, rc, _p: codes.append(rc.value)
    c.reconnect_delay_set(3600, 3600)
    try:
        c.connect("127.0.0.1", port)
    except OSError:
        return None
    c.loop_start()
    deadline = time.monotonic() + timeout
    while not codes and time.monotonic() < deadline:
        time.sleep(0.02)
    c.loop_stop()
    c.disconnect()
    return codes[0] if codes else None


def bridge_in_thread(bridge: Bridge) -> tuple[threading.Thread, list[BaseException]]:
    """`bridge.run()` in a thread of its own; what ended it lands in the list."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            bridge.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="bridge", daemon=True)
    thread.start()
    return thread, errors


def bridge_settings(info: StackInfo, **overrides: Any) -> BridgeSettings:
    tag = unique("t")
    base: dict[str, Any] = {
        "client_id": f"bridge-{tag}",
        "raw_topic": f"raw-{tag}",
        "dlq_topic": f"dlq-{tag}",
        "topic_prefix": tag,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 2.0,
        "partitions": 4,
    }
    return local_bridge_settings(info, **{**base, **overrides})


def topic_prefix(settings: BridgeSettings) -> str:
    return settings.profiles[0].topic.split("/")[0]


@contextmanager
def running_bridge(settings: BridgeSettings) -> Iterator[Bridge]:
    bridge = Bridge(settings)
    thread, errors = bridge_in_thread(bridge)
    wait_for(
        lambda: bridge.source.subscribed.is_set() or bool(errors), 30, "the bridge to subscribe"
    )
    if errors:
        raise errors[0]
    try:
        yield bridge
    finally:
        bridge.stop()
        thread.join(30)
        assert not thread.is_alive(), "the bridge did not stop"
    if errors:
        raise errors[0]


def write_bridge_config(path: Path, **bridge: object) -> Path:
    """A config file with a [bridge] table, Kafka's keys in [kafka] (a json profile on `topic`,
    if given)."""
    topic = bridge.pop("topic", None)
    bridge.setdefault("state_dir", str(path.parent / "bridge-state"))  # not the user's home
    text = render_config({"bridge": bridge})
    if topic is not None:
        text += f'\n[[bridge.profiles]]\nkind = "json"\ntopic = {json.dumps(topic)}\n'
    path.write_text(text)
    return path


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_topic(
    info: StackInfo, topic: str, count: int, timeout: float = 30.0, *, progress: bool = False
) -> list[Any]:
    """Read `count` records (or everything there after `timeout`) from the beginning; the
    bridges' progress records of presence.raw only with `progress`."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=info.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            for message in consumer:
                if not progress and is_progress(message.headers):
                    if time.monotonic() > deadline:  # a topic written all the time never idles
                        break
                    continue
                records.append(message)
                if len(records) >= count or time.monotonic() > deadline:
                    break
    finally:
        consumer.close()
    return records
