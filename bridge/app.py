"""The bridge's run loop: MQTT in, Kafka out, acknowledge only what Kafka has.

One thread drives paho's network loop and hands each message to kafka-python; the in-order window
keeps each QoS 1 message's pending write, and after every turn of the loop the prefix whose writes
are done is acknowledged (kafka-python's I/O thread only completes the futures). When
Kafka fails a write, the bridge stops acknowledging, drops its MQTT connection (the broker keeps
every unacknowledged message in our persistent session) and waits for Kafka before it reconnects:
nothing is buffered without bound and nothing is dropped; what was written but not acknowledged
is delivered again and shows up as a duplicate (counted downstream, harmless there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
from kafka.errors import KafkaConfigurationError, KafkaError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_when_event_set,
    wait_exponential_jitter,
)

from mqtt_presence.bridge.ack_window import NOTHING_TO_WRITE, PROBE, AckWindow, AllWritten
from mqtt_presence.bridge.coalesce import ActivityCoalescer
from mqtt_presence.bridge.config import BridgeSettings
from mqtt_presence.bridge.errors import BridgeError, ConfigurationError
from mqtt_presence.bridge.kafka_sink import KafkaSink
from mqtt_presence.bridge.message import MqttMessage, dead_letter
from mqtt_presence.bridge.metrics import BridgeMetrics, serve
from mqtt_presence.bridge.mqtt_source import Listener, MqttSource
from mqtt_presence.bridge.poison import CrashMemory
from mqtt_presence.bridge.profiles import build, subscriptions
from mqtt_presence.bridge.profiles.sparkplug import SparkplugProfile, rebirth_payload
from mqtt_presence.bridge.progress import PROBE_EXPIRY_S, PROBE_PROPERTY, ProgressProbe
from mqtt_presence.bridge.sparkplug_host import SparkplugHost
from mqtt_presence.bridge.translate import Translator
from mqtt_presence.core import ConnectionEvent
from mqtt_presence.core.records import BRIDGE_HEADER, PROGRESS_HEADER, DeadLetterRecord
from mqtt_presence.outages import Outages

log = logging.getLogger("presence.bridge")
Written = tuple[str, bytes, bytes, list[tuple[str, bytes]]]  # Kafka topic, key, value, headers
_encode = msgspec.json.Encoder().encode
WEDGE_MARGIN_S = 15.0  # past the delivery timeout, before a silent producer is called stuck


class Source(Protocol):
    """The MQTT side (`MqttSource`): it calls the bridge back (`Listener`) from `loop`."""

    connected: bool
    subscribed: threading.Event

    def connect(self) -> None: ...
    def loop(self, timeout: float) -> bool: ...
    def flush(self) -> Any: ...
    def ack(self, mid: int, qos: int) -> None: ...
    def wake(self, *_: object) -> None: ...  # from any thread: end the current loop() wait
    def close(self) -> None: ...
    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        *,
        user_properties: dict[str, str] | None = None,
        expiry_s: int | None = None,
    ) -> None: ...
    def disconnect(self) -> None: ...


class Sink(Protocol):
    """The Kafka side (`KafkaSink`)."""

    failure: BaseException | None  # the first write it failed, of any record

    def ensure_topics(self) -> None: ...
    def send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        *,
        partition: int | None = None,
    ) -> Any: ...
    def flush(self, timeout_s: float) -> None: ...
    def close(self, timeout_s: float = 10.0) -> None: ...


SourceFactory = Callable[[BridgeSettings, list[str], Listener], Source]
SinkFactory = Callable[[BridgeSettings], Sink]


def _worth_retrying(exc: BaseException) -> bool:
    """Unreachable brokers are retried; a configuration Kafka refuses is not."""
    return isinstance(exc, OSError | KafkaError) and not isinstance(exc, KafkaConfigurationError)


def kafka_headers(msg: MqttMessage) -> list[tuple[str, bytes]]:
    headers = [
        ("mqtt.topic", msg.topic.encode()),
        ("mqtt.retain", b"1" if msg.retain else b"0"),
        ("mqtt.dup", b"1" if msg.dup else b"0"),
    ]
    headers += [(f"mqtt.user.{k}", v.encode()) for k, v in msg.user_properties.items()]
    return headers


class Bridge:
    """`source` and `sink` make the MQTT and Kafka sides (paho and kafka-python by default; the
    unit tests of the loop's recovery give their own)."""

    def __init__(
        self,
        settings: BridgeSettings,
        metrics: BridgeMetrics | None = None,
        *,
        source: SourceFactory = MqttSource,
        sink: SinkFactory = KafkaSink,
    ) -> None:
        self.settings = settings
        profiles = [build(p) for p in settings.profiles]
        self.translator = Translator(profiles, settings.max_payload_bytes)
        filters = list(dict.fromkeys(f for p in profiles for f in subscriptions(p)))
        self.metrics = metrics or BridgeMetrics()
        self.window = AckWindow()
        self.progress = ProgressProbe(
            settings.client_id, settings.shared_group, settings.progress_interval_s
        )
        own = [self.progress.topic] if self.progress.topic is not None else []
        self.source = source(settings, [*filters, *own], self)
        self._new_sink = sink
        self.crash_memory = CrashMemory(settings.crash_memory_file)
        self.coalescer = ActivityCoalescer(int(settings.coalesce_activity_s * 1000))
        sparkplug = [p for p in profiles if isinstance(p, SparkplugProfile)]
        self.sparkplug = sparkplug[0] if sparkplug else None
        self.host = SparkplugHost(int(settings.sparkplug_rebirth_interval_s * 1000))
        self.outages = Outages(
            self.metrics.outage,
            self.metrics.outages,
            log,
            "nothing is acknowledged or lost meanwhile: the MQTT broker keeps the messages "
            "in our session",
        )
        self._progress_at = time.monotonic()  # the last time Kafka acknowledged, or idle
        # Every write ends, delivered or failed, within delivery_timeout_ms: one that has not
        # by this long after is a producer stuck in its own state (see `_settle`).
        self.wedged_after_s = settings.delivery_timeout_ms / 1000 + WEDGE_MARGIN_S
        self.sink: Sink | None = None
        self.http_port: int | None = None
        self._stop = threading.Event()
        self._kafka_error: Exception | None = None
        self._draining = False

    # --- control ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish: flush Kafka, acknowledge what it has, disconnect."""
        self._stop.set()

    def start_in_thread(self, timeout: float = 30.0) -> threading.Thread:
        """Run the bridge in a daemon thread; return once the broker granted the subscriptions."""
        thread = threading.Thread(target=self.run, name="bridge", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not self.source.subscribed.wait(0.05):
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise BridgeError(
                    f"the bridge did not subscribe within {timeout:.0f} s (see its log)"
                )
        return thread

    def health(self) -> dict[str, bool]:
        # Kafka is healthy while it takes our writes: the producer keeps no idle connection to
        # probe, and a failed write is what takes the bridge off it (see _settle).
        return {
            "mqtt": self.source.connected,
            "kafka": self.sink is not None and self._kafka_error is None,
        }

    def run(self) -> None:
        server = None
        if self.settings.http_port is not None:
            server = serve(
                self.metrics, self.health, self.settings.http_host, self.settings.http_port
            )
            self.http_port = server.server_port
            log.info("metrics and health on http://%s:%d/", self.settings.http_host, self.http_port)
        try:
            if not self.open():
                return
            while not self._stop.is_set():
                self.turn()
            self._shutdown()
        finally:
            if self.sink is not None:  # a fatal error: no acknowledgements, just let go
                self.sink.close(timeout_s=1)
            if server is not None:
                server.shutdown()
            self.crash_memory.close()
            self.source.close()

    def open(self) -> bool:
        """Connect to Kafka, then to MQTT (retrying both); False when stopped meanwhile."""
        self.sink = self._connect_kafka()
        if self.sink is None:
            return False
        self._connect_mqtt()
        return True

    def turn(self, timeout_s: float = 0.05) -> None:
        """One turn of the loop: read MQTT, acknowledge what Kafka has, recover from a failed
        write (leave MQTT, reconnect Kafka, come back) or a lost MQTT connection."""
        alive = self.source.loop(timeout_s)
        self._settle()
        self._report_progress()
        if self._kafka_error is not None:
            self._recover_from_kafka_failure()
        elif not alive:
            self._reconnect_mqtt()

    # --- MQTT listener ----------------------------------------------------------------------------

    def on_mqtt_connected(self, session_present: bool) -> None:
        self.metrics.connected.labels("mqtt").set(1)
        self.outages.up("MQTT")
        log.info(
            "connected to MQTT %s as %r (session %s)",
            self.settings.mqtt_url,
            self.settings.client_id,
            "resumed" if session_present else "new",
        )

    def on_mqtt_disconnected(self, reason: str) -> None:
        self.metrics.connected.labels("mqtt").set(0)
        self.outages.down("MQTT", f"connection lost: {reason}")

    def on_mqtt_message(self, msg: MqttMessage, mid: int) -> None:
        if self._draining or self.sink is None or self._kafka_error is not None:
            return  # not acknowledged: the broker delivers it again to our session
        if ProgressProbe.is_probe(msg):
            self.progress.observe(msg)
            if msg.qos > 0:
                self.window.add(mid, PROBE)  # acknowledged in its turn, like the others
            return
        self.metrics.received.inc()
        if self.crash_memory.is_poison(msg):
            records = [
                self._dead_letter_of(
                    msg,
                    "poison",
                    "the bridge process ended while handling this message on its previous "
                    "deliveries; passed on untouched",
                )
            ]
        else:
            self.crash_memory.begin(msg)
            try:
                records = self._records_of(msg)
            except Exception as exc:  # a bug of ours: this message must not stop the others
                log.exception("handling a message from %r failed", msg.topic)
                records = [
                    self._dead_letter_of(msg, "internal_error", f"{type(exc).__name__}: {exc}")
                ]
            self.crash_memory.end(msg)
            if not records:  # activity already said: acknowledged in its turn, not written
                self.metrics.coalesced.inc()
                if msg.qos > 0:
                    self.window.add(mid, NOTHING_TO_WRITE)
                return
        try:
            writes = [self.sink.send(*record) for record in records]
        except KafkaError as exc:  # e.g. the buffer stayed full for max_block_ms
            self.metrics.kafka_errors.inc()
            self._kafka_error = exc
            return
        pending = writes[0] if len(writes) == 1 else AllWritten(writes)
        if msg.qos > 0:
            if not self.window:
                self._progress_at = time.monotonic()  # from idle: the clock starts now
            self.window.add(mid, pending)
            for write in writes:  # done: the loop wakes and acknowledges it at once
                write.add_callback(self.source.wake)
                write.add_errback(self.source.wake)
        else:  # QoS 0: nothing to acknowledge, and nothing the broker could deliver again
            for write in writes:
                write.add_callback(lambda _metadata: self.metrics.produced.inc())
                write.add_errback(lambda exc: log.error("QoS 0 message lost by Kafka: %s", exc))

    def _records_of(self, msg: MqttMessage) -> list[Written]:
        """What goes to Kafka for a message: its raw event (and, from a Sparkplug host, the
        wills of a dead node's devices), its dead letter, or nothing (an activity its device
        already reported within `coalesce_activity_s`)."""
        record = self.translator.translate(msg)
        if not isinstance(record, ConnectionEvent):
            self._dead_letter(record)
            return [
                (
                    self.settings.kafka.dlq_topic,
                    msg.topic.encode(),
                    _encode(record),
                    kafka_headers(msg),
                )
            ]
        events = [record]
        if record.source == "sparkplug" and self.sparkplug is not None:
            events = self._as_sparkplug_host(msg, record)
        headers = [*kafka_headers(msg), (BRIDGE_HEADER, self.settings.client_id.encode())]
        raw = self.settings.kafka.raw_topic
        return [
            (raw, e.device.encode(), _encode(e), headers) for e in events if self.coalescer.admit(e)
        ]

    def _as_sparkplug_host(self, msg: MqttMessage, event: ConnectionEvent) -> list[ConnectionEvent]:
        assert self.sparkplug is not None
        parts = self.sparkplug.parts(msg.topic)
        if parts is None:
            return [event]
        answer = self.host.observe(event, parts, self.sparkplug.node_id(parts))
        if answer.rebirth is not None:
            topic = self.sparkplug.command_topic(answer.rebirth)
            log.info(
                "asking Sparkplug edge node %r to rebirth (%s)", answer.rebirth.edge_node, topic
            )
            self.metrics.rebirth_requests.inc()
            self.source.publish(topic, rebirth_payload(time.time_ns() // 1_000_000))
        if len(answer.events) > 1:
            log.info(
                "Sparkplug %s of %r: %d device(s) offline with it",
                parts.message_type,
                event.device,
                len(answer.events) - 1,
            )
        return answer.events

    def _dead_letter_of(self, msg: MqttMessage, reason: str, detail: str) -> Written:
        record = dead_letter(msg, reason, detail)
        self._dead_letter(record)
        safe_topic = msg.topic.encode("utf-8", errors="replace")
        return self.settings.kafka.dlq_topic, safe_topic, _encode(record), []

    def _dead_letter(self, record: DeadLetterRecord) -> None:
        self.metrics.dead_letters.labels(record.reason).inc()
        log.warning("dead letter (%s) from %r: %s", record.reason, record.topic, record.detail)

    # --- the loop's work --------------------------------------------------------------------------

    def _settle(self) -> None:
        """Acknowledge, in arrival order, every message whose Kafka write is done."""
        released, error = self.window.release()
        for mid in released:
            self.source.ack(mid, 1)
        now = time.monotonic()
        if released:
            messages = len(released) - self.window.take_released_probes()
            self.metrics.produced.inc(messages - self.window.take_released_unwritten())
            self.metrics.acknowledged.inc(messages)
            self._progress_at = now
            self.outages.up("Kafka")
        elif self.window:
            silent = now - self._progress_at
            if silent > self.settings.kafka_stall_s:
                # kafka-python retries on its own and says nothing we can act on: a write that
                # waits this long is an outage for the operator, before any write fails
                # (presence_bridge_outage shows it; kafka_errors counts only failed writes).
                self.outages.down(
                    "Kafka", f"no write acknowledged for {self.settings.kafka_stall_s:.0f} s"
                )
            if silent > self.wedged_after_s and error is None:
                # Neither delivered nor failed past the delivery timeout: kafka-python stuck in
                # its idempotence state (seen once, after a 30 s outage in which a batch
                # expired). A new producer and the broker's redelivery lose nothing.
                error = KafkaError(
                    f"no write answered for {silent:.0f} s, past the producer's delivery "
                    f"timeout ({self.settings.delivery_timeout_ms} ms)"
                )
        if error is None and self.sink is not None and self.sink.failure is not None:
            # a write no MQTT message waits on (a progress record) failed: a failed producer
            # all the same (a replaced one's late failures stay with it)
            error = self.sink.failure
        if error is not None and self._kafka_error is None:
            self.metrics.kafka_errors.inc()
            self._kafka_error = error if isinstance(error, Exception) else KafkaError(str(error))
        self.metrics.in_flight.set(len(self.window))

    def _report_progress(self) -> None:
        """Publish a progress probe and write the watermark to every raw partition, each when
        due (see `progress`)."""
        if self.sink is None or self._kafka_error is not None or self._draining:
            return
        now = time.monotonic()
        if self.source.connected and self.progress.probe_due(now):
            assert self.progress.topic is not None
            self.source.publish(
                self.progress.topic,
                ProgressProbe.probe_payload(time.time_ns() // 1_000_000),
                qos=1,
                user_properties={PROBE_PROPERTY: "1"},
                expiry_s=PROBE_EXPIRY_S,
            )
        record = self.progress.report_due(now)
        if record is None:
            return
        headers = [(PROGRESS_HEADER, self.settings.client_id.encode())]
        raw = self.settings.kafka.raw_topic
        try:
            for partition in range(self.settings.kafka.partitions):
                write = self.sink.send(raw, b"", record, headers, partition=partition)
                write.add_errback(self.source.wake)  # a failure: the sink's, seen in `_settle`
        except KafkaError as exc:  # the device path finds out and recovers; this can wait
            log.debug("progress record not written: %s", exc)

    def _retrying(self, broker: str) -> Retrying:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.outages.down(broker, exc)  # one line per outage; the retries at DEBUG
            log.debug(
                "%s: %s; retrying in %.1f s",
                broker,
                exc,
                state.next_action.sleep if state.next_action else 0,
            )

        return Retrying(
            wait=wait_exponential_jitter(
                multiplier=self.settings.reconnect_min_s, max=self.settings.reconnect_max_s
            ),
            retry=retry_if_exception(_worth_retrying),
            stop=stop_when_event_set(self._stop),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=False,
            retry_error_callback=lambda _state: None,
        )

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)  # a stop request ends the wait at once

    def _connect_kafka(self) -> Sink | None:
        try:
            return self._connect_kafka_retrying()
        except KafkaConfigurationError as exc:
            raise ConfigurationError(f"Kafka producer settings refused: {exc}") from exc

    def _connect_kafka_retrying(self) -> Sink | None:
        for attempt in self._retrying("Kafka"):
            with attempt:
                sink = self._new_sink(self.settings)
                try:
                    sink.ensure_topics()
                except BaseException:
                    sink.close(timeout_s=1)  # its I/O thread must not outlive the attempt
                    raise
                self.metrics.connected.labels("kafka").set(1)
                log.info("connected to Kafka %s", self.settings.kafka.bootstrap)
                self._progress_at = time.monotonic()
                self.outages.up("Kafka")
                return sink
        return None

    def _connect_mqtt(self) -> None:
        for attempt in self._retrying("MQTT"):
            with attempt:
                self.source.connect()
                return

    def _reconnect_mqtt(self) -> None:
        dropped = self.window.reset()
        self.metrics.redelivered_unacked.inc(dropped)
        self.metrics.reconnects.labels("mqtt").inc()
        self.metrics.connected.labels("mqtt").set(0)
        self._connect_mqtt()

    def _recover_from_kafka_failure(self) -> None:
        self.outages.down("Kafka", f"a write failed: {self._kafka_error}")
        self.metrics.connected.labels("kafka").set(0)
        self.source.disconnect()
        dropped = self.window.reset()
        self.metrics.redelivered_unacked.inc(dropped)
        if self.sink is not None:
            self.sink.close(timeout_s=0)
        self.sink = None
        self._kafka_error = None
        self.metrics.reconnects.labels("kafka").inc()
        self.sink = self._connect_kafka()
        if self.sink is not None:
            self._connect_mqtt()

    def _shutdown(self) -> None:
        log.info("stopping: flushing Kafka and acknowledging what it has")
        self._draining = True
        if self.sink is not None:
            try:
                self.sink.flush(timeout_s=10)
            except KafkaError as exc:
                log.warning("Kafka flush incomplete (%s): those messages stay unacknowledged", exc)
            self._settle()
            self.source.flush()  # the PUBACKs go out before the DISCONNECT
        self.source.disconnect()
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        log.info("stopped; %d messages left unacknowledged for redelivery", len(self.window))
