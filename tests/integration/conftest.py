"""One real local stack (Kafka + Mosquitto) per test session; tests isolate by unique names."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from mqtt_presence.stack import LocalStack, StackInfo
from mqtt_presence.stack.brokers import MqttBroker
from mqtt_presence.stack.manager import broker_named
from mqtt_presence.stack.ports import free_port
from mqtt_presence.stack.postgres import LocalPostgres
from mqtt_presence.stack.processes import stop_pid


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("stack"))
    stack.up(progress=lambda msg: print(f"[stack] {msg}"))
    yield stack
    stack.down(purge=True)


@pytest.fixture(scope="session")
def stack(local_stack: LocalStack) -> StackInfo:
    info = local_stack.info()
    assert info is not None
    return info


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A throwaway PostgreSQL cluster (Debian's package, installed if missing) for the sink."""
    server = LocalPostgres.create(progress=lambda msg: print(f"[postgres] {msg}"), durable=False)
    try:
        yield server.start()
    finally:
        server.destroy()


@pytest.fixture
def stack_home(tmp_path: Path) -> Path:
    return tmp_path / "stack"


@dataclass
class RunningBroker:
    """An MQTT broker of its own (any the stack can run) beside the session's Kafka: the broker
    tests put each broker in the same place, with its own home, port and data."""

    broker: MqttBroker
    home: Path
    port: int
    pid: int = 0

    def start(self) -> RunningBroker:
        self.pid = self.broker.run(self.home, self.port)
        return self

    def stop(self) -> None:
        stop_pid(self.pid, self.broker.marker)

    def restart(self) -> None:
        """Stopped (SIGTERM: it saves what it keeps) and started again on its port with its
        data."""
        self.stop()
        self.start()

    def stack(self, kafka: StackInfo) -> StackInfo:
        """The session stack's Kafka with this broker as its MQTT part."""
        return msgspec.structs.replace(
            kafka,
            home=str(self.home),
            mqtt_port=self.port,
            mqtt_pid=self.pid,
            mqtt_broker=self.broker.name,
            mqtt_broker_version=self.broker.version(),
        )


def epmd_running() -> bool:
    epmd = shutil.which("epmd")
    if epmd is None:
        return False
    return subprocess.run([epmd, "-names"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], RunningBroker]]:
    """`brokers(name)`: that broker, installed and started on first use, for the session."""
    running: dict[str, RunningBroker] = {}
    epmd_before = epmd_running()

    def get(name: str) -> RunningBroker:
        if name not in running:
            broker = broker_named(name)
            broker.install(lambda msg: print(f"[{name}] {msg}"))
            home = tmp_path_factory.mktemp(name)
            running[name] = RunningBroker(broker, home, free_port()).start()
        return running[name]

    yield get
    for each in running.values():
        each.stop()
    if not epmd_before and epmd_running():  # RabbitMQ's port mapper: ours to stop
        subprocess.run(["epmd", "-kill"], capture_output=True, check=False)
