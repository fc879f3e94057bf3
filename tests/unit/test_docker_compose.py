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
    run_once = {  # one-shot services the others wait for, e.g. mosquitto-users
        name
        for service in services.values()
        if isinstance(service.get("depends_on"), dict)
        for name, need in service["depends_on"].items()
        if need.get("condition") == "service_completed_successfully"
    }
    for name, service in services.items():
        assert name in run_once or "healthcheck" in service, f"{name} has no healthcheck"


def test_mosquitto_wants_users_and_the_parts_bring_their_secrets() -> None:
    conf = (DOCKER / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert "allow_anonymous false" in conf
    assert any(line.startswith("password_file ") for line in conf)
    assert any(line.startswith("acl_file ") for line in conf)
    services = compose()["services"]
    bridge_env = services["bridge"]["environment"]
    assert bridge_env["PRESENCE_BRIDGE_USERNAME"] == "presence-bridge"
    assert bridge_env["PRESENCE_BRIDGE_PASSWORD"].startswith("${MQTT_BRIDGE_PASSWORD:?")
    for worker in ("worker-1", "worker-2"):
        token = services[worker]["environment"]["PRESENCE_WORKER_HTTP_TOKEN"]
        assert token.startswith("${PRESENCE_HTTP_TOKEN:?"), worker  # compose refuses without


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


def test_prometheus_scrapes_the_services_and_loads_the_alerts() -> None:
    services = compose()["services"]
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    assert mounts["./prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    # beside the config: its rule_files entry is relative to it
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    bridge = services["bridge"]["command"]
    assert targets["presence-bridge"] == [f"bridge:{bridge[bridge.index('--http-port') + 1]}"]
    workers = sorted(name for name in services if name.startswith("worker-"))
    assert targets["presence-worker"] == [f"{name}:6066" for name in workers]


def test_grafana_gets_the_datasource_and_the_dashboard_provisioned() -> None:
    mounts = dict(v.split(":")[:2] for v in compose()["services"]["grafana"]["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./grafana/dashboards"] == "/etc/grafana/dashboards"
    for path in (
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/presence.yml",
        "grafana/dashboards/mqtt-presence.json",
        "prometheus/alerts_test.yml",
    ):
        assert (DOCKER / path).is_file(), path
