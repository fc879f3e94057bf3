"""AgentOutput: what happens when Kafka takes, or refuses, one of the agent's records."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest

from mqtt_presence.core import Reason, Status, StatusChange
from mqtt_presence.streams.metrics import WorkerMetrics
from mqtt_presence.streams.output import EXIT_RESTART_ME, AgentOutput, DeliveryError


@dataclass
class Sent:
    topic_partition: tuple[str, int]
    offset: int


@dataclass
class RecordingProducer:
    """Stands in for the app's producer: `send` queues the record and hands back its delivery
    future, which the test resolves as Kafka would."""

    deliveries: list[tuple[str, bytes, bytes, int | None, asyncio.Future[Any]]] = field(
        default_factory=list
    )

    async def send(
        self, topic: str, key: bytes, value: bytes, partition: int | None, *_: Any
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliveries.append((topic, key, value, partition, future))
        return future


class Store(dict[bytes, bytes]):
    """A Faust store's two methods that the output uses."""

    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[Any, int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[tp] = offset


@dataclass
class Table:
    data: Store = field(default_factory=Store)
    changelog_topic_name: str = "app-device-state-changelog"


def change() -> StatusChange:
    return StatusChange(
        device="cam-1",
        status=Status.ONLINE,
        since=1,
        decided_at=1,
        version=1,
        reason=Reason.BIRTH,
        session=1,
        flapping=False,
        verified=True,
        suppressed=0,
    )


def test_a_state_goes_to_the_store_and_the_changelog_and_its_offset_is_persisted() -> None:
    async def scenario() -> None:
        producer, table, failures = RecordingProducer(), Table(), list[BaseException]()
        output = AgentOutput(producer, table, "presence.status", WorkerMetrics(), failures.append)
        await output.put_state(b"cam-1", b"state", 3)
        assert table.data[b"cam-1"] == b"state"
        topic, key, value, partition, delivery = producer.deliveries[0]
        assert (topic, key, value, partition) == (table.changelog_topic_name, b"cam-1", b"state", 3)
        delivery.set_result(Sent((topic, 3), 41))
        await asyncio.sleep(0)  # done callbacks run on the loop
        assert table.data.persisted == {(topic, 3): 41}
        assert failures == []

    asyncio.run(scenario())


def test_a_refused_record_calls_the_failure_policy_once_and_stops_further_writes() -> None:
    async def scenario() -> None:
        producer, metrics = RecordingProducer(), WorkerMetrics()
        failures: list[BaseException] = []
        output = AgentOutput(producer, Table(), "presence.status", metrics, failures.append)
        await output.send_status(b"cam-1", change())
        await output.put_state(b"cam-1", b"state", 0)
        refused = TimeoutError("no leader")
        producer.deliveries[0][4].set_exception(refused)
        producer.deliveries[1][4].set_exception(TimeoutError("no leader either"))
        await asyncio.sleep(0)
        assert failures == [refused]  # the worker's policy: exit before any commit past it
        with pytest.raises(DeliveryError, match="no leader"):
            await output.send_status(b"cam-1", change())
        with pytest.raises(DeliveryError):
            output.raise_failure()
        assert metrics.send_errors._value.get() == 1
        with pytest.raises(DeliveryError):
            await output.put_state(b"cam-1", b"state", 0)
        assert len(producer.deliveries) == 2  # nothing more was sent after the failure

    asyncio.run(scenario())


def test_the_workers_failure_policy_exits_at_once_with_a_clear_message() -> None:
    code = (
        "import logging; logging.basicConfig();"
        "from mqtt_presence.streams.output import exit_without_commit;"
        "exit_without_commit(TimeoutError('no leader for presence.status-3'));"
        "print('still running')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == EXIT_RESTART_ME
    assert "still running" not in done.stdout
    assert "no leader for presence.status-3" in done.stderr
    assert "restart the worker" in done.stderr
