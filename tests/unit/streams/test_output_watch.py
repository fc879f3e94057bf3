"""The worker's Kafka outage lines: writes waiting while none was acknowledged for `stall_s`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from mqtt_presence.streams.metrics import WorkerMetrics
from mqtt_presence.streams.output import WriteWatch


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def outage(
    loop: asyncio.AbstractEventLoop, metrics: WorkerMetrics, seconds: int
) -> tuple[WriteWatch, list[asyncio.Future[None]], float]:
    """A watch that saw a tick a second for `seconds` s while Kafka acknowledged none."""
    watch = WriteWatch.of(5.0, metrics)
    stuck: list[asyncio.Future[None]] = [loop.create_future() for _ in range(seconds)]
    for future in stuck:
        watch.sent(future)
    start = watch.pending[0][0]
    for second in range(seconds):
        watch.check(start + second)
    return watch, stuck, start


def loud_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_writes_that_stall_are_one_outage_line_and_the_first_delivery_ends_it(
    caplog: pytest.LogCaptureFixture, loop: asyncio.AbstractEventLoop
) -> None:
    caplog.set_level(logging.DEBUG, logger="presence.worker")
    metrics = WorkerMetrics()
    watch, stuck, start = outage(loop, metrics, 30)
    assert metrics.outage.labels("Kafka")._value.get() == 1
    for future in stuck:
        future.set_result(None)
    watch.check(start + 31)
    lines = loud_lines(caplog)
    assert len(lines) == 2
    assert lines[0].startswith("Kafka is unreachable (no write acknowledged for 5 s)")
    assert lines[1].startswith("Kafka is back after")
    assert metrics.outage.labels("Kafka")._value.get() == 0


def test_writes_acknowledged_out_of_order_after_an_outage_do_not_announce_a_second_one(
    caplog: pytest.LogCaptureFixture, loop: asyncio.AbstractEventLoop
) -> None:
    # Seen in CI: "Kafka is back after 30.6 s", then at once "Kafka is unreachable" and "back
    # after 0.5 s": ticks go to every partition, and the ones sent during the outage were
    # acknowledged partition by partition, not in the order they were sent.
    caplog.set_level(logging.DEBUG, logger="presence.worker")
    metrics = WorkerMetrics()
    watch, stuck, start = outage(loop, metrics, 30)
    for future in stuck[0::2]:  # one partition's writes get through first
        future.set_result(None)
    watch.check(start + 30.6)
    watch.check(start + 30.61)
    for future in stuck[1::2]:
        future.set_result(None)
    watch.check(start + 31.1)
    assert not watch.pending
    assert [line.split(" (")[0].split(" after")[0] for line in loud_lines(caplog)] == [
        "Kafka is unreachable",
        "Kafka is back",
    ]
    assert metrics.outages.labels("Kafka")._value.get() == 1


def test_a_write_that_waits_long_after_the_last_acknowledgement_is_an_outage(
    loop: asyncio.AbstractEventLoop,
) -> None:
    metrics = WorkerMetrics()
    watch = WriteWatch.of(5.0, metrics)
    first, second = loop.create_future(), loop.create_future()
    watch.sent(first)
    watch.sent(second)
    start = watch.pending[0][0]
    first.set_result(None)
    watch.check(start + 1)
    watch.check(start + 5.5)
    assert metrics.outage.labels("Kafka")._value.get() == 0
    watch.check(start + 6.5)
    assert metrics.outage.labels("Kafka")._value.get() == 1
