"""AgentOutput: what happens when Kafka takes, or refuses, one of the agent's records."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.metrics import WorkerMetrics
from streams.presence import Reason, Status, StatusChange
from streams.topology import AgentOutput, DeliveryError


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
        producer, table = RecordingProducer(), Table()
        output = AgentOutput(producer, table, "presence.status", WorkerMetrics())
        await output.put_state(b"cam-1", b"state", 3)
        assert table.data[b"cam-1"] == b"state"
        topic, key, value, partition, delivery = producer.deliveries[0]
        assert (topic, key, value, partition) == (table.changelog_topic_name, b"cam-1", b"state", 3)
        delivery.set_result(Sent((topic, 3), 41))
        await asyncio.sleep(0)  # done callbacks run on the loop
        assert table.data.persisted == {(topic, 3): 41}

    asyncio.run(scenario())


def test_a_refused_record_stops_the_next_write_and_is_counted() -> None:
    async def scenario() -> None:
        producer, metrics = RecordingProducer(), WorkerMetrics()
        output = AgentOutput(producer, Table(), "presence.status", metrics)
        await output.send_status(b"cam-1", change())
        producer.deliveries[0][4].set_exception(TimeoutError("no leader"))
        await asyncio.sleep(0)
        with pytest.raises(DeliveryError, match="no leader"):
            await output.send_status(b"cam-1", change())
        with pytest.raises(DeliveryError):
            output.raise_failure()
        assert metrics.send_errors._value.get() == 1
        assert len(producer.deliveries) == 1  # nothing more was sent after the failure

    asyncio.run(scenario())
