"""The compose setup's Mosquitto, run for real (no Docker engine here): its mosquitto.conf and
ACL, and the password file made by the very script of its `mosquitto-users` service, with the
container's paths moved into a temp folder. Anonymous clients are refused (CONNACK 0x87 Not
authorized, MQTT 5.0 section 3.2.2.2), the users log in, and the ACL keeps a device from
reading what others publish (mosquitto.conf(5): allow_anonymous, password_file, acl_file)."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from mqtt_presence.stack import mosquitto
from mqtt_presence.stack.ports import free_port
from tests.integration.helpers import connack_code, unique, wait_for

DOCKER = Path(__file__).resolve().parents[2] / "docker"
PASSWORDS = {
    "MQTT_BRIDGE_PASSWORD": "bridge-" + "b" * 16,
    "MQTT_DEVICE_PASSWORD": "dev-" + "d" * 16,
}


@pytest.fixture(scope="module")
def compose_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("compose-mosquitto")
    paths = {"/mosquitto/auth": root / "auth", "/mosquitto/data": root / "data"}
    paths["/mosquitto/config/acl"] = DOCKER / "mosquitto" / "acl"
    for folder in (paths["/mosquitto/auth"], paths["/mosquitto/data"]):
        folder.mkdir()

    def moved(text: str) -> str:
        for container_path, here in paths.items():
            text = text.replace(container_path, str(here))
        return text

    binary = mosquitto.ensure_installed()
    service = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    script = moved(service["mosquitto-users"]["command"][2]).replace("$$", "$")
    script = script.replace("chown -R mosquitto:mosquitto", "true")  # we run as ourselves
    subprocess.run(["sh", "-ec", script], env={**os.environ, **PASSWORDS}, check=True)
    port = free_port()
    conf = moved((DOCKER / "mosquitto" / "mosquitto.conf").read_text())
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf += f"\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n"  # not the image's mosquitto user
    (root / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen(
        [str(binary), "-c", str(root / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: connack(None, port) is not None, 20, "the compose Mosquitto")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def client(user: str | None) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("c"), protocol=mqtt.MQTTv5)
    if user is not None:
        key = "MQTT_BRIDGE_PASSWORD" if user == "presence-bridge" else "MQTT_DEVICE_PASSWORD"
        c.username_pw_set(user, PASSWORDS[key])
    return c


def connack(user: str | None, port: int) -> int | None:
    """The CONNACK reason code for `user` (None: anonymous); None when the broker is not up."""
    return connack_code(client(user), port)


def test_anonymous_clients_are_refused_and_the_users_log_in(compose_mosquitto: int) -> None:
    port = compose_mosquitto
    assert connack(None, port) == 0x87  # Not authorized
    assert connack("presence-bridge", port) == 0
    assert connack("device", port) == 0


def test_the_acl_lets_the_bridge_read_births_and_devices_read_nothing(
    compose_mosquitto: int,
) -> None:
    port = compose_mosquitto
    got: dict[str, list[str]] = {"presence-bridge": [], "device": []}
    readers = {user: client(user) for user in got}
    for user, reader in readers.items():
        reader.on_message = lambda _c, _u, m, user=user: got[user].append(m.topic)
        reader.connect("127.0.0.1", port)
        reader.loop_start()
        reader.subscribe("devices/+/status", qos=1)
    try:
        time.sleep(0.5)
        writer = client("device")
        writer.connect("127.0.0.1", port)
        writer.loop_start()
        topic = f"devices/{unique('d')}/status"
        writer.publish(topic, b'{"status": "online"}', qos=1).wait_for_publish(10)
        writer.loop_stop()
        wait_for(lambda: topic in got["presence-bridge"], 10, "the bridge's user to get it")
        time.sleep(0.3)
        assert got["device"] == []
    finally:
        for reader in readers.values():
            reader.loop_stop()
