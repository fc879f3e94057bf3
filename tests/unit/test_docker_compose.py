"""The compose file is checked statically (no Docker engine here): it parses, every mounted file
exists, every `presence` command it runs exists, and its config file validates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer.main
import yaml

from mqtt_presence.bridge.config import load_bridge_settings
from mqtt_presence.cli import app
from mqtt_presence.settings import load_file, presence_config
from mqtt_presence.stack.kafka import kafka_version
from mqtt_presence.streams.config import load_worker_settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def test_compose_parses_and_has_the_production_services() -> None:
    services = compose()["services"]
    assert {"kafka", "mosquitto", "bridge", "worker-1", "worker-2"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"


def test_compose_runs_the_kafka_the_local_stack_runs() -> None:
    # What the tests prove on the local stack is what compose deploys.
    assert compose()["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"


def test_every_mounted_file_exists() -> None:
    named = set(compose().get("volumes", {}))
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source in named:
                continue
            assert (DOCKER / source).exists(), f"{name} mounts missing {source}"
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).exists()


def test_every_service_command_exists_in_the_package() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name, service in compose()["services"].items():
        command = service.get("command")
        if command and command[0] == "presence":
            assert command[1] in commands, f"{name} runs unknown `presence {command[1]}`"


def test_the_mounted_config_validates() -> None:
    data = load_file(DOCKER / "presence.toml")
    settings = load_bridge_settings(data)
    assert settings.kafka.raw_topic == "presence.raw"
    worker = load_worker_settings(data)
    assert (worker.kafka.partitions, worker.store) == (settings.kafka.partitions, "rocksdb")
    assert presence_config(data).offline_grace_ms == 5000


def test_nothing_unauthenticated_is_published_beyond_this_host() -> None:
    # An anonymous Mosquitto on every interface lets anyone publish wills for any device; the
    # workers' HTTP API has no authentication either.
    for name, service in compose()["services"].items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name} publishes {mapping}"
