"""The stack's bookkeeping without brokers: a recorded stack keeps its ports, or says why not."""

from __future__ import annotations

import socket
from pathlib import Path

import msgspec
import pytest

from mqtt_presence.stack import LocalStack, PortInUseError, StackError, StackInfo


def recorded_stack(home: Path, mqtt_port: int, kafka_port: int = 1) -> LocalStack:
    """A stack recorded in `home` whose processes are gone (pid 0 runs nothing of ours)."""
    home.mkdir(parents=True, exist_ok=True)
    info = StackInfo(
        home=str(home),
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        kafka_port=kafka_port,
        kafka_controller_port=kafka_port,
        kafka_pid=0,
        kafka_version="4.4.0",
        mqtt_host="127.0.0.1",
        mqtt_port=mqtt_port,
        mqtt_pid=0,
        mqtt_broker_version="2",
        started_at=0.0,
    )
    (home / "stack.json").write_bytes(msgspec.json.encode(info))
    return LocalStack(home)


def test_a_port_taken_while_the_stack_was_down_is_a_clear_error_not_a_move(
    tmp_path: Path,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        stack = recorded_stack(tmp_path, mqtt_port=taken)
        with pytest.raises(PortInUseError, match=f"port {taken}, where the stack .* keeps MQTT"):
            stack.up()
    info = stack.info()
    assert info is not None
    assert info.mqtt_port == taken  # still recorded: nothing was moved or forgotten


def test_asking_a_recorded_stack_for_other_ports_is_refused(tmp_path: Path) -> None:
    stack = recorded_stack(tmp_path, mqtt_port=1883, kafka_port=9092)
    with pytest.raises(StackError, match="has MQTT on port 1883, not 1884"):
        stack.up(mqtt_port=1884)


def test_down_keeps_data_and_ports_and_purge_discards_them(tmp_path: Path) -> None:
    stack = recorded_stack(tmp_path, mqtt_port=1883)
    (tmp_path / "kafka-data").mkdir()
    (tmp_path / "mosquitto-data").mkdir()
    assert stack.down() == []  # nothing ran
    assert stack.info() is not None
    assert (tmp_path / "kafka-data").is_dir()
    assert not stack.running()
    stack.down(purge=True)
    assert stack.info() is None
    assert not (tmp_path / "kafka-data").exists()
    assert not (tmp_path / "mosquitto-data").exists()


def test_restart_names_its_parts(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no part named 'zookeeper'"):
        recorded_stack(tmp_path, mqtt_port=1883).restart("zookeeper")


def test_a_stack_recorded_before_the_broker_could_be_chosen_is_read_as_mosquitto(
    tmp_path: Path,
) -> None:
    # stack.json as every earlier version wrote it: Mosquitto under its own name.
    old = msgspec.to_builtins(recorded_stack(tmp_path, mqtt_port=1883).info())
    old["mosquitto_pid"], old["mosquitto_version"] = (
        old.pop("mqtt_pid"),
        old.pop("mqtt_broker_version"),
    )
    del old["mqtt_broker"]
    (tmp_path / "stack.json").write_bytes(msgspec.json.encode(old))
    info = LocalStack(tmp_path).info()
    assert info is not None
    assert (info.mqtt_broker, info.mqtt_broker_version, info.broker.title) == (
        "mosquitto",
        "2",
        "Mosquitto",
    )


def test_a_recorded_stack_keeps_its_broker(tmp_path: Path) -> None:
    stack = recorded_stack(tmp_path, mqtt_port=1883)
    with pytest.raises(StackError, match="runs Mosquitto, not hivemq"):
        stack.up(broker="hivemq")
    with pytest.raises(StackError, match="no MQTT broker named 'vernemq'"):
        LocalStack(tmp_path / "new").up(broker="vernemq")


def test_restart_takes_the_broker_by_its_name_or_as_mqtt(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="kafka, mqtt or mosquitto"):
        recorded_stack(tmp_path, mqtt_port=1883).restart("hivemq")
