"""AgentOutput: what reaches Kafka, in which batches and order, and what happens when Kafka takes,
or refuses, one of the agent's batches."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtt_presence.core import Reason, Status, StatusChange
from mqtt_presence.streams.metrics import WorkerMetrics
from mqtt_presence.streams.output import (
    EXIT_RESTART_ME,
    AgentOutput,
    DeliveryError,
    partition_of,
)
from mqtt_presence.streams.topology import flush_before_commits


@dataclass
class Sent:
    """aiokafka's RecordMetadata of a batch: the offset of its first record."""

    topic_partition: tuple[str, int]
    offset: int


@dataclass
class Batch:
    """aiokafka's BatchBuilder as the output uses it: full after `capacity` records."""

    capacity: int
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    closed: bool = False

    def append(self, *, key: bytes, value: bytes, timestamp: float | None) -> object | None:
        if self.closed or (self.records and len(self.records) >= self.capacity):
            self.closed = True
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True

    def record_count(self) -> int:
        return len(self.records)


@dataclass
class BatchingProducer:
    """aiokafka's producer, its batch API: `send_batch` queues a batch and hands back its one
    delivery future, which the test resolves as Kafka would."""

    capacity: int = 1_000
    partitions: int = 6  # presence.status's
    sent: list[tuple[str, int, Batch, asyncio.Future[Any]]] = field(default_factory=list)

    def create_batch(self) -> Batch:
        return Batch(self.capacity)

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        assert batch.closed, "an open batch would linger in the producer once more"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, batch, future))
        return future

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def records(self, topic: str) -> list[tuple[int, bytes, bytes]]:
        return [(p, k, v) for t, p, b, _ in self.sent if t == topic for k, v in b.records]


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


CHANGELOG = Table.changelog_topic_name
STATUS = "presence.status"
KEY_PARTITIONS = 6  # presence.raw's: the partitions the callers name are among these
CAM_1 = partition_of(b"cam-1", KEY_PARTITIONS)


def change(device: str = "cam-1", version: int = 1) -> StatusChange:
    return StatusChange(
        device=device,
        status=Status.ONLINE,
        since=1,
        decided_at=1,
        version=version,
        reason=Reason.BIRTH,
        session=1,
        flapping=False,
        verified=True,
        suppressed=0,
    )


def output_on(
    producer: BatchingProducer, table: Table | None = None, **kw: Any
) -> tuple[AgentOutput, list[BaseException], WorkerMetrics]:
    failures: list[BaseException] = []
    metrics = WorkerMetrics()
    kw.setdefault("key_partitions", KEY_PARTITIONS)
    output = AgentOutput(lambda: producer, table or Table(), STATUS, metrics, failures.append, **kw)
    return output, failures, metrics


def test_a_state_is_in_the_store_at_once_and_in_the_changelog_after_the_linger() -> None:
    async def scenario() -> None:
        producer, table = BatchingProducer(), Table()
        output, failures, _ = output_on(producer, table, linger_s=0.01)
        await output.put_state(b"cam-1", b"state-1", 3)
        await output.put_state(b"cam-2", b"state-2", 3)
        assert table.data[b"cam-1"] == b"state-1"  # read back by the next event at once
        assert producer.sent == []  # lingering
        await asyncio.sleep(0.05)
        ((topic, partition, batch, delivery),) = producer.sent  # one batch, one future
        assert (topic, partition) == (CHANGELOG, 3)
        assert batch.records == [(b"cam-1", b"state-1"), (b"cam-2", b"state-2")]
        delivery.set_result(Sent((topic, 3), 41))
        await asyncio.sleep(0)  # done callbacks run on the loop
        assert table.data.persisted == {(topic, 3): 42}  # the batch's last record
        assert failures == []

    asyncio.run(scenario())


def test_a_newer_state_replaces_one_not_sent_yet_and_status_changes_all_go_in_order() -> None:
    # The changelog is compacted (Kafka's documentation, "Log Compaction": the log retains "at
    # least the last known value for each message key", which is all a recovery reads);
    # presence.status is what consumers read change by change, so none of those is dropped or
    # reordered.
    async def scenario() -> None:
        producer = BatchingProducer()
        output, _, metrics = output_on(producer, linger_s=10)
        for version in (1, 2, 3):
            await output.put_state(b"cam-1", f"v{version}".encode(), 0)
            await output.send_status(b"cam-1", change(version=version), CAM_1)
        await output.send_status(b"cam-1", change(version=3), CAM_1, count=False)  # re-announced
        assert output.pending == 7
        await output.flush()
        assert producer.records(CHANGELOG) == [(0, b"cam-1", b"v3")]
        statuses = producer.records(STATUS)
        versions = [msgspec.json.decode(v)["version"] for _, _, v in statuses]
        assert versions == [1, 2, 3, 3]
        assert {p for p, _, _ in statuses} == {partition_of(b"cam-1", producer.partitions)}
        assert metrics.counts.by_status[Status.ONLINE] == 3  # not the repeat
        assert output.pending == 0

    asyncio.run(scenario())


def test_at_max_pending_the_agent_waits_for_a_flush_instead_of_piling_up() -> None:
    async def scenario() -> None:
        producer = BatchingProducer()
        output, _, _ = output_on(producer, linger_s=10, max_pending=3)
        await output.put_state(b"a", b"1", 0)
        await output.put_state(b"b", b"1", 0)
        assert producer.sent == []
        await output.put_state(b"c", b"1", 1)  # the third: flushed before it returns
        assert sorted(producer.records(CHANGELOG)) == [
            (0, b"a", b"1"),
            (0, b"b", b"1"),
            (1, b"c", b"1"),
        ]

    asyncio.run(scenario())


def test_a_refused_batch_calls_the_failure_policy_once_and_stops_further_writes() -> None:
    async def scenario() -> None:
        producer = BatchingProducer()
        output, failures, metrics = output_on(producer, linger_s=10)
        await output.send_status(b"cam-1", change(), CAM_1)
        await output.put_state(b"cam-1", b"state", 0)
        await output.flush()
        refused = TimeoutError("no leader")
        producer.sent[0][3].set_exception(refused)
        producer.sent[1][3].set_exception(TimeoutError("no leader either"))
        await asyncio.sleep(0)
        assert failures == [refused]  # the worker's policy: exit before any commit past it
        with pytest.raises(DeliveryError, match="no leader"):
            await output.send_status(b"cam-1", change(), CAM_1)
        with pytest.raises(DeliveryError):
            output.raise_failure()
        assert metrics.send_errors._value.get() == 1
        with pytest.raises(DeliveryError):
            await output.put_state(b"cam-1", b"state", 0)
        await output.flush()
        assert len(producer.sent) == 2  # nothing more was sent after the failure

    asyncio.run(scenario())


def test_a_producer_that_cannot_take_a_batch_is_a_failure_too() -> None:
    class Closed(BatchingProducer):
        async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> Any:
            raise RuntimeError("ProducerClosed")

    async def scenario() -> None:
        output, failures, _ = output_on(Closed(), linger_s=10)
        await output.put_state(b"cam-1", b"state", 0)
        await output.flush()
        assert [str(f) for f in failures] == ["ProducerClosed"]

    asyncio.run(scenario())


def test_fausts_flush_before_a_commit_sends_what_waits_first() -> None:
    # Faust's consumer flushes the app's producer, then commits the offsets of the events the
    # agent finished: their records must be in the producer by then (at-least-once).
    async def scenario() -> None:
        producer = BatchingProducer()
        output, _, _ = output_on(producer, linger_s=10)
        order: list[str] = []

        async def fausts_flush() -> None:
            order.append(f"producer flushed with {len(producer.sent)} batches in it")

        app = SimpleNamespace(producer=SimpleNamespace(flush=fausts_flush))
        flush_before_commits(app, output)  # type: ignore[arg-type]
        await output.put_state(b"cam-1", b"state", 2)
        await app.producer.flush()
        assert order == ["producer flushed with 1 batches in it"]

    asyncio.run(scenario())


Op = tuple[str, bytes]  # ("state" | "status", device)


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["state", "status"]), st.sampled_from([b"a", b"b", b"c", b"d", b"e"])
        ),
        max_size=60,
    ),
    capacity=st.integers(1, 8),
    max_pending=st.integers(1, 20),
    flush_every=st.integers(1, 30),
    status_partitions=st.sampled_from([KEY_PARTITIONS, 3]),
)
def test_any_writes_reach_kafka_the_newest_state_per_device_and_every_change_in_order(
    ops: list[Op], capacity: int, max_pending: int, flush_every: int, status_partitions: int
) -> None:
    # presence.status with as many partitions as presence.raw (the default: the caller's
    # partition is the key's there too) or with another count (murmur2 of the key again)
    async def scenario() -> None:
        producer = BatchingProducer(capacity=capacity, partitions=status_partitions)
        table = Table()
        output, failures, _ = output_on(producer, table, linger_s=10, max_pending=max_pending)
        newest: dict[tuple[int, bytes], bytes] = {}
        changes: list[tuple[bytes, int]] = []
        for n, (kind, device) in enumerate(ops):
            if kind == "state":
                value = b"%d" % n
                partition = partition_of(device, KEY_PARTITIONS)  # a device stays in its own
                await output.put_state(device, value, partition)
                newest[partition, device] = value
            else:
                sent_to = partition_of(device, KEY_PARTITIONS)
                await output.send_status(device, change(device.decode(), version=n), sent_to)
                changes.append((device, n))
            if n % flush_every == 0:
                await output.flush()
        await output.flush()
        assert failures == []
        assert all(len(b.records) <= capacity for _, _, b, _ in producer.sent)
        last: dict[tuple[int, bytes], bytes] = {}
        for partition, key, value in producer.records(CHANGELOG):
            last[partition, key] = value
        assert last == newest  # what recovery reads back: each device's newest state
        sent = [
            (key, msgspec.json.decode(value)["version"], partition)
            for partition, key, value in producer.records(STATUS)
        ]
        assert sorted((k, v) for k, v, _ in sent) == sorted(changes)  # none lost or doubled
        for device in {d for d, _ in changes}:
            mine = [(v, p) for k, v, p in sent if k == device]
            assert [v for v, _ in mine] == [v for d, v in changes if d == device]  # in order
            assert {p for _, p in mine} == {partition_of(device, status_partitions)}

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
