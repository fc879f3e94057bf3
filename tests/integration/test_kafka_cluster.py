"""A three-node Kafka (`presence stack up --kafka-nodes 3`): topics with three replicas and
min.insync.replicas 2, the leader of a raw partition and then the active KRaft controller killed
with SIGKILL in the middle of a stream of births and wills, each started again in place.

What the outside says should happen: with acks=all a write is acknowledged only once every
in-sync replica has it, and with min.insync.replicas=2 and three replicas one broker may fail
without losing an acknowledged write or refusing new ones (Kafka docs, "Replication" and the
`min.insync.replicas` topic config); the controller quorum of three survives one lost voter and
elects another leader (KIP-595, Raft). So: every message the devices got a PUBACK for is in
presence.raw, the workers keep going, every device ends right, and each device's versions on
presence.status never go back and have no gaps.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from mqtt_presence.kafka_topics import read_from_beginning
from mqtt_presence.stack import LocalStack
from mqtt_presence.stack.kafka import active_controller, partition_leader
from mqtt_presence.worker_process import WorkerProcess
from tests.integration.helpers import bridge_settings, running_bridge, unique, wait_for

DEVICES, ROUNDS = 60, 21  # the last round is a birth: every device ends online
PARTITIONS = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("cluster"))
    stack.up(kafka_nodes=3, progress=lambda msg: print(f"[cluster] {msg}"))
    yield stack
    stack.down(purge=True)


def test_acknowledged_births_survive_a_leader_kill_and_a_controller_kill(
    cluster: LocalStack, tmp_path: Path
) -> None:
    info = cluster.info()
    assert info is not None
    assert len(info.nodes) == 3
    tag = unique("kc")
    topics = {k: f"{k}-{tag}" for k in ("raw", "status", "dlq", "ticks")}
    workers = [
        WorkerProcess.start(
            info.kafka_bootstrap,
            tmp_path,
            topics,
            f"app-{tag}",
            partitions=PARTITIONS,
            presence={"offline_grace_ms": 1000},
            session_timeout_s=6.0,
            kafka={"replication_factor": 3},
        )
        for _ in range(2)
    ]
    settings = bridge_settings(
        info,
        raw_topic=topics["raw"],
        dlq_topic=topics["dlq"],
        partitions=PARTITIONS,
        replication_factor=3,
        topic_prefix=tag,
    )
    faults: list[str] = []
    try:
        for worker in workers:
            worker.wait_ready(timeout=120)
        with running_bridge(settings):
            publisher = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=unique("pub"), protocol=mqtt.MQTTv5
            )
            publisher.max_inflight_messages_set(200)
            publisher.connect(info.mqtt_host, info.mqtt_port)
            publisher.loop_start()
            total = DEVICES * ROUNDS

            def inject() -> None:
                time.sleep(2)
                leader = partition_leader(info.kafka_bootstrap, topics["raw"], 0)
                faults.append(f"killed node {leader}, leader of {topics['raw']}-0")
                cluster.kill_kafka_node(leader, signal.SIGKILL)
                time.sleep(4)
                cluster.start_kafka_node(leader)
                controller = active_controller(info.kafka_bootstrap)
                faults.append(f"killed node {controller}, the active controller")
                cluster.kill_kafka_node(controller, signal.SIGKILL)
                time.sleep(4)
                cluster.start_kafka_node(controller)

            chaos = threading.Thread(target=inject, daemon=True)
            chaos.start()
            sent = []
            for r in range(ROUNDS):
                status = "online" if r % 2 == 0 else "offline"
                for d in range(DEVICES):
                    body = {"status": status, "session": r // 2 + 1, "ts": int(time.time() * 1000)}
                    sent.append(
                        publisher.publish(f"{tag}/dev-{d:03d}/status", json.dumps(body), qos=1)
                    )
                time.sleep(0.6)  # ~12 s of stream: both faults happen in the middle of it
            chaos.join(120)
            assert not chaos.is_alive(), "the faults did not finish"
            for message in sent:
                message.wait_for_publish(timeout=120)
            acked = sum(1 for m in sent if m.is_published())
            publisher.loop_stop()
            assert acked == total, f"{total - acked} messages never acknowledged"
            assert len(faults) == 2, faults

            def raw_ids() -> set[tuple[str, Any, str]]:
                records = read_from_beginning(info.kafka_bootstrap, topics["raw"], idle_ms=1500)
                events = [json.loads(r.value) for r in records]
                return {(e["device"], e["session"], e["kind"]) for e in events}

            wait_for(lambda: len(raw_ids()) == total, 60, "every acknowledged message in raw")

            def right(device: str) -> bool:
                url = f"{workers[0].url}/devices/{device}"
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        body = json.loads(resp.read())
                except OSError:
                    return False
                return (body["status"], body["session"]) == ("online", ROUNDS // 2 + 1)

            devices = [f"dev-{d:03d}" for d in range(DEVICES)]
            wait_for(lambda: all(right(d) for d in devices), 90, "every device right in the API")
    finally:
        for worker in workers:
            worker.stop()
    versions: dict[bytes, list[int]] = defaultdict(list)
    by_partition = sorted(
        read_from_beginning(info.kafka_bootstrap, topics["status"], idle_ms=1500),
        key=lambda r: (r.partition, r.offset),
    )
    for record in by_partition:
        versions[record.key].append(json.loads(record.value)["version"])
    assert len(versions) == DEVICES
    for device, seen in versions.items():
        assert seen == sorted(seen), f"{device!r} went back: {seen}"
        assert sorted(set(seen)) == list(range(1, max(seen) + 1)), f"{device!r} has gaps: {seen}"
    print(f"faults: {faults}")
