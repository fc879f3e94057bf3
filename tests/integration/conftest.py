"""One real local stack (Kafka + Mosquitto) per test session; tests isolate by unique names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_presence.stack import LocalStack, StackInfo
from mqtt_presence.stack.postgres import LocalPostgres


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
