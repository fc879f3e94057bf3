"""The bridge loses nothing: kill -9 in the middle of a stream, and Kafka gone for a while."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
import pytest

from mqtt_presence.bridge.kafka_sink import KafkaSink
from mqtt_presence.stack import LocalStack, StackInfo
from mqtt_presence.worker_process import WorkerProcess

from .helpers import (
    bridge_settings,
    read_topic,
    running_bridge,
    topic_prefix,
    unique,
    wait_for,
)
from .pipeline import NumberedPublisher, bridge_command, sessions_in_kafka, wait_healthy


@pytest.fixture
def bridge_process(stack: StackInfo, tmp_path: Path) -> tuple[list[str], dict[str, str], int]:
    return bridge_command(stack, tmp_path)


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[LocalStack]:
    """A stack of this test's own: it stops Kafka, which the session's stack must not see."""
    stack = LocalStack(tmp_path / "stack")
    stack.up()
    try:
        yield stack
    finally:
        stack.down(purge=True)


def test_kafka_stopped_for_a_while_and_started_again_loses_nothing(own_stack: LocalStack) -> None:
    stack = own_stack
    info = stack.info()
    assert info is not None
    settings = bridge_settings(info, delivery_timeout_ms=3_000)
    prefix = topic_prefix(settings)
    with running_bridge(settings) as bridge:
        before = NumberedPublisher(info, prefix, total=100).start()
        assert len(before.finish()) == 100
        assert len(read_topic(info, settings.kafka.raw_topic, 100)) == 100
        stack.stop_kafka()
        during = NumberedPublisher(info, prefix, total=300, first=100).start()
        wait_for(
            lambda: not bridge.health()["kafka"] or not bridge.health()["mqtt"],
            60,
            "the bridge to notice that Kafka is gone",
        )
        time.sleep(3)
        stack.start_kafka()
        acked = during.finish()
        seen = sessions_in_kafka(info, settings.kafka.raw_topic, acked | set(range(100)), 90)
        errors = bridge.metrics.kafka_errors._value.get()
    assert len(acked) == 300
    assert (acked | set(range(100))) - set(seen) == set()
    assert errors > 0  # it really went through the failure path


def test_a_producer_abandoned_while_kafka_is_down_leaves_no_thread(
    own_stack: LocalStack,
) -> None:
    stack = own_stack
    info = stack.info()
    assert info is not None
    settings = bridge_settings(info, delivery_timeout_ms=60_000)
    sink = KafkaSink(settings)
    sink.ensure_topics()
    sink.send(settings.kafka.raw_topic, b"d", b"{}", []).get(timeout=10)
    stack.stop_kafka()
    pending = sink.send(settings.kafka.raw_topic, b"d", b"{}", [])
    sink.close(timeout_s=0)  # kafka-python alone would raise KafkaTimeoutError here
    sender = sink.producer._sender
    sender.join(10)
    assert not sender.is_alive()
    assert not pending.succeeded()


# A crash that no exception handler sees (a native library's fault, the OOM killer while parsing):
# the harness ends the process the way such a crash would, on one message.
CRASHING_BRIDGE = """
import os, sys
from mqtt_presence.bridge.translate import Translator
real = Translator.translate
def translate(self, msg):
    if b"CRASH-ME" in msg.payload:
        os._exit(3)
    return real(self, msg)
Translator.translate = translate
from mqtt_presence.cli import main
sys.argv = ["presence", *sys.argv[1:]]
main()
"""


def test_a_message_that_ends_the_process_is_dead_lettered_instead_of_looping(
    stack: StackInfo, bridge_process: tuple[list[str], dict[str, str], int], tmp_path: Path
) -> None:
    # The broker delivers an unacknowledged QoS 1 message again, DUP set, after each reconnect
    # (MQTT 5.0 sections 3.3.1.1 and 4.4): without crash memory this loops forever.
    cmd, names, port = bridge_process
    dlq = names["dlq_topic"]
    cmd = [sys.executable, "-c", CRASHING_BRIDGE, *cmd[3:]]
    log = (tmp_path / "bridge.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_healthy(port, proc)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("p"), protocol=mqtt.MQTTv5)
    pub.connect(stack.mqtt_host, stack.mqtt_port)
    pub.loop_start()
    sent = []
    for i in range(20):
        if i == 10:
            sent.append(pub.publish(f"{names['prefix']}/bad/status", b"CRASH-ME", qos=1))
        body = json.dumps({"status": "online", "session": i})
        sent.append(pub.publish(f"{names['prefix']}/d{i}/status", body, qos=1))
    for info in sent:
        info.wait_for_publish(10)
    pub.disconnect()
    pub.loop_stop()
    crashes = 0
    try:
        deadline = time.monotonic() + 120
        seen: Counter[int] = Counter()
        while time.monotonic() < deadline and set(seen) != set(range(20)):
            if proc.poll() is not None:
                assert proc.returncode == 3, f"the bridge exited with {proc.returncode}"
                crashes += 1
                assert crashes <= 3, "the bridge keeps dying on the same message"
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            seen = sessions_in_kafka(stack, names["raw_topic"], set(range(20)), timeout=2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    assert set(seen) == set(range(20))
    assert crashes == 3  # the first delivery, then two redeliveries: then it is called poison
    letters = [msgspec.json.decode(r.value) for r in read_topic(stack, dlq, 10**9, timeout=5)]
    assert [(d["reason"], d["payload_base64"]) for d in letters] == [("poison", "Q1JBU0gtTUU=")]
    assert "dead-letter topic" in (tmp_path / "bridge.log").read_text()


LOUD = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")


@pytest.mark.parametrize("progress_interval_s", [0.0, 1.0], ids=["progress-off", "progress-on"])
def test_a_30_s_kafka_outage_is_two_lines_of_our_own_not_thousands(
    own_stack: LocalStack, tmp_path: Path, progress_interval_s: float
) -> None:
    # An operator's probe: in 55 s of Kafka outage a worker wrote about 6,400 ERROR/WARNING
    # lines and never said in its own words that Kafka was gone or back; the bridge said
    # nothing at all during a short outage and its kafka_errors metric stayed 0.
    stack = own_stack
    info = stack.info()
    assert info is not None
    cmd, names, port = bridge_command(info, tmp_path, progress_interval_s=progress_interval_s)
    prefix = names["prefix"]
    bridge_log = tmp_path / "bridge.log"
    with bridge_log.open("wb") as out:
        bridge = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"}
        )
    topics = {
        "raw": names["raw_topic"],
        "status": unique("status"),
        "dlq": unique("dlq"),
        "ticks": unique("ticks"),
        "prefix": prefix,
    }
    worker = WorkerProcess.start(
        info.kafka_bootstrap, tmp_path, topics, unique("app"), partitions=4
    ).wait_ready()
    try:
        wait_healthy(port, bridge)
        before = NumberedPublisher(info, prefix, total=50).start()
        assert len(before.finish()) == 50
        marks = (bridge_log.stat().st_size, worker.log.stat().st_size)
        stack.stop_kafka()
        during = NumberedPublisher(info, prefix, total=100, first=50).start()
        time.sleep(30)
        stack.start_kafka()
        acked = during.finish()
        assert len(acked) == 100
        seen = sessions_in_kafka(info, names["raw_topic"], acked, 90)
        assert acked <= set(seen)
        time.sleep(5)  # the worker's ticks get through again
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)
        worker.stop()
    bridge_text = bridge_log.read_bytes()[marks[0] :].decode(errors="replace")
    worker_text = worker.log.read_bytes()[marks[1] :].decode(errors="replace")
    bridge_loud = [line for line in bridge_text.splitlines() if LOUD.search(line)]
    worker_loud = [line for line in worker_text.splitlines() if LOUD.search(line)]
    print(
        f"during a 30 s Kafka outage: bridge {len(bridge_loud)} WARNING/ERROR lines, "
        f"worker {len(worker_loud)}"
    )
    assert bridge_text.count("Kafka is unreachable") == 1, bridge_text[-3000:]
    assert bridge_text.count("Kafka is back after") == 1, bridge_text[-3000:]
    assert worker_text.count("Kafka is unreachable") == 1, worker_text[-3000:]
    assert worker_text.count("Kafka is back after") == 1, worker_text[-3000:]
    assert 'presence_bridge_outages_total{broker="Kafka"} 1.0' in metrics
    assert len(bridge_loud) <= 20, "\n".join(bridge_loud)
    assert len(worker_loud) <= 100, "\n".join(worker_loud[:200])


def test_a_worker_started_before_kafka_waits_for_it_instead_of_a_traceback(
    own_stack: LocalStack, tmp_path: Path
) -> None:
    # `presence worker` with Kafka down printed a traceback and exited, where the bridge
    # retries with backoff.
    stack = own_stack
    info = stack.info()
    assert info is not None
    stack.stop_kafka()
    topics = {name: unique(name) for name in ("raw", "status", "dlq", "ticks", "prefix")}
    worker = WorkerProcess.start(info.kafka_bootstrap, tmp_path, topics, unique("app"))
    try:
        wait_for(lambda: "is unreachable" in worker.log.read_text(), 30, "the waiting line")
        time.sleep(3)
        assert worker.proc.poll() is None, worker.log.read_text()[-2000:]
        stack.start_kafka()
        worker.wait_ready(90)
        text = worker.log.read_text()
    finally:
        worker.stop()
    assert text.count("is unreachable") == 1
    assert "Kafka is back after" in text
    assert "Traceback" not in text
