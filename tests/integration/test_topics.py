"""A part whose configuration disagrees with the partitions its topics have stops at start, with
the topic and both counts, instead of routing keys to partitions nobody expects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mqtt_presence.kafka_topics import TopicSpec, ensure_topics
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


def test_a_worker_refuses_a_raw_topic_with_another_partition_count(
    stack: StackInfo, tmp_path: Path
) -> None:
    raw = unique("raw")
    ensure_topics(stack.kafka_bootstrap, "test", [TopicSpec(raw, 2)])
    config = tmp_path / "presence.toml"
    config.write_text(
        f'[worker]\nkafka_bootstrap = "{stack.kafka_bootstrap}"\nraw_topic = "{raw}"\n'
        f'app_id = "{unique("app")}"\npartitions = 4\nstore = "memory"\n'
    )
    status, said = run_presence(["worker"], config)
    assert status == 1, said
    assert f"{raw} has 2 partitions, the configuration says 4" in said
    assert "Traceback" not in said


def test_a_worker_refuses_a_changelog_not_co_partitioned_with_its_input(
    stack: StackInfo, tmp_path: Path
) -> None:
    app_id = unique("app")
    ensure_topics(stack.kafka_bootstrap, "test", [TopicSpec(changelog_topic(app_id), 3)])
    config = tmp_path / "presence.toml"
    config.write_text(
        f'[worker]\nkafka_bootstrap = "{stack.kafka_bootstrap}"\nraw_topic = "{unique("raw")}"\n'
        f'app_id = "{app_id}"\npartitions = 4\nstore = "memory"\n'
    )
    status, said = run_presence(["worker"], config)
    assert status == 1, said
    assert f"{changelog_topic(app_id)} has 3 partitions, the configuration says 4" in said


def test_a_bridge_refuses_a_raw_topic_with_another_partition_count(
    stack: StackInfo, tmp_path: Path
) -> None:
    raw = unique("raw")
    ensure_topics(stack.kafka_bootstrap, "test", [TopicSpec(raw, 2)])
    config = tmp_path / "presence.toml"
    config.write_text(
        f'[bridge]\nkafka_bootstrap = "{stack.kafka_bootstrap}"\n'
        f'mqtt_url = "mqtt://127.0.0.1:{stack.mqtt_port}"\nraw_topic = "{raw}"\n'
        f'client_id = "{unique("bridge")}"\npartitions = 4\nstate_dir = "{tmp_path}"\n'
    )
    status, said = run_presence(["bridge"], config)
    assert status == 1, said
    assert f"{raw} has 2 partitions, the configuration says 4" in said
    assert "Traceback" not in said
