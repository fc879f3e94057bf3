"""Streams worker throughput and end-to-end latency, beside the machine's own limit (issue 4).

    python bench/worker_throughput.py [--events 100000] [--latency-rate 1000] [--home DIR]

Starts its own local stack (or uses the one in --home), then measures in one run:

1. the ceiling: a bare aiokafka loop that consumes the raw topic and produces every record to
   another topic (what Python on this machine can do at all, with no processing);
2. one worker (`presence worker`, in-memory store) working through the same N raw events already
   in Kafka: events/s from its own counter (`presence_worker_events_total`);
3. the same with two workers in one consumer group;
4. latency: births published over MQTT at a steady rate through Mosquitto and the bridge; the
   time from publish (in the payload) to the status change's append in Kafka (LogAppendTime),
   median and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
import uuid
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from common import add_common_args, bench_stack, p50_p99
from kafka import KafkaProducer

from bridge.app import Bridge
from bridge.config import load_bridge_settings
from fleet.simulator import SCENARIOS, simulate
from mqtt_presence.stack import StackInfo
from mqtt_presence.worker_process import WorkerProcess
from streams.kafka_topics import TopicSpec, ensure_topics, read_from_beginning

PARTITIONS = 8


def fill_raw_topic(info: StackInfo, topic: str, n: int) -> None:
    sim = simulate(SCENARIOS["duplicates"], max(1, n // 12), seed=1)
    events = sim.events[:n]
    while len(events) < n:  # a larger fleet if the scenario was short
        events += simulate(SCENARIOS["duplicates"], max(1, n // 12), seed=len(events)).events
        events = events[:n]
    producer = KafkaProducer(
        bootstrap_servers=info.kafka_bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1
    )
    encode = msgspec.json.Encoder().encode
    for e in events:
        producer.send(topic, key=e.device.encode(), value=encode(e))
    producer.flush()
    producer.close()


async def bare_loop(info: StackInfo, source: str, sink: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=info.kafka_bootstrap,
        group_id=f"bare-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    producer = AIOKafkaProducer(bootstrap_servers=info.kafka_bootstrap, linger_ms=20)
    await consumer.start()
    await producer.start()
    count, start = 0, 0.0
    try:
        while count < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                if not start:
                    start = time.perf_counter()
                for r in records:
                    await producer.send(sink, key=r.key, value=r.value)
                    count += 1
        await producer.flush()
        return count / (time.perf_counter() - start)
    finally:
        await consumer.stop()
        await producer.stop()


def events_done(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("presence_worker_events_total "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def worker_rate(info: StackInfo, home: Path, topics: dict[str, str], n: int, workers: int) -> float:
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    procs = [
        WorkerProcess.start(
            info.kafka_bootstrap, home, topics, app_id, partitions=PARTITIONS, tick_interval_s=1.0
        )
        for _ in range(workers)
    ]
    try:
        first_at, deadline = 0.0, time.monotonic() + 600
        done = 0.0
        while time.monotonic() < deadline:
            done = sum(events_done(w.port) for w in procs)
            if done and not first_at:
                first_at, first_done = time.perf_counter(), done
            if done >= n:
                break
            time.sleep(0.2)
        return (done - first_done) / (time.perf_counter() - first_at)
    finally:
        for w in procs:
            w.stop()


def latency(
    info: StackInfo, home: Path, topics: dict[str, str], rate: int, seconds: float
) -> list[float]:
    tag = uuid.uuid4().hex[:6]
    worker = WorkerProcess.start(
        info.kafka_bootstrap, home, topics, f"lat-{tag}", partitions=PARTITIONS, tick_interval_s=1.0
    )
    settings = load_bridge_settings(
        {},
        mqtt_url=info.mqtt_url,
        kafka_bootstrap=info.kafka_bootstrap,
        client_id=f"lat-bridge-{tag}",
        raw_topic=topics["raw"],
        dlq_topic=topics["dlq"],
        partitions=PARTITIONS,
        profiles=[{"kind": "json", "topic": f"l-{tag}/{{device}}/status"}],
    )
    bridge = Bridge(settings)
    thread = bridge.start_in_thread()
    sent: dict[str, int] = {}
    try:
        worker.wait_ready()
        time.sleep(2)  # the worker's first rebalance settles
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"lat-{tag}", protocol=mqtt.MQTTv5
        )
        client.connect(info.mqtt_host, info.mqtt_port)
        client.loop_start()
        total = int(rate * seconds)
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            device = f"lat-dev-{tag}-{i}"
            sent[device] = time.time_ns() // 1_000_000
            body = {"status": "online", "session": 1, "ts": sent[device]}
            client.publish(f"l-{tag}/{device}/status", json.dumps(body), qos=1)
        time.sleep(3)
        client.disconnect()
        client.loop_stop()
    finally:
        bridge.stop()
        thread.join(30)
        worker.stop()
    out = []
    for m in read_from_beginning(info.kafka_bootstrap, topics["status"], idle_ms=3000):
        device = json.loads(m.value)["device"]
        if device in sent:  # publish over MQTT -> status change appended in Kafka
            out.append(m.timestamp - sent[device])
    return out


def status_topic(name: str) -> TopicSpec:
    """Compacted like presence.status, and stamped by the broker for the latency figure."""
    return TopicSpec(
        name,
        PARTITIONS,
        1,
        {"cleanup.policy": "compact", "message.timestamp.type": "LogAppendTime"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    add_common_args(parser)
    args = parser.parse_args()
    n = args.events
    tag = uuid.uuid4().hex[:6]
    topics = {name: f"{name}-{tag}" for name in ("raw", "status", "dlq", "ticks", "copy")}
    lat_topics = {
        **topics,
        "raw": f"lraw-{tag}",
        "ticks": f"lticks-{tag}",
        "status": f"lstatus-{tag}",
    }
    with bench_stack(args.home) as (info, home):
        ensure_topics(
            info.kafka_bootstrap,
            "bench",
            [
                *(TopicSpec(topics[t], PARTITIONS) for t in ("raw", "ticks", "dlq", "copy")),
                status_topic(topics["status"]),
                TopicSpec(lat_topics["raw"], PARTITIONS),
                TopicSpec(lat_topics["ticks"], PARTITIONS),
                status_topic(lat_topics["status"]),
            ],
        )
        print(f"\nKafka {info.kafka_version}; {n} raw events in {PARTITIONS} partitions\n")
        fill_raw_topic(info, topics["raw"], n)
        bare = asyncio.run(bare_loop(info, topics["raw"], topics["copy"], n))
        one = worker_rate(info, home, topics, n, workers=1)
        two = worker_rate(info, home, topics, n, workers=2)
        lats = latency(info, home, lat_topics, args.latency_rate, args.latency_seconds)
    print(f"{'what':60} {'events/s':>10}")
    print(f"{'bare aiokafka consume-and-produce loop (the ceiling)':60} {bare:>10,.0f}")
    print(f"{'one worker: raw -> core -> table + status':60} {one:>10,.0f}")
    print(f"{'two workers, one consumer group':60} {two:>10,.0f}")
    print(f"\none worker / bare loop: {one / bare:.2f} (target >= 0.5)")
    print(f"two workers / one worker: {two / one:.2f}")
    if lats:
        p50, p99 = p50_p99(lats)
        print(
            f"latency MQTT publish -> status change in Kafka at {args.latency_rate} births/s "
            f"({len(lats)} changes): median {p50:.0f} ms, p99 {p99:.0f} ms"
        )


if __name__ == "__main__":
    main()
