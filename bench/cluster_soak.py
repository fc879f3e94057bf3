"""A soak on a three-node Kafka: a reconnect storm every minute, a broker killed in each.

    python -m bench.cluster_soak [--minutes 30] [--devices 2000] [--json] [--save FILE]

Starts `presence stack up --kafka-nodes 3` (replication factor 3, min.insync.replicas 2), a
bridge and two workers as processes. Every minute, a storm: every device reconnects (a birth
with the next session token) and the broker publishes its old connection's will after it (a
stale will: field report B), all interleaved; in the middle of it the leader of a `presence.raw`
partition (every third storm: the active KRaft controller) is killed with SIGKILL and started
again in place 10 s later. Per storm and in total: messages acknowledged to the publisher,
distinct messages in `presence.raw` (lost: must be 0), seconds until every device shows its new
session in the HTTP API, false offlines on `presence.status` (must be 0: every will is stale),
and, at the end, versions that went back or skipped on `presence.status` (must be 0).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import Figures, device_views, fast_publisher, metric, run_bench
from mqtt_presence.kafka_topics import read_from_beginning
from mqtt_presence.settings import render_config
from mqtt_presence.sim.mqtt_device import status_payload
from mqtt_presence.stack import LocalStack, StackInfo
from mqtt_presence.stack.kafka import active_controller, partition_leader
from mqtt_presence.stack.ports import free_port
from mqtt_presence.worker_process import WorkerProcess

PARTITIONS = 8


def start_bridge(info: StackInfo, home: Path, tag: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    bridge = {
        "mqtt_url": info.mqtt_url,
        "client_id": f"soak-bridge-{tag}",
        "http_port": port,
        "state_dir": str(home / "bridge-state"),
        "profiles": [{"kind": "json", "topic": f"soak-{tag}/{{device}}/status"}],
        "kafka_bootstrap": info.kafka_bootstrap,
        "raw_topic": f"raw-{tag}",
        "dlq_topic": f"dlq-{tag}",
        "partitions": PARTITIONS,
        "replication_factor": 3,
    }
    config = home / "bridge.toml"
    config.write_text(render_config({"bridge": bridge}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqtt_presence", "bridge", "--config", str(config)],
        stdout=(home / "bridge.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while metric(port, "presence_bridge_messages_received_total") < 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the bridge did not start; see {home / 'bridge.log'}")
        time.sleep(0.2)
    return proc, port


def sessions_seen(url: str) -> dict[str, tuple[str, int]]:
    """Every device's (status, session) from the API."""
    views = device_views(url, timeout=10) or []
    return {d["device"]: (d["status"], int(d["current_session"])) for d in views}


def measure(args: argparse.Namespace, figures: Figures) -> dict[str, str]:
    home = Path(args.home or f"/tmp/presence-soak-{uuid.uuid4().hex[:6]}")
    stack = LocalStack(home / "stack")
    info = stack.up(kafka_nodes=3, progress=print)
    tag = uuid.uuid4().hex[:6]
    topics = {k: f"{k}-{tag}" for k in ("raw", "status", "dlq", "ticks")}
    devices = [f"dev-{i:05d}" for i in range(args.devices)]
    workers = [
        WorkerProcess.start(
            info.kafka_bootstrap,
            home,
            topics,
            f"soak-{tag}",
            partitions=PARTITIONS,
            kafka={"replication_factor": 3},
            session_timeout_s=6.0,
        )
        for _ in range(2)
    ]
    bridge, _ = start_bridge(info, home, tag)
    rows: list[dict[str, Any]] = []
    acked = 0
    try:
        for worker in workers:
            worker.wait_ready(timeout=180)
        publisher = fast_publisher(info)
        born = [
            (f"soak-{tag}/{d}/status", status_payload("online", 1, int(time.time() * 1000)))
            for d in devices
        ]
        acked += publish(publisher, born)
        for storm in range(1, args.minutes + 1):
            started = time.monotonic()
            session = storm + 1
            now = int(time.time() * 1000)
            messages: list[tuple[str, bytes]] = []
            for d in devices:  # the new birth, then the old connection's will
                messages.append((f"soak-{tag}/{d}/status", status_payload("online", session, now)))
                messages.append(
                    (f"soak-{tag}/{d}/status", status_payload("offline", session - 1, now))
                )
            victim = (
                active_controller(info.kafka_bootstrap)
                if storm % 3 == 0
                else partition_leader(info.kafka_bootstrap, topics["raw"], 0)
            )
            role = "controller" if storm % 3 == 0 else "raw-0 leader"
            fault = threading.Thread(target=kill_and_restart, args=(stack, victim), daemon=True)
            half = len(messages) // 2
            acked += publish(publisher, messages[:half])
            fault.start()
            acked += publish(publisher, messages[half:])
            converged = None
            while time.monotonic() - started < 55:
                seen = sessions_seen(workers[storm % 2].url)
                if len(seen) == len(devices) and all(
                    v == ("online", session) for v in seen.values()
                ):
                    converged = time.monotonic() - started
                    break
                time.sleep(1)
            fault.join(60)
            row = {"storm": storm, "killed": f"node {victim} ({role})", "converged_s": converged}
            rows.append(row)
            print(
                f"storm {storm:3}: {len(messages):,} messages, killed node {victim} ({role}), "
                + (f"right after {converged:.1f} s" if converged else "NOT right within 55 s"),
                flush=True,
            )
            time.sleep(max(0.0, 60 - (time.monotonic() - started)))
        publisher.disconnect()
        publisher.loop_stop()
        time.sleep(5)
        raw = read_from_beginning(info.kafka_bootstrap, topics["raw"], idle_ms=3000)
        distinct = {
            (e["device"], e["session"], e["kind"]) for e in (json.loads(r.value) for r in raw)
        }
        status = read_from_beginning(info.kafka_bootstrap, topics["status"], idle_ms=3000)
        versions: dict[bytes, list[int]] = defaultdict(list)
        offlines = 0
        for record in sorted(status, key=lambda r: (r.partition, r.offset)):
            change = json.loads(record.value)
            versions[record.key].append(change["version"])
            offlines += change["status"] == "offline"
        broken = sum(
            1
            for seen in versions.values()
            if seen != sorted(seen) or sorted(set(seen)) != list(range(1, max(seen) + 1))
        )
        alive = sum(1 for w in workers if w.proc.poll() is None)
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(60)
        for worker in workers:
            worker.stop()
        stack.down(purge=args.home is None)
    converged_all = [r["converged_s"] for r in rows if r["converged_s"] is not None]
    print(
        f"\n{len(rows)} storms of {2 * len(devices):,} messages, a Kafka node killed in each: "
        f"{acked:,} messages acknowledged, {len(distinct):,} distinct in presence.raw "
        f"(lost {max(acked - len(distinct), 0)}), {len(rows) - len(converged_all)} storms not "
        f"right within 55 s"
        + (
            f", right after {sorted(converged_all)[len(converged_all) // 2]:.1f} s median and "
            f"{max(converged_all):.1f} s at most"
            if converged_all
            else ""
        )
        + f"; {offlines} false offlines; {broken} devices whose versions went back or skipped; "
        f"{alive} of 2 workers alive"
    )
    figures.add("storms", len(rows), "storms")
    figures.add("messages_acknowledged", acked, "messages")
    figures.add("lost", max(acked - len(distinct), 0), "messages", "== 0")
    figures.add("storms_not_converged", len(rows) - len(converged_all), "storms", "== 0")
    if converged_all:
        figures.add("converged_max", max(converged_all), "s")
        figures.add("converged_median", sorted(converged_all)[len(converged_all) // 2], "s")
    figures.add("false_offlines", offlines, "records", "== 0")
    figures.add("devices_with_versions_back_or_skipped", broken, "devices", "== 0")
    figures.add("workers_alive_at_the_end", alive, "workers", "== 2")
    return {"kafka": info.kafka_version, "mosquitto": info.mqtt_broker_version}


def publish(publisher: Any, messages: list[tuple[str, bytes]]) -> int:
    sent = [publisher.publish(t, p, qos=1) for t, p in messages]
    for message in sent:
        message.wait_for_publish(timeout=300)
    return sum(1 for m in sent if m.is_published())


def kill_and_restart(stack: LocalStack, node_id: int) -> None:
    stack.kill_kafka_node(node_id, signal.SIGKILL)
    time.sleep(10)
    stack.start_kafka_node(node_id)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=30, help="storms, one a minute")
    parser.add_argument("--devices", type=int, default=2_000)
    parser.add_argument("--home", type=Path, help="keep the stack and logs here")
    run_bench("cluster_soak", parser, measure)


if __name__ == "__main__":
    main()
