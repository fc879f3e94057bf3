"""Outage lines and library noise, with a clock we move by hand."""

from __future__ import annotations

import logging

import pytest

from mqtt_presence.bridge.metrics import BridgeMetrics
from mqtt_presence.outages import Outages
from mqtt_presence.quiet import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_when_a_broker_goes_one_when_it_is_back_and_a_metric_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="presence.bridge")
    clock, metrics = Clock(), BridgeMetrics()
    outages = Outages(
        metrics.outage,
        metrics.outages,
        logging.getLogger("presence.bridge"),
        "nothing is acknowledged or lost meanwhile: the MQTT broker keeps the messages in our "
        "session",
        clock,
    )
    outages.up("Kafka")  # not down: nothing to say
    for attempt in range(50):  # every retry of a 30 s outage
        outages.down("Kafka", f"connection refused ({attempt})")
        clock.now += 0.6
    assert metrics.outage.labels("Kafka")._value.get() == 1
    outages.up("Kafka")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "Kafka is unreachable (connection refused (0)); nothing is acknowledged or lost "
        "meanwhile: the MQTT broker keeps the messages in our session",
        "Kafka is back after 30.0 s",
    ]
    assert metrics.outage.labels("Kafka")._value.get() == 0
    assert metrics.outages.labels("Kafka")._value.get() == 1


def test_library_lines_pass_once_a_period_with_a_count_of_those_held_back() -> None:
    clock = Clock()
    limit = RateLimit(60.0, clock=clock)

    def record(name: str, msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, "x", 1, msg, args, None)

    assert limit.filter(record("kafka.net.manager", "Connection failed: %s", "ECONNREFUSED"))
    held = [
        limit.filter(record("kafka.net.manager", "Connection failed: %s", i)) for i in range(99)
    ]
    assert not any(held)
    assert limit.filter(record("aiokafka.conn", "other"))  # another message passes
    assert limit.filter(record("presence.bridge", "ours"))  # ours are never limited
    clock.now += 61
    later = record("kafka.net.manager", "Connection failed: %s", "ECONNREFUSED")
    assert limit.filter(later)
    assert later.getMessage() == "Connection failed: ECONNREFUSED (99 more like this held back)"
