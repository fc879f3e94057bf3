"""The local stack itself: a real round trip, two stacks side by side, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.partitioner.default import murmur2

from mqtt_presence.core import ConnectionEvent, EventKind
from mqtt_presence.core.records import is_progress
from mqtt_presence.stack import LocalStack, PortInUseError, StackInfo, manager, ports
from mqtt_presence.stack.processes import pid_running, stop_pids

from .helpers import Publisher, bridge_settings, read_topic, running_bridge, topic_prefix, unique


def test_birth_and_will_go_from_mqtt_through_mosquitto_and_the_bridge_into_kafka(
    stack: StackInfo,
) -> None:
    settings = bridge_settings(stack)
    prefix = topic_prefix(settings)
    device = unique("cam")
    with running_bridge(settings):
        # The device registers its will on CONNECT and publishes its birth; then it dies.
        dev = Publisher(stack, client_id=device)
        will = json.dumps({"status": "offline", "session": 7}).encode()
        dev.client.disconnect()
        dev.client.loop_stop()
        dev.client.will_set(f"{prefix}/{device}/status", will, qos=1)
        dev.client.connect(stack.mqtt_host, stack.mqtt_port, keepalive=5)
        dev.client.loop_start()
        dev.publish(
            f"{prefix}/{device}/status", json.dumps({"status": "online", "session": 7, "ts": 1})
        )
        sock = dev.client.socket()
        assert sock is not None
        sock.close()  # an abrupt loss: the broker publishes the will
        dev.client.loop_stop()
        records = read_topic(stack, settings.kafka.raw_topic, 2)
    events = [msgspec.json.decode(r.value, type=ConnectionEvent) for r in records]
    assert [e.kind for e in events] == [EventKind.BIRTH, EventKind.WILL]
    assert {r.key for r in records} == {device.encode()}
    assert all(e.device == device and e.session == 7 for e in events)
    assert dict(records[0].headers)["mqtt.topic"] == f"{prefix}/{device}/status".encode()


@pytest.mark.asyncio
async def test_records_read_back_with_aiokafka(stack: StackInfo) -> None:
    settings = bridge_settings(stack)
    prefix = topic_prefix(settings)
    with running_bridge(settings):
        pub = Publisher(stack)
        for i in range(3):
            pub.publish(f"{prefix}/dev-{i}/status", json.dumps({"status": "online", "session": i}))
        pub.close()
        assert len(read_topic(stack, settings.kafka.raw_topic, 3)) == 3
    consumer = AIOKafkaConsumer(
        settings.kafka.raw_topic,
        bootstrap_servers=stack.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        got: list[ConnectionEvent] = []
        while len(got) < 3:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "aiokafka read nothing"
            got += [
                msgspec.json.decode(m.value, type=ConnectionEvent)
                for msgs in batch.values()
                for m in msgs
                if not is_progress(m.headers)  # the bridge's progress records
            ]
    finally:
        await consumer.stop()
    assert sorted(e.device for e in got) == ["dev-0", "dev-1", "dev-2"]


def test_keys_are_raw_device_ids_partitioned_as_the_java_client_does(stack: StackInfo) -> None:
    # Faust and every Java consumer route a key with murmur2: the bridge must agree.
    settings = bridge_settings(stack, partitions=8)
    prefix = topic_prefix(settings)
    devices = [f"camera-{i:03d}" for i in range(40)]
    with running_bridge(settings):
        pub = Publisher(stack)
        for d in devices:
            pub.publish(f"{prefix}/{d}/status", json.dumps({"status": "online", "session": 1}))
        pub.close()
        records = read_topic(stack, settings.kafka.raw_topic, len(devices))
    assert sorted(r.key for r in records) == sorted(d.encode() for d in devices)
    for r in records:
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % 8, r.key


def test_two_stacks_side_by_side_and_down_leaves_no_process(
    stack: StackInfo, stack_home: Path
) -> None:
    second = LocalStack(stack_home)
    info = second.up()
    try:
        assert {info.kafka_port, info.mqtt_port}.isdisjoint({stack.kafka_port, stack.mqtt_port})
        assert second.health(info) == {"kafka": True, "mosquitto": True}
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "mqtt_presence",
                "stack",
                "status",
                "--json",
                "--home",
                str(stack_home),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        reported = json.loads(status.stdout)
        assert reported["kafka_bootstrap"] == info.kafka_bootstrap
        assert reported["mqtt_port"] == info.mqtt_port
        assert reported["up"] is True
    finally:
        stopped = second.down(purge=True)
    assert sorted(stopped) == sorted([info.kafka_pid, info.mqtt_pid])
    assert not pid_running(info.kafka_pid, "kafka.Kafka")
    assert not pid_running(info.mqtt_pid, "mosquitto")
    assert second.info() is None
    # The session's stack was not touched.
    assert LocalStack(Path(stack.home)).health(stack) == {"kafka": True, "mosquitto": True}


# A process that, on SIGTERM, says so and exits only once all its peers have said so too: the
# nodes of a KRaft cluster, each of which needs a quorum of controllers to finish a controlled
# shutdown (stopped one after another, the last ones wait out their timeout and are killed).
QUORUM_MEMBER = """
import signal, sys, time
from pathlib import Path
here, me, peers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def stop(*_):
    (here / f"term-{me}").touch()
    while len(list(here.glob("term-*"))) < peers:
        time.sleep(0.05)
    (here / f"clean-{me}").touch()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
(here / f"up-{me}").touch()
while True:
    time.sleep(1)
"""


def test_down_stops_a_stacks_processes_together_so_none_waits_for_a_peer(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", QUORUM_MEMBER, str(tmp_path), str(n), "3"])
        for n in range(3)
    ]
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("up-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    stopped = stop_pids([(p.pid, QUORUM_MEMBER[:20]) for p in procs], timeout=20)
    for p in procs:
        p.wait(5)
    assert sorted(stopped) == sorted(p.pid for p in procs)
    # Every one finished its own shutdown; none was killed after the timeout.
    assert sorted(f.name for f in tmp_path.glob("clean-*")) == ["clean-0", "clean-1", "clean-2"]
    assert [p.returncode for p in procs] == [0, 0, 0]


def test_a_taken_port_is_a_clear_error(stack: StackInfo, stack_home: Path) -> None:
    with pytest.raises(PortInUseError, match=f"port {stack.mqtt_port} for MQTT is already in use"):
        LocalStack(stack_home).up(mqtt_port=stack.mqtt_port)
    assert LocalStack(stack_home).info() is None


def test_a_port_taken_after_it_was_picked_is_picked_again(
    stack_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Something takes the port picked for Kafka before Kafka binds it (in CI: an outgoing
    # connection was given it): Kafka fails with "Address already in use", and the stack picks
    # other ports and starts it again.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken])
        monkeypatch.setattr(manager, "free_port", lambda: next(picks, None) or ports.free_port())
        second = LocalStack(stack_home)
        info = second.up()
        try:
            assert info.kafka_port != taken
            assert second.health(info) == {"kafka": True, "mosquitto": True}
            assert "Address already in use" in (stack_home / "kafka.log").read_text()
        finally:
            second.down(purge=True)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mqtt_presence", "stack", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


def kafka_records(info: StackInfo, topic: str) -> list[bytes]:
    return [r.value for r in read_topic(info, topic, 10**9, timeout=5)]


def retained(info: StackInfo, topic: str) -> bytes | None:
    got: list[bytes] = []
    sub = Publisher(info)
    sub.client.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    sub.client.subscribe(topic, qos=1)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.close()
    return got[0] if got else None


def test_up_after_a_part_died_starts_only_that_part_in_place_and_keeps_every_record(
    stack_home: Path,
) -> None:
    # An operator's probe: Mosquitto was killed, `presence stack up` stopped the healthy Kafka,
    # deleted both brokers' data (13 MB to 32 KB) and started both on new ports. Docker Compose,
    # the model operators know, does the opposite: `up` starts what is not running and keeps
    # volumes; only `down -v` removes them.
    second = LocalStack(stack_home)
    info = second.up()
    try:
        topic = unique("kept")
        admin = KafkaAdminClient(bootstrap_servers=info.kafka_bootstrap)
        admin.create_topics([NewTopic(topic, 1, 1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=info.kafka_bootstrap, acks="all")
        producer.send(topic, b"record-1").get(timeout=10)
        producer.close()
        pub = Publisher(info)
        pub.publish(f"{topic}/retained", b"still here", retain=True)
        pub.close()
        # Saved after 100 changes, or now on SIGUSR1 (mosquitto(8)): what was saved must survive.
        os.kill(info.mqtt_pid, signal.SIGUSR1)
        time.sleep(0.5)

        os.kill(info.mqtt_pid, signal.SIGKILL)
        up = cli("up", "--home", str(stack_home))
        assert up.returncode == 0, up.stderr
        assert "Mosquitto is not running: starting it again" in up.stderr
        after = second.info()
        assert after is not None
        assert after.kafka_pid == info.kafka_pid  # the healthy part was not touched
        assert after.mqtt_pid != info.mqtt_pid
        assert (after.kafka_port, after.mqtt_port) == (info.kafka_port, info.mqtt_port)
        assert retained(after, f"{topic}/retained") == b"still here"
        assert kafka_records(after, topic) == [b"record-1"]

        os.kill(after.kafka_pid, signal.SIGKILL)
        up = cli("up", "--home", str(stack_home))
        assert up.returncode == 0, up.stderr
        assert "Kafka is not running: starting it again" in up.stderr
        again = second.info()
        assert again is not None
        assert again.mqtt_pid == after.mqtt_pid
        assert again.kafka_port == info.kafka_port
        assert kafka_records(again, topic) == [b"record-1"]

        down = cli("down", "--home", str(stack_home))
        assert down.returncode == 0, down.stderr
        assert second.health(again) == {"kafka": False, "mosquitto": False}
        restarted = second.up()
        assert (restarted.kafka_port, restarted.mqtt_port) == (info.kafka_port, info.mqtt_port)
        assert kafka_records(restarted, topic) == [b"record-1"]

        restart = cli("restart", "mosquitto", "--home", str(stack_home))
        assert restart.returncode == 0, restart.stderr
        last = second.info()
        assert last is not None
        assert last.mqtt_pid != restarted.mqtt_pid
        assert last.kafka_pid == restarted.kafka_pid
        assert retained(last, f"{topic}/retained") == b"still here"
    finally:
        purge = cli("down", "--purge", "--home", str(stack_home))
    assert purge.returncode == 0, purge.stderr
    assert second.info() is None
    assert not (stack_home / "kafka-data").exists()
