"""Bridge throughput and latency, side by side with the limits of the same machine.

    python -m bench.bridge_throughput [--messages 100000] [--latency-rate 1000] [--home DIR]
                                      [--broker mosquitto|hivemq|rabbitmq] [--linger-ms MS]
                                      [--telemetry-per-status 10]

Starts its own local stack (or uses the one in --home), then measures in one run:

1. drain: N lifecycle messages (~100-byte JSON births and wills, a reconnect storm) are queued in
   the MQTT broker for a persistent QoS 1 session first; then the reader connects and we time
   how fast it takes them all:
   (a) a bare paho subscriber that only counts and acknowledges at once (the MQTT ceiling);
   (b) the bridge: every message translated, written to Kafka (acks=all, idempotent) and only
       then acknowledged; at the end every message is checked to be in Kafka.
2. (c) kafka-python's own producer rate for the same records on this machine (the Kafka ceiling
   for a Python producer with the bridge's settings).
3. latency: messages published at a steady rate; publish time (in the payload) to the broker's
   append time in Kafka (the raw topic uses LogAppendTime), median and p99.
4. (d) with `--telemetry-per-status K`: the bridge draining N messages of which K in K + 1 are
   telemetry (read by an `activity` profile and coalesced to one record per device per second),
   beside (a): messages/s in, records out.

Prints messages/s, the bridge's ratio to (a) and to (c), its CPU use, and the latencies.
"""

from __future__ import annotations

import argparse
import json
import resource
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from bench.common import (
    Figures,
    add_common_args,
    bench_stack,
    connect_persistent,
    fast_publisher,
    kafka_of,
    mqtt_client,
    p50_p99,
    run_bench,
    stack_config,
)
from mqtt_presence.bridge.app import Bridge
from mqtt_presence.bridge.config import load_bridge_settings
from mqtt_presence.kafka_topics import client_options, read_from_beginning
from mqtt_presence.stack import StackInfo


def payload(i: int, ts_ns: int | None = None) -> bytes:
    status = "online" if i % 2 == 0 else "offline"
    body = {
        "status": status,
        "session": i // 2,
        "ts": ts_ns or time.time_ns() // 1_000_000,
        "fw": "cam-fw-2.14.3",
        "seq": i,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def persistent_session(info: StackInfo, client_id: str, topic_filter: str) -> None:
    """Create a persistent QoS 1 session with a subscription, then leave: the broker queues."""
    c = mqtt_client(info, client_id)
    connect_persistent(info, c, resume=False)
    c.loop_start()
    c.subscribe(topic_filter, qos=1)
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()


TELEMETRY = b'{"Time":"2024-01-01T00:05:00","ENERGY":{"Power":12,"Voltage":230}}'


def publish_burst(
    info: StackInfo, prefix: str, n: int, devices: int = 10_000, telemetry: int = 0
) -> float:
    """N messages; with `telemetry` K, each device's status message is followed by K telemetry
    messages of the same device on `<prefix>/<device>/SENSOR`."""

    def message(i: int) -> tuple[str, bytes]:
        status, rest = divmod(i, telemetry + 1)
        device = f"dev-{status % devices:05d}"
        if rest == 0:
            return f"{prefix}/{device}/status", payload(status)
        return f"{prefix}/{device}/SENSOR", TELEMETRY

    c = fast_publisher(info)
    start = time.perf_counter()
    for chunk in range(0, n, 5_000):  # wait per chunk: paho's own queue stays small
        infos = [c.publish(*message(i), qos=1) for i in range(chunk, min(n, chunk + 5_000))]
        for inf in infos:
            inf.wait_for_publish(timeout=120)
    elapsed = time.perf_counter() - start
    c.disconnect()
    c.loop_stop()
    return n / elapsed


def bare_subscriber_drain(info: StackInfo, client_id: str, n: int) -> float:
    got = 0
    done = threading.Event()
    c = mqtt_client(info, client_id, manual_ack=True)

    def on_message(client: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        nonlocal got
        client.ack(m.mid, m.qos)
        got += 1
        if got >= n:
            done.set()

    c.on_message = on_message
    start = time.perf_counter()
    connect_persistent(info, c, resume=True, receive_maximum=1000)
    c.loop_start()
    done.wait(600)
    elapsed = time.perf_counter() - start
    c.disconnect()
    c.loop_stop()
    return got / elapsed


def bridge_session(info: StackInfo, settings_kw: dict[str, object]) -> None:
    """Start a bridge once and stop it: its topics and its persistent session exist, so the
    broker queues what is published next for it."""
    warm = Bridge(load_bridge_settings(stack_config(info), **settings_kw))
    thread = warm.start_in_thread()
    warm.stop()
    thread.join(30)


def bare_and_bridge(
    info: StackInfo, tag: str, n: int, linger_ms: int | None = None
) -> tuple[float, float, float, float, int]:
    """N messages queued, then drained by (a) a bare subscriber and (b) the bridge: (publish
    rate, bare msg/s, bridge msg/s, bridge cores, records in Kafka)."""
    bare_id = f"bare-{tag}"
    persistent_session(info, bare_id, f"a-{tag}/+/status")
    pub_rate = publish_burst(info, f"a-{tag}", n)
    bare = bare_subscriber_drain(info, bare_id, n)
    kw = bridge_kw(info, tag, f"bridge-{tag}", f"raw-{tag}", f"b-{tag}", linger_ms)
    bridge_session(info, kw)
    publish_burst(info, f"b-{tag}", n)
    bridged, cpu, in_kafka = bridge_drain(info, kw, n)
    return pub_rate, bare, bridged, cpu, in_kafka


def bridge_kw(
    info: StackInfo,
    tag: str,
    client_id: str,
    raw_topic: str,
    prefix: str,
    linger_ms: int | None = None,
) -> dict[str, object]:
    linger = {} if linger_ms is None else {"linger_ms": linger_ms}
    return {
        **linger,
        "mqtt_url": info.mqtt_url,
        "kafka_bootstrap": info.kafka_bootstrap,
        "client_id": client_id,
        "raw_topic": raw_topic,
        "dlq_topic": f"dlq-{tag}",
        "profiles": [{"kind": "json", "topic": f"{prefix}/{{device}}/status"}],
        "mqtt_version": "5" if info.broker.mqtt5 else "3.1.1",
    }


def bridge_drain(
    info: StackInfo, settings_kw: dict[str, object], n: int
) -> tuple[float, float, int]:
    settings = load_bridge_settings(stack_config(info), **settings_kw)
    bridge = Bridge(settings)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    while bridge.metrics.acknowledged._value.get() < n and thread.is_alive():
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    bridge.stop()
    thread.join(60)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    in_kafka = _count(info, settings.kafka.raw_topic)
    return n / elapsed, cpu / elapsed, in_kafka


def _count(info: StackInfo, topic: str) -> int:
    """Device records in `topic` (the bridge's progress records left out)."""
    return len(read_from_beginning(kafka_of(info), topic, idle_ms=3000))


def kafka_python_rate(info: StackInfo, n: int) -> float:
    topic = f"bench-producer-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(**client_options(kafka_of(info)))
    admin.create_topics([NewTopic(topic, 8, 1)])
    admin.close()
    p = KafkaProducer(
        **client_options(kafka_of(info)),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        batch_size=256 * 1024,
    )
    records = [payload(i) for i in range(n)]
    start = time.perf_counter()
    for i, r in enumerate(records):
        p.send(topic, key=f"dev-{i % 10_000:05d}".encode(), value=r)
    p.flush()
    elapsed = time.perf_counter() - start
    p.close()
    return n / elapsed


def latency(
    info: StackInfo, settings_kw: dict[str, object], prefix: str, rate: int, seconds: float
) -> list[float]:
    settings = load_bridge_settings({}, **settings_kw)
    admin = KafkaAdminClient(bootstrap_servers=info.kafka_bootstrap)
    admin.create_topics(
        [
            NewTopic(
                settings.kafka.raw_topic,
                8,
                1,
                topic_configs={"message.timestamp.type": "LogAppendTime"},
            )
        ]
    )
    admin.close()
    bridge = Bridge(settings)
    thread = bridge.start_in_thread()
    c = fast_publisher(info)
    c.loop_start()
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        target = start + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        c.publish(
            f"{prefix}/dev-{i % 1000:04d}/status", payload(i, time.time_ns() // 1_000_000), qos=1
        )
    while bridge.metrics.acknowledged._value.get() < total:
        time.sleep(0.05)
    bridge.stop()
    thread.join(30)
    c.disconnect()
    c.loop_stop()
    out = []
    for m in read_from_beginning(info.kafka_bootstrap, settings.kafka.raw_topic, idle_ms=3000):
        sent = json.loads(m.value)["event_time"]
        out.append(m.timestamp - sent)
    return out


def measure(args: argparse.Namespace, figures: Figures) -> dict[str, str]:
    n = args.messages
    with bench_stack(args.home, broker=args.broker) as (info, _home):
        tag = uuid.uuid4().hex[:6]
        broker = f"{info.broker.title} {info.mqtt_broker_version}"
        print(
            f"\n{broker}, Kafka {info.kafka_version}; {n} messages "
            f"of {len(payload(0))} bytes, QoS 1, queued in the broker first\n"
        )
        # latency first, on a quiet broker (after a 100,000-message backlog Mosquitto saved
        # its large database for a while: median 373 ms, then 46, then 14 as it shrank)
        kw = bridge_kw(info, tag, f"bridge-{tag}", f"raw-{tag}", f"b-{tag}", args.linger_ms)
        lat_kw = {
            **kw,
            "client_id": f"lat-{tag}",
            "raw_topic": f"lat-{tag}",
            "profiles": [{"kind": "json", "topic": f"l-{tag}/{{device}}/status"}],
        }
        lats = latency(info, lat_kw, f"l-{tag}", args.latency_rate, args.latency_seconds)
        # (a) bare paho subscriber, (b) the bridge
        pub_rate, bare, bridged, cpu, in_kafka = bare_and_bridge(info, tag, n, args.linger_ms)
        # (c) kafka-python producer
        producer = kafka_python_rate(info, n)
        # (d) the bridge with telemetry coalesced
        k = args.telemetry_per_status
        if k:
            tel_kw = {
                **kw,
                "client_id": f"tel-{tag}",
                "raw_topic": f"tel-{tag}",
                "profiles": [
                    {"kind": "json", "topic": f"t-{tag}/{{device}}/status"},
                    {"kind": "activity", "topic": f"t-{tag}/{{device}}/SENSOR"},
                ],
            }
            bridge_session(info, tel_kw)
            publish_burst(info, f"t-{tag}", n, telemetry=k)
            with_telemetry, tel_cpu, tel_records = bridge_drain(info, tel_kw, n)
    figures.add("publisher_into_broker", pub_rate, "messages/s")
    figures.add("bare_subscriber", bare, "messages/s")
    figures.add("bridge", bridged, "messages/s")
    figures.add("kafka_python_producer", producer, "messages/s")
    figures.add("bridge_over_bare_subscriber", bridged / bare, "ratio", ">= 0.5")
    figures.add("bridge_over_producer", bridged / producer, "ratio")
    figures.add("bridge_cpu", cpu, "cores")
    figures.add("lost", max(n - in_kafka, 0), "messages", "== 0")
    figures.add("duplicates", max(in_kafka - n, 0), "messages")
    print(f"{'what':58} {'msg/s':>10}")
    print(
        f"{'publisher into ' + info.broker.title + ' (QoS 1, for reference)':58} {pub_rate:>10,.0f}"
    )
    print(f"{'(a) bare paho subscriber, QoS 1, manual acks':58} {bare:>10,.0f}")
    print(f"{'(b) bridge: MQTT -> Kafka (acks=all), ack after Kafka':58} {bridged:>10,.0f}")
    print(f"{'(c) kafka-python producer alone, same settings':58} {producer:>10,.0f}")
    print(f"\nbridge / bare subscriber: {bridged / bare:.2f} (target >= 0.5)")
    print(f"bridge / kafka-python producer: {bridged / producer:.2f}")
    print(f"bridge CPU: {cpu:.2f} cores while draining")
    print(
        f"records in Kafka: {in_kafka} for {n} messages: lost {max(n - in_kafka, 0)}, "
        f"duplicates {max(in_kafka - n, 0)}"
    )
    if args.telemetry_per_status:
        figures.add("telemetry.messages_in", with_telemetry, "messages/s")
        figures.add("telemetry.over_bare_subscriber", with_telemetry / bare, "ratio")
        figures.add("telemetry.records_out", tel_records, "records")
        figures.add("telemetry.cpu", tel_cpu, "cores")
        print(
            f"(d) bridge, {args.telemetry_per_status} telemetry messages per status message: "
            f"{with_telemetry:,.0f} msg/s in ({with_telemetry / bare:.2f} of (a)), "
            f"{tel_records:,} records out for {n:,} messages, {tel_cpu:.2f} cores"
        )
    if lats:
        p50, p99 = p50_p99(lats)
        figures.add("latency.p50", p50, "ms")
        figures.add("latency.p99", p99, "ms")
        print(
            f"latency publish -> Kafka append at {args.latency_rate} msg/s "
            f"({len(lats)} messages): median {p50:.0f} ms, p99 {p99:.0f} ms"
        )
    return {"kafka": info.kafka_version, info.mqtt_broker: info.mqtt_broker_version}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument(
        "--linger-ms", type=int, help="the bridge's linger_ms (its default unless given)"
    )
    parser.add_argument(
        "--telemetry-per-status", type=int, default=0, help="K: measure (d) with K in K+1"
    )
    add_common_args(parser)
    run_bench("bridge_throughput", parser, measure)


if __name__ == "__main__":
    main()
