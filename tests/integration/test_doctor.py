"""`presence doctor` against a live deployment on the local stack: a bridge (in this process) and a
worker (its own process) on topics of their own, then faults injected one at a time, each in the
doctor's configuration only (a wrong MQTT port, a topic that does not exist, a worker address
where nothing listens), so that the deployment itself stays healthy for the other tests.

What should happen: the doctor names the failed check and the fix, goes on with the others, and
exits 1; a healthy deployment exits 0 with every check ok (or warn, with a reason)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import mqtt_presence.cli  # noqa: F401 - registers every command on `app`
from mqtt_presence.bridge.config import load_bridge_settings
from mqtt_presence.cli.common import app
from mqtt_presence.settings import load_file, render_config
from mqtt_presence.stack import LocalStack, StackInfo
from mqtt_presence.stack import secure as secure_files
from mqtt_presence.stack.ports import free_port
from mqtt_presence.worker_process import WorkerProcess
from tests.integration.helpers import Publisher, read_topic, running_bridge, unique


@dataclass
class Deployment:
    config: Path
    tables: dict[str, dict[str, Any]]
    bridge_url: str
    worker_url: str
    topics: dict[str, str]


def write_config(path: Path, tables: dict[str, dict[str, Any]], prefix: str) -> Path:
    text = render_config(tables)
    path.write_text(
        text + f'\n[[bridge.profiles]]\nkind = "json"\ntopic = "{prefix}/{{device}}/status"\n'
    )
    return path


@pytest.fixture(scope="module")
def deployment(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("doctor")
    tag = unique("doc")
    topics = {role: f"{role}-{tag}" for role in ("raw", "status", "dlq", "ticks")}
    worker = WorkerProcess.start(stack.kafka_bootstrap, home, topics, app_id=tag, partitions=2)
    bridge_port = free_port()
    tables: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap": stack.kafka_bootstrap,
            **{f"{role}_topic": name for role, name in topics.items()},
            "partitions": 2,
        },
        "bridge": {
            "mqtt_url": stack.mqtt_url,
            "client_id": f"bridge-{tag}",
            "http_port": bridge_port,
            "state_dir": str(home / "bridge-state"),
        },
        "worker": {"app_id": tag, "store": "memory"},
    }
    config = write_config(home / "presence.toml", tables, tag)
    settings = load_bridge_settings(load_file(config))
    try:
        worker.wait_ready(90)
        with running_bridge(settings):
            publisher = Publisher(stack)
            try:  # some life on the status topic: two devices born
                for device in ("cam-1", "cam-2"):
                    payload = json.dumps({"status": "online", "session": 1})
                    publisher.publish(f"{tag}/{device}/status", payload)
            finally:
                publisher.close()
            yield Deployment(config, tables, f"http://127.0.0.1:{bridge_port}", worker.url, topics)
    finally:
        worker.stop()


def doctor(*args: str) -> tuple[int, dict[str, Any]]:
    """`presence doctor --json ...` in this process: its exit status and its findings."""
    result = CliRunner().invoke(app, ["doctor", "--json", "--timeout", "2", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def checks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["check"]: f for f in doc["findings"]}


def test_a_healthy_deployment_passes_every_check(deployment: Deployment, stack: StackInfo) -> None:
    assert len(read_topic(stack, deployment.topics["status"], 2)) == 2  # the worker is through
    # The real command line, as an operator or a script runs it.
    command = [
        sys.executable, "-m", "mqtt_presence", "doctor", "--config", str(deployment.config),
        "--bridge-url", deployment.bridge_url, "--worker-url", deployment.worker_url,
    ]  # fmt: skip
    done = subprocess.run([*command, "--json"], capture_output=True, timeout=60, check=False)
    doc = json.loads(done.stdout)
    print(json.dumps(doc, indent=1))
    assert done.returncode == 0, doc
    assert doc["healthy"] is True
    for finding in doc["findings"]:
        assert finding["status"] in ("ok", "warn"), finding
        if finding["status"] == "warn":
            assert finding["fix"], finding
    found = checks(doc)
    assert set(found) >= {
        "mqtt.dns", "mqtt.tcp", "mqtt.login", "kafka.dns", "kafka.tcp", "kafka.login",
        "kafka.cluster", "mqtt.subscribe", "mqtt.round_trip", "mqtt.broker", "mqtt.dropped",
        "kafka.topic.raw", "kafka.topic.ticks", "kafka.topic.status", "kafka.topic.dlq",
        "kafka.copartitioned", "bridge.health", "bridge.metrics", "worker.ready",
        "worker.metrics", "kafka.dlq", "devices.flapping",
    }  # fmt: skip
    assert found["mqtt.round_trip"]["status"] == "ok"
    assert found["mqtt.round_trip"]["data"]["round_trip_ms"] >= 0
    assert "Granted QoS 1 (0x01)" in found["mqtt.subscribe"]["seen"]
    assert "mosquitto version" in found["mqtt.broker"]["seen"]
    assert found["kafka.copartitioned"]["status"] == "ok"
    assert (
        f"{deployment.tables['worker']['app_id']}-device-state-changelog"
        in (found["kafka.copartitioned"]["seen"])
    )
    # the two births on the status topic, read back from its end
    assert "cam-1 1 change(s)" in found["devices.flapping"]["seen"]
    human = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    print(human.stdout)
    assert human.returncode == 0
    assert "healthy: " in human.stdout
    assert "exit status 0" in human.stdout


def test_a_wrong_mqtt_port_fails_naming_it_and_the_rest_goes_on(deployment: Deployment) -> None:
    port = free_port()
    status, doc = doctor(
        "--config", str(deployment.config), "--mqtt-url", f"mqtt://127.0.0.1:{port}"
    )
    assert status == 1
    found = checks(doc)
    assert found["mqtt.tcp"]["status"] == "fail"
    assert f"127.0.0.1:{port}" in found["mqtt.tcp"]["seen"]
    assert f"nothing listens on port {port}" in found["mqtt.tcp"]["fix"]
    assert found["mqtt.login"]["status"] == "skip"
    assert found["mqtt.round_trip"]["status"] == "skip"
    # one probe failing never stops the others
    assert found["kafka.cluster"]["status"] == "ok"
    assert found["kafka.topic.raw"]["status"] == "ok"


def test_a_missing_topic_fails_with_the_command_that_makes_it(
    deployment: Deployment, tmp_path: Path
) -> None:
    missing = unique("status-missing")
    tables = {**deployment.tables, "kafka": {**deployment.tables["kafka"], "status_topic": missing}}
    config = write_config(tmp_path / "missing.toml", tables, "nothing-here")
    status, doc = doctor("--config", str(config))
    assert status == 1
    found = checks(doc)
    assert found["kafka.topic.status"]["status"] == "fail"
    assert f"{missing} does not exist" in found["kafka.topic.status"]["seen"]
    assert f"--create --topic {missing} --partitions 2" in found["kafka.topic.status"]["fix"]
    assert "cleanup.policy=compact" in found["kafka.topic.status"]["fix"]
    assert found["kafka.topic.raw"]["status"] == "ok"
    assert found["devices.flapping"]["status"] == "skip"
    assert found["mqtt.round_trip"]["status"] == "ok"


def test_a_stopped_worker_fails(deployment: Deployment) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    status, doc = doctor(
        "--config", str(deployment.config), "--worker-url", nowhere,
        "--bridge-url", deployment.bridge_url,
    )  # fmt: skip
    assert status == 1
    failed = [f for f in doc["findings"] if f["status"] == "fail"]
    assert [f["check"] for f in failed] == ["worker.ready"]
    assert f"{nowhere}/ready does not answer" in failed[0]["seen"]
    assert "is the worker running" in failed[0]["fix"]


def test_a_user_whose_reads_the_acl_filters_gets_nothing_back(tmp_path: Path) -> None:
    """On `presence stack up --secure`, user `device` may only write devices/+/status: Mosquitto
    grants its SUBSCRIBE (SUBACK 0x01) and delivers nothing (mosquitto.conf(5), acl_file), the
    subscriber of report A that silently received nothing. The bridge's own user gets the probe
    back."""
    home = tmp_path / "secure"
    stack = LocalStack(home)
    info = stack.up(secure=True)
    try:
        assert info.client_config is not None
        tables = load_file(info.client_config)
        as_bridge = tmp_path / "bridge.toml"
        as_bridge.write_text(render_config(tables))
        device = {
            **tables["bridge"],
            "username": secure_files.MQTT_DEVICE,
            "password_file": str(
                secure_files.password_file(home, "mqtt", secure_files.MQTT_DEVICE)
            ),
        }
        as_device = tmp_path / "device.toml"
        as_device.write_text(render_config({**tables, "bridge": device}))

        status, doc = doctor("--config", str(as_device))
        assert status == 1
        found = checks(doc)
        assert found["mqtt.tls"]["status"] == "ok"
        assert found["mqtt.login"]["status"] == "ok"
        assert found["kafka.login"]["status"] == "ok"
        assert found["mqtt.subscribe"]["status"] == "ok"
        assert "Granted QoS 1 (0x01)" in found["mqtt.subscribe"]["seen"]
        trip = found["mqtt.round_trip"]
        assert trip["status"] == "fail"
        assert "never came back" in trip["seen"]
        assert "grant `read`" in trip["fix"]

        _, doc = doctor("--config", str(as_bridge))
        assert checks(doc)["mqtt.round_trip"]["status"] == "ok"
    finally:
        stack.down(purge=True)


def test_an_endpoint_that_accepts_and_never_answers_cannot_hang_the_doctor(
    deployment: Deployment,
) -> None:
    """A listening socket nobody serves: TCP connects (the kernel accepts), then silence."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        start = time.monotonic()
        result = CliRunner().invoke(
            app,
            [
                "doctor", "--json", "--timeout", "1", "--config", str(deployment.config),
                "--mqtt-url", f"mqtt://127.0.0.1:{port}",
                "--worker-url", f"http://127.0.0.1:{port}",
            ],
        )  # fmt: skip
        took = time.monotonic() - start
    assert result.exit_code == 1
    found = checks(json.loads(result.stdout))
    assert found["mqtt.tcp"]["status"] == "ok"
    assert found["mqtt.login"]["status"] == "fail"
    assert "no CONNACK" in found["mqtt.login"]["seen"]
    assert found["worker.ready"]["status"] == "fail"
    assert "timed out" in found["worker.ready"]["seen"]
    assert found["kafka.topic.raw"]["status"] == "ok"
    assert took < 20, took
