"""The bridge's loop without brokers: its MQTT and Kafka sides replaced by scripted ones, to
check what it promises when Kafka is slow, fails or comes back, and when MQTT drops.

The end-to-end tests (tests/integration) check the same against real Mosquitto and Kafka; these
check the decisions one turn at a time, which the real brokers cannot be made to time exactly.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mqtt_presence.bridge.app import Bridge
from mqtt_presence.bridge.config import BridgeSettings, load_bridge_settings
from mqtt_presence.bridge.message import MqttMessage
from mqtt_presence.bridge.mqtt_source import Listener
from mqtt_presence.bridge.profiles.sparkplug import (
    REBIRTH_METRIC,
    Payload,
    encode_device_payload,
    encode_payload,
)
from mqtt_presence.core.records import is_progress
from mqtt_presence.settings import ConfigError


@dataclass
class Write:
    """A Kafka write the test completes (kafka-python's future: is_done, exception)."""

    topic: str
    key: bytes
    value: bytes
    is_done: bool = False
    exception: BaseException | None = None
    partition: int | None = None
    headers: Any = None
    callbacks: list[Any] = field(default_factory=list)
    errbacks: list[Any] = field(default_factory=list)

    def succeed(self) -> None:
        self.is_done = True
        for fn in self.callbacks:
            fn("metadata")

    def fail(self, exc: BaseException) -> None:
        self.is_done, self.exception = True, exc
        for fn in self.errbacks:
            fn(exc)

    def add_callback(self, fn: Any) -> None:
        self.callbacks.append(fn)

    def add_errback(self, fn: Any) -> None:
        self.errbacks.append(fn)


@dataclass
class Kafka:
    """Every sink the bridge makes writes here; `refuse` connections fail with OSError."""

    writes: list[Write] = field(default_factory=list)
    sinks: int = 0
    refuse: int = 0
    closed: int = 0

    def sink(self, settings: BridgeSettings) -> Sink:
        if self.refuse:
            self.refuse -= 1
            raise OSError("connection refused")
        self.sinks += 1
        return Sink(self)


@dataclass
class Sink:
    kafka: Kafka
    failure: BaseException | None = None

    def ensure_topics(self) -> None:
        pass

    def send(
        self, topic: str, key: bytes, value: bytes, headers: Any, *, partition: int | None = None
    ) -> Write:
        write = Write(topic, key, value, partition=partition, headers=headers)
        write.add_errback(self._failed)
        self.kafka.writes.append(write)
        return write

    def _failed(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc

    def flush(self, timeout_s: float) -> None:
        pass

    def close(self, timeout_s: float = 10.0) -> None:
        self.kafka.closed += 1


@dataclass
class Mqtt:
    """The broker as the bridge's source sees it: messages to deliver, acknowledgements."""

    inbox: deque[tuple[MqttMessage, int]] = field(default_factory=deque)
    acked: list[int] = field(default_factory=list)
    published: list[tuple[str, bytes]] = field(default_factory=list)
    connects: int = 0
    disconnects: int = 0
    wakes: int = 0
    drop_connection: bool = False
    listener: Listener | None = None

    def publish(self, mid: int, device: str) -> None:
        payload = json.dumps({"status": "online", "session": mid}).encode()
        self.inbox.append((MqttMessage(f"devices/{device}/status", payload, 1_000 + mid), mid))

    def source(self, settings: BridgeSettings, filters: list[str], listener: Listener) -> Source:
        self.listener = listener
        return Source(self)


@dataclass
class Source:
    mqtt: Mqtt
    connected: bool = False
    subscribed: threading.Event = field(default_factory=threading.Event)

    def connect(self) -> None:
        self.mqtt.connects += 1
        self.connected = True

    def loop(self, timeout: float) -> bool:
        if self.mqtt.drop_connection:
            self.mqtt.drop_connection = self.connected = False
            return False
        while self.mqtt.inbox:
            msg, mid = self.mqtt.inbox.popleft()
            assert self.mqtt.listener is not None
            self.mqtt.listener.on_mqtt_message(msg, mid)
        return True

    def flush(self) -> None:
        pass

    def ack(self, mid: int, qos: int) -> None:
        self.mqtt.acked.append(mid)

    def wake(self, *_: object) -> None:
        self.mqtt.wakes += 1

    def close(self) -> None:
        pass

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        *,
        user_properties: dict[str, str] | None = None,
        expiry_s: int | None = None,
    ) -> None:
        self.mqtt.published.append((topic, payload))

    def disconnect(self) -> None:
        self.mqtt.disconnects += 1
        self.connected = False


Make = Callable[..., Bridge]


@pytest.fixture
def make_bridge(tmp_path: Path) -> Make:
    """An opened bridge on `mqtt` and `kafka`, retrying fast, its crash memory under tmp_path."""

    def make(mqtt: Mqtt, kafka: Kafka, **settings: Any) -> Bridge:
        fast = {"reconnect_min_s": 0.001, "reconnect_max_s": 0.01, "state_dir": tmp_path}
        fast["progress_interval_s"] = settings.pop("progress_interval_s", 0)  # see its tests
        b = Bridge(
            load_bridge_settings({}, **fast, **settings), source=mqtt.source, sink=kafka.sink
        )
        assert b.open()
        return b

    return make


def test_acknowledges_in_arrival_order_and_only_what_kafka_has(make_bridge: Make) -> None:
    mqtt, kafka = Mqtt(), Kafka()
    b = make_bridge(mqtt, kafka)
    for mid in (1, 2, 3):
        mqtt.publish(mid, f"cam-{mid}")
    b.turn()
    assert len(kafka.writes) == 3
    kafka.writes[1].succeed()  # Kafka has the second one first
    b.turn()
    assert mqtt.acked == []  # MQTT 5 4.6: PUBACKs in the order the PUBLISHes arrived
    kafka.writes[0].succeed()
    b.turn()
    assert mqtt.acked == [1, 2]
    kafka.writes[2].succeed()
    b.turn()
    assert mqtt.acked == [1, 2, 3]
    assert b.health() == {"mqtt": True, "kafka": True}


def test_a_write_kafka_finished_wakes_the_mqtt_loop_to_acknowledge_it(make_bridge: Make) -> None:
    # A broker with a small in-flight window (HiveMQ CE: 50) stops sending until it gets
    # PUBACKs: waiting out the loop's select() per window cost 50 ms per 50 messages.
    mqtt, kafka = Mqtt(), Kafka()
    b = make_bridge(mqtt, kafka)
    mqtt.publish(1, "cam-1")
    mqtt.publish(2, "cam-2")
    b.turn()
    assert mqtt.wakes == 0
    kafka.writes[0].succeed()  # on kafka-python's I/O thread, in the real thing
    assert mqtt.wakes == 1
    kafka.writes[1].fail(RuntimeError("broker gone"))  # a failure must be seen at once too
    assert mqtt.wakes == 2


def test_a_failed_write_leaves_mqtt_unacknowledged_and_comes_back_through_a_new_producer(
    make_bridge: Make,
) -> None:
    mqtt, kafka = Mqtt(), Kafka()
    b = make_bridge(mqtt, kafka)
    mqtt.publish(1, "cam-1")
    mqtt.publish(2, "cam-2")
    b.turn()
    kafka.writes[1].succeed()
    kafka.writes[0].fail(OSError("not leader"))
    kafka.refuse = 2  # and Kafka stays away for two attempts
    b.turn()
    assert mqtt.acked == []  # the broker keeps both in our session and delivers them again
    assert mqtt.disconnects == 1
    assert (kafka.sinks, kafka.closed, mqtt.connects) == (2, 1, 2)
    assert b.metrics.kafka_errors._value.get() == 1
    assert b.metrics.redelivered_unacked._value.get() == 2
    assert b.metrics.outages.labels("Kafka")._value.get() == 1  # down, then back
    mqtt.publish(1, "cam-1")  # the redelivery, on the new connection
    b.turn()
    kafka.writes[-1].succeed()
    b.turn()
    assert mqtt.acked == [1]


def test_a_lost_mqtt_connection_forgets_the_window_and_reconnects(make_bridge: Make) -> None:
    mqtt, kafka = Mqtt(), Kafka()
    b = make_bridge(mqtt, kafka)
    mqtt.publish(7, "cam-7")
    b.turn()
    mqtt.drop_connection = True
    b.turn()
    kafka.writes[0].succeed()  # too late: packet id 7 means nothing on the new connection
    b.turn()
    assert mqtt.acked == []
    assert mqtt.connects == 2
    assert b.metrics.redelivered_unacked._value.get() == 1


def test_writes_that_stall_are_an_outage_before_any_write_fails(make_bridge: Make) -> None:
    mqtt, kafka = Mqtt(), Kafka()
    b = make_bridge(mqtt, kafka, kafka_stall_s=0.05)
    mqtt.publish(1, "cam-1")
    b.turn()
    threading.Event().wait(0.1)
    b.turn()
    assert b.metrics.outage.labels("Kafka")._value.get() == 1
    assert b.metrics.kafka_errors._value.get() == 0
    kafka.writes[0].succeed()
    b.turn()
    assert b.metrics.outage.labels("Kafka")._value.get() == 0
    assert mqtt.acked == [1]


def test_a_message_no_profile_reads_goes_to_the_dead_letter_topic_and_is_acknowledged(
    make_bridge: Make,
) -> None:
    mqtt, kafka = Mqtt(), Kafka()
    b = make_bridge(mqtt, kafka)
    mqtt.inbox.append((MqttMessage("devices/cam-1/status", b"\xff\xfe", 1_000), 1))
    b.turn()
    assert [w.topic for w in kafka.writes] == [b.settings.kafka.dlq_topic]
    kafka.writes[0].succeed()
    b.turn()
    assert mqtt.acked == [1]  # bad input is kept, and does not stop the flow


def test_telemetry_is_one_record_per_interval_and_every_message_is_acknowledged(
    make_bridge: Make,
) -> None:
    mqtt, kafka = Mqtt(), Kafka()
    profiles = [{"kind": "json"}, {"kind": "activity", "topic": "tele/{device}/#"}]
    b = make_bridge(mqtt, kafka, profiles=profiles, coalesce_activity_s=60)
    for mid in range(1, 11):  # ten telemetry messages within the minute
        mqtt.inbox.append((MqttMessage("tele/cam-1/SENSOR", b"{}", 1_000 + mid), mid))
    mqtt.inbox.append((MqttMessage("devices/cam-1/status", b'{"status":"offline"}', 2_000), 11))
    mqtt.inbox.append((MqttMessage("tele/cam-1/SENSOR", b"{}", 2_001), 12))  # alive after all
    b.turn()
    assert [(w.topic, json.loads(w.value)["kind"]) for w in kafka.writes] == [
        (b.settings.kafka.raw_topic, "activity"),
        (b.settings.kafka.raw_topic, "will"),
        (b.settings.kafka.raw_topic, "activity"),
    ]
    for write in kafka.writes:
        write.succeed()
    b.turn()
    assert mqtt.acked == list(range(1, 13))  # in arrival order, the coalesced ones included
    assert b.metrics.coalesced._value.get() == 9
    assert b.metrics.produced._value.get() == 3


def test_a_sparkplug_node_death_is_acknowledged_once_every_device_will_is_in_kafka(
    make_bridge: Make,
) -> None:
    mqtt, kafka = Mqtt(), Kafka()
    b = make_bridge(mqtt, kafka, profiles=[{"kind": "sparkplug"}])
    messages = [
        ("spBv1.0/plant/NBIRTH/edge-1", encode_payload(1, 1_000, seq=0)),
        ("spBv1.0/plant/DBIRTH/edge-1/pump-1", encode_device_payload(1_001)),
        ("spBv1.0/plant/DBIRTH/edge-1/pump-2", encode_device_payload(1_002)),
        ("spBv1.0/plant/NDEATH/edge-1", encode_payload(1, 1_003)),
    ]
    for mid, (topic, payload) in enumerate(messages, start=1):
        mqtt.inbox.append((MqttMessage(topic, payload, 1_000 + mid), mid))
    b.turn()
    assert [w.key for w in kafka.writes] == [
        b"plant/edge-1",
        b"plant/edge-1/pump-1",
        b"plant/edge-1/pump-2",
        b"plant/edge-1",  # the NDEATH, then its devices' wills
        b"plant/edge-1/pump-1",
        b"plant/edge-1/pump-2",
    ]
    for write in kafka.writes[:5]:
        write.succeed()
    b.turn()
    assert mqtt.acked == [1, 2, 3]  # the NDEATH waits for its last device's will
    kafka.writes[5].succeed()
    b.turn()
    assert mqtt.acked == [1, 2, 3, 4]
    assert mqtt.published == []  # the node was seen born: no rebirth asked


def test_data_from_a_sparkplug_node_never_seen_born_asks_it_to_rebirth(make_bridge: Make) -> None:
    mqtt, kafka = Mqtt(), Kafka()
    b = make_bridge(mqtt, kafka, profiles=[{"kind": "sparkplug"}])
    mqtt.inbox.append(
        (MqttMessage("spBv1.0/plant/DDATA/edge-7/pump", encode_device_payload(5), 5), 1)
    )
    b.turn()
    ((topic, payload),) = mqtt.published
    assert topic == "spBv1.0/plant/NCMD/edge-7"
    request = Payload()
    request.ParseFromString(payload)
    assert [(m.name, m.boolean_value) for m in request.metrics] == [(REBIRTH_METRIC, True)]
    assert b.metrics.rebirth_requests._value.get() == 1
    assert len(kafka.writes) == 1  # its data still counts as a sign of life


def test_sparkplug_through_a_shared_subscription_is_refused() -> None:
    with pytest.raises(ConfigError, match="shared subscription splits them"):
        load_bridge_settings({}, profiles=[{"kind": "sparkplug"}], shared_group="g")


def test_a_progress_probe_comes_back_in_turn_and_becomes_a_record_in_every_raw_partition(
    make_bridge: Make,
) -> None:
    """The bridge's queue at the broker, measured (see bridge/progress.py): a probe on its own
    topic (never a device's: a probe there would be a device to other subscribers) comes back
    behind what the broker queued before it; it is acknowledged in its turn (MQTT 5.0, 4.6:
    PUBACKs in the order of the PUBLISHes), counts as no device message, and its send time is
    written to every raw partition after the device records received before it."""
    mqtt, kafka = Mqtt(), Kafka()
    b = make_bridge(mqtt, kafka, progress_interval_s=0.001, shared_group="plant")
    b.turn()
    ((topic, payload),) = mqtt.published
    assert topic == "mqtt-presence/probe/plant"  # one topic for the whole shared group
    mqtt.publish(1, "cam")  # queued before the probe
    probe = MqttMessage(topic, payload, 2_000, user_properties={"presence-probe": "1"})
    mqtt.inbox.append((probe, 2))
    b.turn()
    assert mqtt.acked == []  # the device's write is not done: nothing behind it goes either
    (device_write,) = [w for w in kafka.writes if w.headers is None or not is_progress(w.headers)]
    device_write.succeed()
    time.sleep(0.002)
    b.turn()
    assert mqtt.acked == [1, 2]
    progress = [w for w in kafka.writes if w.headers is not None and is_progress(w.headers)]
    partitions = b.settings.kafka.partitions
    assert {w.partition for w in progress[:partitions]} == set(range(partitions))
    assert json.loads(progress[0].value) == {
        "bridge": b.settings.client_id,
        "watermark": int(payload),
    }
    assert kafka.writes.index(device_write) < kafka.writes.index(progress[0])
    assert b.metrics.received._value.get() == 1  # the probe is not a device's message
    assert b.metrics.acknowledged._value.get() == 1


def test_no_progress_record_before_a_probe_came_back_and_none_when_switched_off(
    make_bridge: Make,
) -> None:
    mqtt, kafka = Mqtt(), Kafka()
    b = make_bridge(mqtt, kafka, progress_interval_s=0.001)
    for _ in range(3):
        time.sleep(0.002)
        b.turn()
    assert [t for t, _ in mqtt.published] == ["mqtt-presence/probe/presence-bridge"] * 3
    assert kafka.writes == []  # no watermark known yet: nothing to say
    off_mqtt, off_kafka = Mqtt(), Kafka()
    off = make_bridge(off_mqtt, off_kafka, progress_interval_s=0)
    off.turn()
    assert off_mqtt.published == []
    assert off_kafka.writes == []


def progress_written(make_bridge: Make) -> tuple[Bridge, Mqtt, Kafka]:
    """A bridge with progress records on whose probe came back behind message 2 (a device's,
    its write pending): the watermark is written to every raw partition."""
    mqtt, kafka = Mqtt(), Kafka()
    b = make_bridge(mqtt, kafka, progress_interval_s=0.001)
    b.turn()
    ((topic, payload),) = mqtt.published
    probe = MqttMessage(topic, payload, 2_000, user_properties={"presence-probe": "1"})
    mqtt.inbox.append((probe, 1))
    mqtt.publish(2, "cam")
    b.turn()
    time.sleep(0.002)
    b.turn()
    return b, mqtt, kafka


def device_and_progress_writes(kafka: Kafka) -> tuple[Write, list[Write]]:
    progress = [w for w in kafka.writes if w.headers is not None and is_progress(w.headers)]
    assert progress, "the probe came back: its watermark is written"
    (device,) = [w for w in kafka.writes if w not in progress]
    return device, progress


def test_a_failed_progress_record_puts_the_bridge_on_a_new_producer_like_any_failed_write(
    make_bridge: Make,
) -> None:
    # In kafka-python's idempotent producer a batch that expires after it was sent resets the
    # producer's sequence state (its sender's `reset_producer_id`) under every partition, the
    # device writes' too. A CI run once saw the bridge stop acknowledging after a 30 s outage
    # in which one record had expired, with progress records on and no one looking at theirs.
    b, mqtt, kafka = progress_written(make_bridge)
    _, progress = device_and_progress_writes(kafka)
    progress[0].fail(RuntimeError("Expiring 1 record(s): 30000 ms has passed"))
    assert mqtt.wakes >= 1  # the loop hears of it at once
    b.turn()
    assert kafka.sinks == 2
    assert kafka.closed == 1
    assert mqtt.disconnects == 1
    assert mqtt.connects == 2
    assert 2 not in mqtt.acked
    assert b.metrics.kafka_errors._value.get() == 1
    progress[1].fail(RuntimeError("late, from the producer already replaced"))
    b.turn()
    assert kafka.sinks == 2  # not a second recovery


def test_a_write_neither_delivered_nor_failed_past_its_delivery_timeout_gets_a_new_producer(
    make_bridge: Make,
) -> None:
    # kafka-python promises every send ends, one way or the other, within delivery_timeout_ms;
    # a producer that breaks that promise would otherwise hold the session's messages forever.
    mqtt, kafka = Mqtt(), Kafka()
    b = make_bridge(mqtt, kafka, kafka_stall_s=0.01)
    assert b.wedged_after_s == b.settings.delivery_timeout_ms / 1000 + 15
    b.wedged_after_s = 0.05
    mqtt.publish(1, "cam-1")
    b.turn()
    time.sleep(0.02)
    b.turn()
    assert kafka.sinks == 1  # an outage so far, said, and waited out
    assert b.metrics.outage.labels("Kafka")._value.get() == 1
    time.sleep(0.05)
    b.turn()
    assert kafka.sinks == 2
    assert mqtt.connects == 2
    assert mqtt.acked == []
    mqtt.publish(1, "cam-1")  # the broker delivers it again to the session
    b.turn()
    kafka.writes[-1].succeed()
    b.turn()
    assert mqtt.acked == [1]


def test_a_progress_record_that_failed_in_the_batch_of_a_device_write_is_one_recovery(
    make_bridge: Make,
) -> None:
    # kafka-python fails every record of an expired batch, one callback after the other, on its
    # own thread: the loop may already be replacing the producer for the device write when the
    # progress record's failure arrives (CI saw two recoveries, and two outage lines, for one).
    b, _, kafka = progress_written(make_bridge)
    device, progress = device_and_progress_writes(kafka)
    expired = RuntimeError("Expiring 2 record(s): 30000 ms has passed")
    device.fail(expired)
    new_sink = b._new_sink

    def sink_while_the_old_batch_fails(settings: BridgeSettings) -> Any:
        progress[0].fail(expired)  # kafka-python's thread, during the recovery
        return new_sink(settings)

    b._new_sink = sink_while_the_old_batch_fails
    b.turn()
    assert kafka.sinks == 2
    b._new_sink = new_sink
    b.turn()
    b.turn()
    assert kafka.sinks == 2  # one failure, one new producer
    assert b.metrics.kafka_errors._value.get() == 1
