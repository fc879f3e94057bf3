"""`presence demo`: the product end to end on the local stack.

For now (the streams workers come next): bring the stack up, start a bridge, let a device connect
with a session token, publish its birth and die, and show the birth and the will (the broker's Last
Will) arriving in Kafka as raw events.
"""

from __future__ import annotations

import threading
import time
import uuid

import msgspec
from kafka import KafkaConsumer
from rich.console import Console
from rich.table import Table

from bridge.app import Bridge
from bridge.config import load_bridge_settings
from fleet.devices import MqttDevice
from mqtt_presence.stack import LocalStack
from streams.presence import ConnectionEvent


def run_demo(stack: LocalStack, console: Console, keep_stack: bool) -> None:
    was_up = stack.info() is not None
    info = stack.up(progress=console.log)
    tag = uuid.uuid4().hex[:6]
    settings = load_bridge_settings(
        {},
        mqtt_url=info.mqtt_url,
        kafka_bootstrap=info.kafka_bootstrap,
        client_id=f"presence-demo-bridge-{tag}",
        session_expiry_s=60,
    )  # a demo leaves no lasting session
    bridge = Bridge(settings)
    thread = threading.Thread(target=bridge.run, name="bridge", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not bridge.source.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        device = f"camera-{tag}"
        console.log(
            f"device {device} connects (session 1, will registered) and publishes its birth"
        )
        cam = MqttDevice(device, info.mqtt_host, info.mqtt_port, session=1).connect()
        cam.birth()
        console.log(f"device {device} loses power: the broker publishes its will")
        cam.die()
        events = _read(info.kafka_bootstrap, settings.raw_topic, device, 2, console)
    finally:
        bridge.stop()
        thread.join(30)
        if not was_up and not keep_stack:
            stack.down()
            console.log("stack stopped (use --keep-stack to keep it)")
    table = Table(title=f"raw events on Kafka topic {settings.raw_topic} (key = device id)")
    for col in ("device", "kind", "session", "received_at", "topic"):
        table.add_column(col)
    for e in events:
        table.add_row(e.device, e.kind.value, str(e.session), str(e.received_at), e.topic or "")
    console.print(table)


def _read(
    bootstrap: str, topic: str, device: str, count: int, console: Console
) -> list[ConnectionEvent]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    found: list[ConnectionEvent] = []
    deadline = time.monotonic() + 30
    try:
        while len(found) < count and time.monotonic() < deadline:
            for message in consumer:
                if message.key == device.encode():
                    found.append(msgspec.json.decode(message.value, type=ConnectionEvent))
    finally:
        consumer.close()
    if len(found) < count:
        console.log(f"[red]only {len(found)} of {count} events arrived in 30 s[/]")
    return found
