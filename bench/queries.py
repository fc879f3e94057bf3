"""Fleet queries at scale: one worker holding N devices (1,000,000 by default) in its table.

    python -m bench.queries [--devices 1000000] [--events 50000] [--home DIR]

Writes N device states into the table's changelog (what a worker that had processed their
births, and for a fifth of them a will and the grace period, would have written), starts one
worker (RocksDB store) that recovers them, then measures:

1. `GET /devices/{id}` of random devices, one client: requests/s, p50 and p99;
2. `GET /fleet` and one `GET /devices?status=offline&limit=100` page: p50 and p99;
3. the agent's events/s working through a backlog of raw events, alone and while a client polls
   `/fleet` and `/devices?status=offline` every second (the target: under 10 % slower).
"""

from __future__ import annotations

import argparse
import http.client
import random
import threading
import time
import uuid
from pathlib import Path

import msgspec
from kafka import KafkaProducer

from bench.common import Figures, bench_stack, events_rate, p50_p99, run_bench, worker_events
from mqtt_presence.core import (
    ConnectionEvent,
    EventKind,
    PresenceConfig,
    Tick,
    encode_state,
    transition,
)
from mqtt_presence.kafka_topics import TopicSpec, ensure_topics
from mqtt_presence.stack import StackInfo
from mqtt_presence.streams.topology import changelog_topic
from mqtt_presence.worker_process import WorkerProcess

PARTITIONS = 8
GRACE_MS = 5_000
T0 = 1_700_000_000_000


def device_id(i: int) -> str:
    return f"dev-{i:08}"


def fill_changelog(info: StackInfo, topic: str, devices: int) -> None:
    """Every device born; every fifth one then offline (will, grace period over)."""
    config = PresenceConfig(offline_grace_ms=GRACE_MS)
    producer = KafkaProducer(
        bootstrap_servers=info.kafka_bootstrap, linger_ms=50, batch_size=1 << 20, acks=1
    )
    started = time.monotonic()
    for i in range(devices):
        device = device_id(i)
        birth = ConnectionEvent(device=device, kind=EventKind.BIRTH, received_at=T0, session=1)
        state, _ = transition(None, birth, config)
        if i % 5 == 0:
            will = ConnectionEvent(
                device=device, kind=EventKind.WILL, received_at=T0 + 1, session=1
            )
            state, _ = transition(state, will, config)
            state, _ = transition(state, Tick(T0 + 1 + GRACE_MS), config)
        assert state is not None
        producer.send(topic, key=device.encode(), value=encode_state(state))
        if i and i % 200_000 == 0:
            print(f"  {i:,} states written ({time.monotonic() - started:.0f} s)", flush=True)
    producer.flush()
    producer.close()


def fill_raw(info: StackInfo, topic: str, devices: int, events: int, session: int) -> None:
    """`events` births of existing devices with a new session: each one a status change."""
    producer = KafkaProducer(
        bootstrap_servers=info.kafka_bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1
    )
    encode = msgspec.json.Encoder().encode
    now = int(time.time() * 1000)
    for i in range(events):
        device = device_id(i * 7919 % devices)
        birth = ConnectionEvent(
            device=device, kind=EventKind.BIRTH, received_at=now + i, session=session
        )
        producer.send(topic, key=device.encode(), value=encode(birth))
    producer.flush()
    producer.close()


def timed_gets(port: int, paths: list[str]) -> list[float]:
    """Milliseconds per request, one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    took = []
    for path in paths:
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        took.append((time.perf_counter() - start) * 1000)
        assert response.status == 200, (path, response.status)
    conn.close()
    return took


def agent_rate(
    info: StackInfo,
    worker: WorkerProcess,
    raw: str,
    args: argparse.Namespace,
    session: int,
    poll: bool,
) -> float:
    before = worker_events(worker.port)
    stop = threading.Event()
    polls: list[float] = []

    def poller() -> None:
        while True:
            polls.extend(timed_gets(worker.port, ["/fleet", "/devices?status=offline&limit=100"]))
            if stop.wait(1.0):
                return

    thread = threading.Thread(target=poller, daemon=True)
    if poll:
        thread.start()
    fill_raw(info, raw, args.devices, args.events, session)
    rate, _ = events_rate([worker.port], args.events, before)
    stop.set()
    if poll:
        thread.join()
        p50, p99 = p50_p99(polls)
        print(f"  while polling: {len(polls)} queries, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    return rate


def measure(args: argparse.Namespace, figures: Figures) -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    app_id = f"queries-{tag}"
    topics = {name: f"q{name}-{tag}" for name in ("raw", "status", "dlq", "ticks")}
    with bench_stack(args.home) as (info, home):
        changelog = changelog_topic(app_id)
        ensure_topics(
            info.kafka_bootstrap,
            "bench",
            [TopicSpec(changelog, PARTITIONS, configs={"cleanup.policy": "compact"})],
        )
        print(f"writing {args.devices:,} device states to {changelog}", flush=True)
        fill_changelog(info, changelog, args.devices)
        started = time.monotonic()
        worker = WorkerProcess.start(
            info.kafka_bootstrap,
            home,
            topics,
            app_id,
            partitions=PARTITIONS,
            store="rocksdb",
            presence={"offline_grace_ms": GRACE_MS},
            tick_interval_s=1.0,
        ).wait_ready(timeout=1800)
        recovered = figures.add("recovery", time.monotonic() - started, "s")
        print(f"worker recovered {args.devices:,} devices in {recovered:.0f} s")
        try:
            rng = random.Random(1)
            ids = [device_id(rng.randrange(args.devices)) for _ in range(args.requests)]
            start = time.perf_counter()
            one = timed_gets(worker.port, [f"/devices/{d}" for d in ids])
            rate = len(one) / (time.perf_counter() - start)
            fleet = timed_gets(worker.port, ["/fleet"] * 50)
            cursors = [device_id(rng.randrange(args.devices)) for _ in range(50)]
            pages = timed_gets(
                worker.port, [f"/devices?status=offline&limit=100&cursor={c}" for c in cursors]
            )
            alone = agent_rate(info, worker, topics["raw"], args, session=2, poll=False)
            polled = agent_rate(info, worker, topics["raw"], args, session=3, poll=True)
        finally:
            worker.stop()
    print(f"\none worker, {args.devices:,} devices in its table (RocksDB), {PARTITIONS} partitions")
    print(f"{'query':52} {'p50 ms':>8} {'p99 ms':>8}")
    figures.add("device.requests_per_s", rate, "requests/s")
    for label, key, values in (
        (f"GET /devices/{{id}} ({rate:,.0f} requests/s, one client)", "device", one),
        ("GET /fleet", "fleet", fleet),
        ("GET /devices?status=offline&limit=100 page", "page", pages),
    ):
        p50, p99 = p50_p99(values)
        figures.add(f"{key}.p50", p50, "ms")
        figures.add(f"{key}.p99", p99, "ms")
        print(f"{label:52} {p50:>8.1f} {p99:>8.1f}")
    figures.add("agent.alone", alone, "events/s")
    figures.add("agent.polled", polled, "events/s")
    figures.add("agent.polled_over_alone", polled / alone, "ratio", ">= 0.90")
    print(
        f"agent events/s alone {alone:,.0f}; while a client polls /fleet and a page every second "
        f"{polled:,.0f}: {polled / alone:.2f} of alone (target >= 0.90)"
    )
    return {"kafka": info.kafka_version}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=50_000, help="raw events per agent run")
    parser.add_argument("--requests", type=int, default=2_000, help="GET /devices/{id} calls")
    parser.add_argument("--home", type=Path, help="use (or start) the local stack here")
    run_bench("queries", parser, measure)


if __name__ == "__main__":
    main()
