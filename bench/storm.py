"""The reconnect storm, end to end: a broker restart as the platform sees it.

    python -m bench.storm [--devices 100000] [--real 200] [--configs 1x1,2x2] [--json]

For each configuration (bridges x workers): N devices are online (their births with session
token 1; `--real` of them on real MQTT connections with their will registered, the rest published
as a broker would deliver them). Then the storm: every device reconnects (a birth with token 2)
and, interleaved with the births, the broker publishes the old connections' wills (token 1, after
the new birth: field report B's stale will); `--gone` of them (5 %) do not come back, so their will
is the last word. Measured from the first storm message: the messages in, how long until every
device's status is right in the HTTP API (`/fleet`: the online and offline counts) and in
`presence.status` (the last record of each device), the false offlines emitted (offline records of
devices that came back: must be 0), records lost (raw records against messages acknowledged),
and the births a lagging bridge handed on after a grace deadline it had not passed yet, which the
workers counted as in time (`presence_worker_signs_of_life_in_time_total`, summed).
With two bridges they share the subscription (`$share`), with two workers they share the
partitions. The bridges and workers are processes of their own, as deployed.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from kafka import KafkaConsumer

from bench.common import Figures, bench_stack, fast_publisher, metric, run_bench
from mqtt_presence.kafka_topics import TopicSpec, ensure_topics, read_from_beginning
from mqtt_presence.settings import render_config
from mqtt_presence.sim.mqtt_device import MqttDevice, status_payload
from mqtt_presence.stack import StackInfo
from mqtt_presence.stack.ports import free_port
from mqtt_presence.worker_process import WorkerProcess

PARTITIONS = 8
GRACE_MS = 5_000


def publish_all(c: mqtt.Client, messages: list[tuple[str, bytes]]) -> None:
    for chunk in range(0, len(messages), 5_000):  # wait per chunk: paho's queue stays small
        infos = [c.publish(t, p, qos=1) for t, p in messages[chunk : chunk + 5_000]]
        for inf in infos:
            inf.wait_for_publish(timeout=300)


def start_bridges(
    info: StackInfo, home: Path, tag: str, count: int
) -> list[tuple[subprocess.Popen[bytes], int]]:
    out = []
    for i in range(count):
        port = free_port()
        bridge: dict[str, Any] = {
            "mqtt_url": info.mqtt_url,
            "client_id": f"storm-bridge-{tag}-{i}",
            "http_port": port,
            "state_dir": str(home / f"bridge-{tag}-{i}"),
            "profiles": [{"kind": "json", "topic": f"storm-{tag}/{{device}}/status"}],
            "kafka_bootstrap": info.kafka_bootstrap,
            "raw_topic": f"raw-{tag}",
            "dlq_topic": f"dlq-{tag}",
            "partitions": PARTITIONS,
        }
        if count > 1:
            bridge["shared_group"] = f"storm-{tag}"
            bridge["progress_interval_s"] = 1.0  # as the README advises for shared bridges
        config = home / f"bridge-{tag}-{i}.toml"
        config.write_text(render_config({"bridge": bridge}))
        log = (home / f"bridge-{tag}-{i}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "mqtt_presence", "bridge", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        out.append((proc, port))
    for proc, port in out:
        deadline = time.monotonic() + 60
        while not metric(port, "presence_bridge_messages_received_total") >= 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"a bridge did not start; see {home}/bridge-{tag}-*.log")
            time.sleep(0.2)
    return out


def fleet(port: int) -> dict[str, int]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/fleet", timeout=5) as r:
            body: dict[str, int] = json.loads(r.read())
            return body
    except (OSError, ValueError):
        return {}


class StatusTail:
    """Reads `presence.status` as it fills: each device's last status, when the whole fleet was
    first right, and the offline records of devices that came back (false offlines)."""

    def __init__(self, info: StackInfo, topic: str, want: dict[str, str]) -> None:
        self.want = want
        self.last: dict[str, str] = {}
        self.right = 0
        self.right_at: float | None = None
        self.offline_since_storm: set[str] = set()
        self.storm_ms: int | None = None
        self._consumer = KafkaConsumer(
            topic,
            bootstrap_servers=info.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=200).values():
                for record in records:
                    self._take(json.loads(record.value))

    def _take(self, change: dict[str, Any]) -> None:
        device, status = change["device"], change["status"]
        was_right = self.last.get(device) == self.want.get(device)
        self.last[device] = status
        is_right = status == self.want.get(device)
        self.right += int(is_right) - int(was_right)
        if (
            self.storm_ms is not None
            and status == "offline"
            and change["decided_at"] >= self.storm_ms
        ):
            self.offline_since_storm.add(device)
        if self.right == len(self.want) and self.right_at is None and self.storm_ms is not None:
            self.right_at = time.monotonic()

    def false_offlines(self) -> int:
        return sum(1 for d in self.offline_since_storm if self.last.get(d) == "online")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def storm(
    info: StackInfo, home: Path, args: argparse.Namespace, bridges: int, workers: int
) -> dict[str, float]:
    tag = uuid.uuid4().hex[:6]
    topics = {name: f"{name}-{tag}" for name in ("raw", "status", "dlq", "ticks")}
    ensure_topics(info.kafka_bootstrap, "bench", [TopicSpec(topics["raw"], PARTITIONS)])
    procs = [
        WorkerProcess.start(
            info.kafka_bootstrap,
            home,
            topics,
            f"storm-{tag}",
            partitions=PARTITIONS,
            store="rocksdb",
            presence={"offline_grace_ms": GRACE_MS},
        )
        for _ in range(workers)
    ]
    for w in procs:
        w.wait_ready(timeout=300)
    bridge_procs = start_bridges(info, home, tag, bridges)
    n, real = args.devices, min(args.real, args.devices)
    names = [f"d{i:07d}" for i in range(n)]
    rnd = random.Random(1)
    gone = set(rnd.sample(names[real:], int(n * args.gone)))
    topic = f"storm-{tag}/{{}}/status"
    pub = fast_publisher(info)
    clients: list[MqttDevice] = []
    want = {d: ("offline" if d in gone else "online") for d in names}
    tail = StatusTail(info, topics["status"], want)
    pool = ThreadPoolExecutor(max_workers=32)
    try:
        # before: everyone online
        def born(name: str, session: int) -> MqttDevice:
            dev = MqttDevice(
                name,
                info.mqtt_host,
                info.mqtt_port,
                session=session,
                topic=topic.format(name),
                client_id=f"{name}-{session}",
            ).connect()
            dev.birth()
            return dev

        clients += pool.map(lambda name: born(name, 1), names[:real])
        publish_all(pub, [(topic.format(d), status_payload("online", 1)) for d in names[real:]])
        port = procs[0].port
        deadline = time.monotonic() + 900
        shown = time.monotonic()
        while (now_online := fleet(port).get("online", 0)) < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"the fleet never came online: {fleet(port)}")
            if time.monotonic() - shown > 10:
                print(f"  {now_online:,} of {n:,} online", flush=True)
                shown = time.monotonic()
            time.sleep(0.5)
        received_before = received(bridge_procs)
        print(f"  {n:,} devices online; the storm", flush=True)
        # The storm. Real devices drop (the broker publishes their will at once) and come back
        # under a new client id within the grace; the others come back with a new birth and the
        # broker delivers their old connection's will after it; the gone ones only have a will.
        tail.storm_ms = time.time_ns() // 1_000_000
        started = time.monotonic()

        def power_cycle(dev: MqttDevice) -> MqttDevice:
            dev.die()
            return born(dev.device_id, 2)

        reconnected = pool.map(power_cycle, clients)  # meanwhile, the rest of the fleet
        storm_msgs: list[tuple[str, bytes]] = []
        for d in names[real:]:
            if d not in gone:
                storm_msgs.append((topic.format(d), status_payload("online", 2)))
            storm_msgs.append((topic.format(d), status_payload("offline", 1)))
        publish_all(pub, storm_msgs)
        clients += reconnected
        published_s = time.monotonic() - started
        want_online, want_offline = n - len(gone), len(gone)
        api_s = None
        while time.monotonic() - started < 900:
            f = fleet(port)
            if f.get("online") == want_online and f.get("offline") == want_offline:
                api_s = time.monotonic() - started
                break
            time.sleep(0.2)
        if api_s is None:
            raise SystemExit(f"the API never showed the right fleet: {fleet(port)}")
        while tail.right_at is None and time.monotonic() - started < 900:
            time.sleep(0.2)
        if tail.right_at is None:
            raise SystemExit(f"presence.status never right: {tail.right} of {n}")
        storm_in = received(bridge_procs) - received_before
        acked = sum(
            metric(p, "presence_bridge_messages_acknowledged_total") for _, p in bridge_procs
        )
        raw = len(read_from_beginning(info.kafka_bootstrap, topics["raw"]))
        in_time = sum(
            max(metric(w.port, "presence_worker_signs_of_life_in_time_total"), 0) for w in procs
        )
        return {
            "devices": n,
            "storm_messages_in": storm_in,
            "published_s": published_s,
            "messages_per_s": storm_in / published_s,
            "api_right_s": api_s,
            "status_topic_right_s": tail.right_at - started,
            "false_offlines": tail.false_offlines(),
            "lost": max(acked - raw, 0),
            # births a lagging bridge handed on after a grace deadline it had not passed yet
            "signs_of_life_in_time": in_time,
        }
    finally:
        pool.shutdown()
        for dev in clients:
            dev.client.disconnect()
            dev.client.loop_stop()
        tail.close()
        pub.disconnect()
        pub.loop_stop()
        for proc, _ in bridge_procs:
            proc.terminate()
            proc.wait(30)
        for w in procs:
            w.stop()


def received(bridges: list[tuple[subprocess.Popen[bytes], int]]) -> float:
    return sum(max(metric(p, "presence_bridge_messages_received_total"), 0) for _, p in bridges)


def measure(args: argparse.Namespace, figures: Figures) -> dict[str, str]:
    with bench_stack(args.home) as (info, home):
        rows = []
        for config in args.configs.split(","):
            bridges, workers = (int(x) for x in config.split("x"))
            print(
                f"storm: {args.devices:,} devices, {bridges} bridge(s), {workers} worker(s)",
                flush=True,
            )
            r = storm(info, home, args, bridges, workers)
            rows.append((config, r))
            for key, value in r.items():
                unit = {
                    "devices": "devices",
                    "storm_messages_in": "messages",
                    "false_offlines": "records",
                    "lost": "records",
                    "signs_of_life_in_time": "events",
                    "messages_per_s": "messages/s",
                }.get(key, "s")
                target = "== 0" if key in ("false_offlines", "lost") else None
                figures.add(f"{config}.{key}", value, unit, target)
        print(
            f"\n{'bridges x workers':18} {'messages in':>12} {'msg/s in':>9} {'API right':>10} "
            f"{'status right':>13} {'false offl.':>12} {'lost':>5} {'in time':>8}"
        )
        for config, r in rows:
            print(
                f"{config:18} {r['storm_messages_in']:>12,.0f} {r['messages_per_s']:>9,.0f} "
                f"{r['api_right_s']:>9.1f}s {r['status_topic_right_s']:>12.1f}s "
                f"{r['false_offlines']:>12.0f} {r['lost']:>5.0f} "
                f"{r['signs_of_life_in_time']:>8.0f}"
            )
        return {"kafka": info.kafka_version, "mosquitto": info.mqtt_broker_version}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--real", type=int, default=200, help="devices on real MQTT connections")
    parser.add_argument("--gone", type=float, default=0.05, help="share that does not come back")
    parser.add_argument("--configs", default="1x1,2x2", help="bridges x workers, comma separated")
    parser.add_argument("--home", type=Path, help="use (or start) the local stack here")
    run_bench("storm", parser, measure)


if __name__ == "__main__":
    main()
