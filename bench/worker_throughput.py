"""Streams worker throughput and end-to-end latency, beside the machine's own limit.

    python -m bench.worker_throughput [--events 100000] [--latency-rate 1000] [--home DIR]
                                      [--skip-throughput] [--skip-latency] [--repeat R]
                                      [--steps bare,faust,faust+table,one,two]

Starts its own local stack (or uses the one in --home), then measures in one run:

1. the ceiling: a bare aiokafka loop that consumes the raw topic and produces every record to
   another topic (what Python on this machine can do at all, with no processing);
2. Faust's own ceilings (bench.faust_floor): an agent that only iterates the same topic, and
   one that also writes one table key per event (what the worker must do at least);
3. one worker (`presence worker`, in-memory store) working through the same N raw events already
   in Kafka: events/s from its own counter (`presence_worker_events_total`);
4. the same with two workers in one consumer group;
5. latency, one worker then two: births published over MQTT at a steady rate through Mosquitto
   and the bridge; the time from publish (in the payload) to the status change's append in Kafka
   (LogAppendTime), median and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaProducer

from bench.common import (
    Figures,
    add_common_args,
    bench_stack,
    p50_p99,
    run_bench,
    worker_events,
)
from mqtt_presence.bridge.app import Bridge
from mqtt_presence.kafka_topics import (
    TopicSpec,
    ensure_topics,
    group_caught_up,
    read_from_beginning,
)
from mqtt_presence.local_bridge import local_bridge_settings
from mqtt_presence.sim.simulator import SCENARIOS, simulate
from mqtt_presence.stack import StackInfo
from mqtt_presence.worker_process import WorkerProcess

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


def faust_floor(info: StackInfo, topic: str, n: int, *, table_writes: bool) -> float:
    """events/s of a Faust agent that does nothing (or only writes the table), same topic."""
    cmd = [sys.executable, "-m", "bench.faust_floor", info.kafka_bootstrap, topic, str(n)]
    out = subprocess.run(
        [*cmd, "--table-writes"] if table_writes else cmd,
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    return float(out.rsplit("events/s ", 1)[1].split()[0])


def worker_rate(info: StackInfo, home: Path, topics: dict[str, str], n: int, workers: int) -> float:
    """events/s of `workers` workers of one group through the `n` raw events: from the first
    event any of them counted to the last one counted before the group had committed the whole
    raw topic. A worker that exits with status 75 (a skip around a rebalance, see
    streams/skips.py) is started again, as a supervisor would; the events it processes again are
    not counted twice (the group's committed offsets say when all is done)."""
    app_id = f"bench-{uuid.uuid4().hex[:6]}"

    def start() -> WorkerProcess:
        return WorkerProcess.start(
            info.kafka_bootstrap, home, topics, app_id, partitions=PARTITIONS, tick_interval_s=1.0
        )

    procs = [start() for _ in range(workers)]
    try:
        first_at = last_at = asked_at = 0.0
        seen = 0.0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            for i, w in enumerate(procs):
                if w.proc.poll() is not None:
                    print(f"  a worker exited with {w.proc.returncode}: started again", flush=True)
                    procs[i] = start()
            counted = sum(worker_events(w.port) for w in procs)
            now = time.perf_counter()
            if counted != seen:
                first_at = first_at or now
                last_at, seen = now, counted
            # The counters every 100 ms (first and last event timed to that; a scrape costs a
            # worker's event loop about 1.5 ms, so not more often); the group's committed
            # offsets, a round of Kafka requests, once a second at most.
            if first_at and now - asked_at >= 1.0:
                asked_at = now
                if group_caught_up(info.kafka_bootstrap, app_id, topics["raw"]):
                    return n / (last_at - first_at)
            time.sleep(0.1)
        raise SystemExit(f"{workers} worker(s) did not work through {n} events in 600 s")
    finally:
        for w in procs:
            w.stop()


WARMUP_S = 2.0


def latency(
    info: StackInfo, home: Path, rate: int, seconds: float, workers: int
) -> tuple[list[float], list[float]]:
    """Latencies (ms) of the births after a warm-up, and of the warm-up's births (the first
    records through fresh connections and metadata: reported apart, not hidden)."""
    tag = uuid.uuid4().hex[:6]
    topics = {name: f"l{name}-{tag}" for name in ("raw", "status", "dlq", "ticks")}
    ensure_topics(
        info.kafka_bootstrap,
        "bench",
        [
            *(TopicSpec(topics[t], PARTITIONS) for t in ("raw", "ticks", "dlq")),
            status_topic(topics["status"]),
        ],
    )
    procs = [
        WorkerProcess.start(
            info.kafka_bootstrap,
            home,
            topics,
            f"lat-{tag}",
            partitions=PARTITIONS,
            tick_interval_s=1.0,
        )
        for _ in range(workers)
    ]
    settings = local_bridge_settings(
        info,
        client_id=f"lat-bridge-{tag}",
        raw_topic=topics["raw"],
        dlq_topic=topics["dlq"],
        topic_prefix=f"l-{tag}",
        partitions=PARTITIONS,
    )
    bridge = Bridge(settings)
    thread = bridge.start_in_thread()
    sent: dict[str, int] = {}
    try:
        for w in procs:
            w.wait_ready()
        time.sleep(2 + 3 * (workers - 1))  # the group's rebalances settle
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"lat-{tag}", protocol=mqtt.MQTTv5
        )
        client.connect(info.mqtt_host, info.mqtt_port)
        client.loop_start()
        total = int(rate * (seconds + WARMUP_S))
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
        for w in procs:
            w.stop()
    warm_until = min(sent.values(), default=0) + WARMUP_S * 1000
    measured: list[float] = []
    warmup: list[float] = []
    for m in read_from_beginning(info.kafka_bootstrap, topics["status"], idle_ms=3000):
        device = json.loads(m.value)["device"]
        if device in sent:  # publish over MQTT -> status change appended in Kafka
            into = warmup if sent[device] < warm_until else measured
            into.append(m.timestamp - sent[device])
    return measured, warmup


def status_topic(name: str) -> TopicSpec:
    """Compacted like presence.status, and stamped by the broker for the latency figure."""
    return TopicSpec(
        name,
        PARTITIONS,
        1,
        {"cleanup.policy": "compact", "message.timestamp.type": "LogAppendTime"},
    )


def measure(args: argparse.Namespace, figures: Figures) -> dict[str, str]:
    n = args.events
    tag = uuid.uuid4().hex[:6]
    topics = {name: f"{name}-{tag}" for name in ("raw", "status", "dlq", "ticks", "copy")}
    rates: dict[str, float] = {}
    lats: dict[int, tuple[list[float], list[float]]] = {}
    with bench_stack(args.home) as (info, home):
        kafka_version = info.kafka_version
        print(f"\nKafka {kafka_version}; {PARTITIONS} partitions per topic\n")
        if not args.skip_throughput:
            ensure_topics(
                info.kafka_bootstrap,
                "bench",
                [
                    *(TopicSpec(topics[t], PARTITIONS) for t in ("raw", "ticks", "dlq", "copy")),
                    status_topic(topics["status"]),
                ],
            )
            print(f"filling {topics['raw']} with {n} raw events", flush=True)
            fill_raw_topic(info, topics["raw"], n)
            steps: dict[str, Callable[[], float]] = {
                "bare": lambda: asyncio.run(bare_loop(info, topics["raw"], topics["copy"], n)),
                "faust": lambda: faust_floor(info, topics["raw"], n, table_writes=False),
                "faust+table": lambda: faust_floor(info, topics["raw"], n, table_writes=True),
                "one": lambda: worker_rate(info, home, topics, n, workers=1),
                "two": lambda: worker_rate(info, home, topics, n, workers=2),
            }
            rounds: dict[str, list[float]] = {}
            for round_ in range(1, args.repeat + 1):
                for name, measure in steps.items():
                    if name not in args.steps:
                        continue
                    print(f"measuring: {name} (round {round_} of {args.repeat})", flush=True)
                    rounds.setdefault(name, []).append(measure())
                    print(f"  {rounds[name][-1]:,.0f} events/s", flush=True)
            rates = {name: statistics.median(values) for name, values in rounds.items()}
            if args.repeat > 1 and rounds.keys() >= {"faust", "one"}:
                pairs = zip(rounds["one"], rounds["faust"], strict=True)
                paired = [one / idle for one, idle in pairs]
                print(
                    "one worker / Faust agent, round by round: "
                    + ", ".join(f"{r:.2f}" for r in paired)
                    + f" (median {statistics.median(paired):.2f})"
                )
        if not args.skip_latency:
            for workers in (1, 2):
                print(f"measuring: latency with {workers} worker(s)", flush=True)
                lats[workers] = latency(
                    info, home, args.latency_rate, args.latency_seconds, workers
                )
    if rates.keys() >= {"bare", "faust", "one"}:
        bare, faust_only, one = rates["bare"], rates["faust"], rates["one"]
        rows = [
            ("bare aiokafka consume-and-produce loop (the ceiling)", "bare"),
            ("Faust agent that only iterates the topic", "faust"),
            ("Faust agent that writes one table key per event", "faust+table"),
            ("one worker: raw -> core -> table + status", "one"),
            ("two workers, one consumer group", "two"),
        ]
        if args.repeat > 1:
            print(f"\nmedians of {args.repeat} rounds:")
        print(f"\n{'what':58} {'events/s':>9} {'/ bare':>7} {'/ Faust':>8}")
        for label, key in rows:
            if key not in rates:
                continue
            r = figures.add(f"rate.{key}", rates[key], "events/s")
            print(f"{label:58} {r:>9,.0f} {r / bare:>7.2f} {r / faust_only:>8.2f}")
        figures.add("one_over_bare", one / bare, "ratio", ">= 0.5")
        figures.add("one_over_faust", one / faust_only, "ratio", ">= 0.7")
        print(f"\none worker / bare loop: {one / bare:.2f} (target >= 0.5)")
        print(f"one worker / Faust agent that does nothing: {one / faust_only:.2f}")
        if "two" in rates:
            figures.add("two_over_one", rates["two"] / one, "ratio")
            print(f"two workers / one worker: {rates['two'] / one:.2f}")
    for workers, (values, warmup) in lats.items():
        if values:
            p50, p99 = p50_p99(values)
            figures.add(f"latency.{workers}_workers.p50", p50, "ms")
            figures.add(f"latency.{workers}_workers.p99", p99, "ms", "< 100")
            figures.add(f"latency.{workers}_workers.max", max(values), "ms")
            print(
                f"latency MQTT publish -> status change in Kafka, {workers} worker(s), "
                f"{args.latency_rate} births/s ({len(values)} changes after a {WARMUP_S:.0f} s "
                f"warm-up): median {p50:.0f} ms, p99 {p99:.0f} ms, max {max(values):.0f} ms "
                "(target p99 < 100 ms)"
            )
        if warmup:
            p50, p99 = p50_p99(warmup)
            print(
                f"  the warm-up's {len(warmup)} changes: median {p50:.0f} ms, "
                f"p99 {p99:.0f} ms, max {max(warmup):.0f} ms"
            )
    return {"kafka": kafka_version}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the throughput steps (this machine's figures vary by 10 to 20 %% from "
        "run to run; the table then gives each step's median)",
    )
    parser.add_argument(
        "--steps",
        type=lambda text: set(text.split(",")),
        default={"bare", "faust", "faust+table", "one", "two"},
        help="the throughput steps to run, comma-separated (default: all: "
        "bare,faust,faust+table,one,two); the table needs bare, faust and one",
    )
    add_common_args(parser)
    run_bench("worker_throughput", parser, measure)


if __name__ == "__main__":
    main()
