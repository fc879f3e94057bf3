"""A part whose configuration disagrees with the partitions its topics have stops at start, with
the topic and both counts, instead of routing keys to partitions nobody expects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from mqtt_presence.kafka_topics import (
    TopicSpec,
    committed_offsets,
    ensure_topics,
    records_between,
)
from mqtt_presence.settings import render_config
from mqtt_presence.stack import StackInfo
from mqtt_presence.streams.topology import changelog_topic

from .helpers import unique


def run_presence(args: list[str], config: Path) -> tuple[int, str]:
    """Exit status, and what it printed with the terminal's line breaks undone."""
    done = subprocess.run(
        [sys.executable, "-m", "mqtt_presence", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, " ".join((done.stdout + done.stderr).split())


def worker_config(stack: StackInfo, path: Path, *, raw: str, app_id: str) -> Path:
    worker = {"kafka_bootstrap": stack.kafka_bootstrap, "raw_topic": raw, "app_id": app_id}
    path.write_text(render_config({"worker": {**worker, "partitions": 4, "store": "memory"}}))
    return path


def test_a_worker_refuses_a_raw_topic_with_another_partition_count(
    stack: StackInfo, tmp_path: Path
) -> None:
    raw = unique("raw")
    ensure_topics(stack.kafka_bootstrap, "test", [TopicSpec(raw, 2)])
    config = worker_config(stack, tmp_path / "presence.toml", raw=raw, app_id=unique("app"))
    status, said = run_presence(["worker"], config)
    assert status == 1, said
    assert f"{raw} has 2 partitions, the configuration says 4" in said
    assert "Traceback" not in said


def test_a_worker_refuses_a_changelog_not_co_partitioned_with_its_input(
    stack: StackInfo, tmp_path: Path
) -> None:
    app_id = unique("app")
    ensure_topics(stack.kafka_bootstrap, "test", [TopicSpec(changelog_topic(app_id), 3)])
    config = worker_config(stack, tmp_path / "presence.toml", raw=unique("raw"), app_id=app_id)
    status, said = run_presence(["worker"], config)
    assert status == 1, said
    assert f"{changelog_topic(app_id)} has 3 partitions, the configuration says 4" in said


def test_a_bridge_refuses_a_raw_topic_with_another_partition_count(
    stack: StackInfo, tmp_path: Path
) -> None:
    raw = unique("raw")
    ensure_topics(stack.kafka_bootstrap, "test", [TopicSpec(raw, 2)])
    config = tmp_path / "presence.toml"
    bridge = {
        "kafka_bootstrap": stack.kafka_bootstrap,
        "mqtt_url": f"mqtt://127.0.0.1:{stack.mqtt_port}",
        "raw_topic": raw,
        "client_id": unique("bridge"),
        "partitions": 4,
        "state_dir": str(tmp_path),
    }
    config.write_text(render_config({"bridge": bridge}))
    status, said = run_presence(["bridge"], config)
    assert status == 1, said
    assert f"{raw} has 2 partitions, the configuration says 4" in said
    assert "Traceback" not in said


def test_what_the_skip_watch_asks_kafka(stack: StackInfo) -> None:
    """The skip watch's two questions, against the real broker: how many records lie between two
    offsets (none past the end), and where a group committed a topic's partitions."""
    topic, group = unique("skips"), unique("group")
    ensure_topics(stack.kafka_bootstrap, "test", [TopicSpec(topic, 2)])
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    for i in range(20):
        producer.send(topic, value=b"x%d" % i, partition=1)
    producer.flush()
    producer.close()
    assert records_between(stack.kafka_bootstrap, topic, 1, 5, 15) == 10
    assert records_between(stack.kafka_bootstrap, topic, 1, 18, 40) == 2
    assert records_between(stack.kafka_bootstrap, topic, 0, 0, 10) == 0
    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group)
    consumer.commit({TopicPartition(topic, 1): OffsetAndMetadata(12, "", -1)})
    consumer.close(autocommit=False)
    assert committed_offsets(stack.kafka_bootstrap, group, topic) == {1: 12}
