"""The worker's Kafka outage lines, from the age of its oldest unacknowledged tick."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streams.metrics import WorkerMetrics
from streams.topology import WriteWatch


def test_writes_that_stall_are_one_outage_line_and_the_first_delivery_ends_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="presence.worker")
    loop = asyncio.new_event_loop()
    try:
        metrics = WorkerMetrics()
        watch = WriteWatch.of(5.0, metrics)
        stuck = [loop.create_future() for _ in range(30)]
        for future in stuck:  # a tick a second while Kafka is away
            watch.sent(future)
        start = watch.pending[0][0]
        for second in range(30):
            watch.check(start + second)
        assert metrics.outage.labels("Kafka")._value.get() == 1
        for future in stuck:
            future.set_result(None)
        watch.check(start + 31)
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 2
    assert lines[0].startswith("Kafka is unreachable (no write acknowledged for 5 s)")
    assert lines[1].startswith("Kafka is back after")
    assert metrics.outage.labels("Kafka")._value.get() == 0
