"""The worker metrics the dashboard and the alerts read beside Faust's: status changes by the
core's reason, devices by category (set at scrape from the status index) and recovery."""

from __future__ import annotations

import asyncio
from collections import Counter

import msgspec
from prometheus_client import generate_latest

from mqtt_presence.core import Reason, Status
from mqtt_presence.streams.metrics import WorkerMetrics
from mqtt_presence.streams.output import AgentOutput
from mqtt_presence.streams.status_index import CATEGORIES, StatusIndex
from tests.unit.streams.test_output import BatchingProducer, change


def scraped(metrics: WorkerMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_every_reason_is_exported_from_the_start_and_counted_per_change() -> None:
    metrics = WorkerMetrics()
    producer = BatchingProducer()
    output = AgentOutput(
        lambda: producer, None, "presence.status", metrics, lambda _: None, key_partitions=6
    )
    went = msgspec.structs.replace(change(), status=Status.OFFLINE, reason=Reason.WILL, version=2)

    async def scenario() -> None:
        await output.send_status(b"cam-1", went, 0)
        await output.send_status(b"cam-1", went, 0, count=False)  # a re-announcement: not new

    asyncio.run(scenario())
    text = scraped(metrics)
    assert 'presence_worker_status_changes_by_reason_total{reason="will"} 1.0' in text
    for reason in Reason:  # a rate of 0, not a missing series, for reasons not seen yet
        assert f'presence_worker_status_changes_by_reason_total{{reason="{reason.value}"}}' in text
    assert 'presence_worker_status_changes_total{status="offline"} 1.0' in text


def test_the_fleet_gauges_are_what_fleet_counts_for_the_held_partitions() -> None:
    index = StatusIndex()
    index.update(0, "a", None, "online")
    index.update(0, "b", None, "flapping")
    index.update(1, "c", None, "offline")
    index.update(2, "d", None, "offline")  # a partition this worker does not hold
    metrics = WorkerMetrics()
    metrics.show_fleet(index.counts([0, 1]), recovering=False)
    text = scraped(metrics)
    expected = Counter(online=1, flapping=1, offline=1)
    for category in CATEGORIES:
        line = f'presence_worker_devices{{status="{category}"}} {float(expected[category])}'
        assert line in text
    assert "presence_worker_recovering 0.0" in text
    metrics.show_fleet(Counter(), recovering=True)
    text = scraped(metrics)
    assert "presence_worker_recovering 1.0" in text
    assert 'presence_worker_devices{status="online"} 0.0' in text
