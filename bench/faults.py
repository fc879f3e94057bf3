"""Faults of every part, measured: what devices were told against what the platform kept.

    python -m bench.faults [--faults kill-mosquitto,stop-kafka,...] [--devices 2000]
                           [--messages 6000] [--rate 200] [--workers 2] [--home DIR]

For each fault, on one local stack, with a bridge and `--workers` workers as processes of their
own (fresh topics and consumer group per fault):

1. A paced stream of numbered QoS 1 messages from `--devices` devices (published by a few MQTT
   connections on the devices' behalf, each device always on the same one, so its messages stay
   in order): per device births with a counter as session token, one will for two devices in
   five (for half of those the last word, for the other half followed by a birth, the device
   back). Every message carries its number as an MQTT 5 user property (`mid`), which the bridge
   copies into the raw record.
2. When 40 % is published, the fault: `kill-X` is SIGKILL of X, `--down-s` of waiting, then X
   started again in place (Kafka and Mosquitto on their ports with their data, as `presence
   stack restart` does; the bridge with the same client id and config; the worker with the same
   app id and data dir). `stop-X` is SIGSTOP for longer than the timeout that notices it, then
   SIGCONT: Mosquitto and the bridge 12 s (MQTT keepalive 5 s here: a peer gives up after 7.5 s),
   Kafka 15 s (the bridge's `delivery_timeout_ms` is 10 s here; the workers' group session 10 s),
   a worker 15 s (its group session, 10 s: its partitions move to the other worker, and it comes
   back after them). A part that exits by itself meanwhile is started again as a supervisor
   would (`restarts`).
3. After the stream and every PUBACK: `acked`, the messages acknowledged to the devices;
   `in raw`, distinct message numbers in the raw topic, and `dups`, records beyond those;
   `lost`, acknowledged messages not in the raw topic (for `kill-mosquitto`, `lost by broker`:
   the bridge acknowledges a message only once Kafka has it, so an acknowledged message missing
   from Kafka after a Mosquitto crash was lost by Mosquitto, within its documented window of
   `autosave_on_changes 100`); devices whose status is right (what the last acknowledged message
   of the device says) in the HTTP API (`GET /devices`, every page) and in the status topic (as
   a consumer that upserts on a greater `version` sees it); `back`, status records whose version
   is lower than one already seen for the device; `converged`, seconds from the end of the fault
   (restart done, or SIGCONT) until both the API and the status topic showed every device as the
   raw topic says and stayed so (the stream goes on for a while after the fault: its own length
   is printed as `stream left`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import Figures, bench_stack, device_views, metric, run_bench
from mqtt_presence.core.records import is_progress
from mqtt_presence.kafka_topics import TopicSpec, ensure_topics
from mqtt_presence.settings import render_config
from mqtt_presence.sim.mqtt_device import status_payload
from mqtt_presence.stack import LocalStack, StackInfo, kafka
from mqtt_presence.stack.ports import free_port
from mqtt_presence.stack.processes import pid_running
from mqtt_presence.worker_process import WorkerProcess

PARTITIONS = 8
GRACE_MS = 1_000  # the core's offline grace: a will shows as offline this long after
KEEPALIVE_S = 5  # the bridge's and the publishers' MQTT keepalive
BRIDGE_DELIVERY_TIMEOUT_MS = 10_000
PUBLISHERS = 4
FAULT_AT = 0.4  # share of the stream published when the fault starts
STOP_S = {"mosquitto": 12.0, "kafka": 15.0, "bridge": 12.0, "worker": 15.0}
PARTS = ("mosquitto", "kafka", "bridge", "worker")
FAULTS = [f"{how}-{part}" for how in ("kill", "stop") for part in PARTS]
WAIT_ACKS_S = 180.0
CONVERGE_S = 180.0


@dataclass(frozen=True)
class Message:
    number: int
    device: str
    status: str  # what the device says: online (birth) or offline (will)
    session: int


def plan(devices: int, messages: int, seed: int = 1) -> list[Message]:
    """The stream: round r holds the r-th message of every device that has one, shuffled.

    A device's j-th message is a birth with session j + 1; devices d % 5 == 0 end with the will
    of their last session, devices d % 5 == 1 send their first session's will second and come
    back with a birth after it (at most one will per device: no flap damping)."""
    rnd = random.Random(seed)
    per = [messages // devices + (1 if d < messages % devices else 0) for d in range(devices)]
    out: list[Message] = []
    for r in range(max(per, default=0)):
        round_ = [d for d in range(devices) if r < per[d]]
        rnd.shuffle(round_)
        for d in round_:
            n = per[d]
            will = (d % 5 == 0 and r == n - 1 and r >= 1) or (d % 5 == 1 and r == 1 and n > 2)
            out.append(
                Message(
                    number=len(out),
                    device=f"f{d:05d}",
                    status="offline" if will else "online",
                    session=r if will else r + 1,
                )
            )
    return out


class Publishers:
    """A few MQTT connections publishing the devices' messages at a steady rate; each device
    always on the same connection. They reconnect by themselves (every 1 to 2 s) and resend
    what was not acknowledged, as devices do."""

    def __init__(self, info: StackInfo, count: int) -> None:
        self.clients: list[mqtt.Client] = []
        self.infos: dict[int, mqtt.MQTTMessageInfo] = {}
        self.last_ack = 0.0
        for _ in range(count):
            c = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=f"faults-pub-{uuid.uuid4().hex[:8]}",
                protocol=mqtt.MQTTv5,
            )
            c.max_inflight_messages_set(1000)
            c.max_queued_messages_set(0)
            c.reconnect_delay_set(1, 2)
            c.on_publish = self._on_publish
            c.connect(info.mqtt_host, info.mqtt_port, keepalive=KEEPALIVE_S)
            c.loop_start()
            self.clients.append(c)
        deadline = time.monotonic() + 30
        while not all(c.is_connected() for c in self.clients):
            if time.monotonic() > deadline:
                raise SystemExit("the publishers did not connect to Mosquitto")
            time.sleep(0.05)

    def _on_publish(self, *_args: Any) -> None:
        self.last_ack = time.monotonic()

    def publish(self, topic: str, m: Message) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = [("mid", str(m.number))]
        client = self.clients[int(m.device[1:]) % len(self.clients)]
        payload = status_payload(m.status, m.session)
        self.infos[m.number] = client.publish(topic, payload, qos=1, properties=props)

    def acked(self) -> set[int]:
        # not is_published(): it raises for a message published while the connection was down,
        # even once paho has sent it again and it was acknowledged
        return {n for n, info in self.infos.items() if info._published}

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


@dataclass
class Managed:
    """A bridge or worker process that can be killed, stopped and started again with the same
    command (same config: client id, app id, data dir, port)."""

    name: str
    command: list[str]
    log: Path
    cwd: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    held: bool = False  # the fault has it: the supervisor leaves it alone
    restarts: int = 0  # exits nobody asked for, started again by the supervisor
    exits: list[int] = field(default_factory=list)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, cwd=self.cwd
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def supervise(self) -> None:
        if self.held or self.proc is None or self.proc.poll() is None:
            return
        self.exits.append(self.proc.returncode)
        print(f"  {self.name} exited with {self.proc.returncode}: started again", flush=True)
        self.restarts += 1
        self.start()

    def terminate(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)  # in case it is stopped
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


class StatusTail:
    """Reads the status topic as it fills: per device, each change of what a consumer that
    upserts on a greater version holds (time, status), and records whose version went back."""

    def __init__(self, info: StackInfo, topic: str) -> None:
        self.view: dict[str, tuple[int, str]] = {}  # device -> (version, status)
        self.changed_at: dict[str, float] = {}
        self.back = 0
        self.repeats = 0
        self.records = 0
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
            try:
                batches = self._consumer.poll(timeout_ms=200)
            except Exception as exc:
                print(f"  status reader: {exc}", flush=True)
                time.sleep(1)
                continue
            for records in batches.values():
                for record in records:
                    if record.value is not None:
                        self._take(json.loads(record.value))

    def _take(self, change: dict[str, Any]) -> None:
        self.records += 1
        device, version, status = change["device"], int(change["version"]), change["status"]
        held = self.view.get(device)
        if held is not None and version < held[0]:
            self.back += 1
            return
        if held is not None and version == held[0]:
            self.repeats += 1
            return
        if held is None or held[1] != status:
            self.changed_at[device] = time.monotonic()
        self.view[device] = (version, status)

    def statuses(self) -> dict[str, str]:
        return {d: s for d, (_v, s) in self.view.items()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


class ApiWatch:
    """Polls `GET /devices` (every page) of the first worker that answers, twice a second, and
    keeps each different answer with its time (None: no worker answered in full)."""

    def __init__(self, ports: Callable[[], list[int]]) -> None:
        self.ports = ports
        self.seen: list[tuple[float, dict[str, str] | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            answer = self.ask()
            if not self.seen or self.seen[-1][1] != answer:
                self.seen.append((now, answer))
            self._stop.wait(0.5)

    def ask(self) -> dict[str, str] | None:
        for port in self.ports():
            got = devices_of(port)
            if got is not None:
                return got
        return None

    def right_since(self, want: dict[str, str]) -> float | None:
        """When the API last became right for every device, if it is right now."""
        since = None
        for t, answer in self.seen:
            since = (t if since is None else since) if answer == want else None
        return since

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def devices_of(port: int) -> dict[str, str] | None:
    views = device_views(f"http://127.0.0.1:{port}")
    if views is None:
        return None
    return {d["device"]: "offline" if d.get("sleeping") else d["status"] for d in views}


def bridge(info: StackInfo, home: Path, tag: str, topics: dict[str, str]) -> Managed:
    port = free_port()
    config = home / f"bridge-{tag}.toml"
    table = {
        "mqtt_url": info.mqtt_url,
        "client_id": f"faults-bridge-{tag}",
        "http_port": port,
        "state_dir": str(home / f"bridge-{tag}-state"),
        "keepalive_s": KEEPALIVE_S,
        "delivery_timeout_ms": BRIDGE_DELIVERY_TIMEOUT_MS,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 2.0,
        "profiles": [{"kind": "json", "topic": f"faults-{tag}/{{device}}/status"}],
        "kafka_bootstrap": info.kafka_bootstrap,
        "raw_topic": topics["raw"],
        "dlq_topic": topics["dlq"],
        "partitions": PARTITIONS,
    }
    config.write_text(render_config({"bridge": table}))
    command = [sys.executable, "-m", "mqtt_presence", "bridge", "--config", str(config)]
    b = Managed("the bridge", command, home / f"bridge-{tag}.log", home, port)
    b.start()
    deadline = time.monotonic() + 60
    # subscribed: from then on the broker keeps every message for the bridge's session
    while "subscribed to" not in b.log.read_text(errors="replace"):
        if b.proc is None or b.proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the bridge did not start; see {b.log}")
        time.sleep(0.2)
    return b


def workers(info: StackInfo, home: Path, tag: str, topics: dict[str, str], n: int) -> list[Managed]:
    out = []
    for i in range(n):
        w = WorkerProcess.start(
            info.kafka_bootstrap,
            home,
            topics,
            f"faults-{tag}",
            partitions=PARTITIONS,
            store="rocksdb",
            presence={"offline_grace_ms": GRACE_MS},
            data_dir=home / f"worker-{tag}-{i}-data",
        )
        # the command WorkerProcess.start ran, to start the same worker again
        command = [
            sys.executable,
            "-m",
            "mqtt_presence",
            "worker",
            "--config",
            str(home / f"worker-{w.port}.toml"),
            "--kafka-bootstrap",
            info.kafka_bootstrap,
        ]
        out.append((w, Managed(f"worker {i}", command, w.log, home, w.port, proc=w.proc)))
    for w, _ in out:
        w.wait_ready(timeout=300)
    return [m for _, m in out]


def read_to_end(bootstrap: str, topic: str, timeout_s: float = 120.0) -> list[bytes]:
    """Every record of `topic`, up to the end offsets it has now (no group, no commits)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise SystemExit(f"could not read {topic} to its end in {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(
                    r.value for r in records if r.value is not None and not is_progress(r.headers)
                )
        return out
    finally:
        consumer.close()


def explain(
    info: StackInfo, group: str, raw_topic: str, want: dict[str, str], got: dict[str, str]
) -> None:
    """For a fault that did not converge: per raw partition, the group's committed offset
    against the end, and the devices whose status is wrong."""
    wrong = Counter(partition_of(d) for d, s in want.items() if got.get(d) != s)
    consumer = KafkaConsumer(
        bootstrap_servers=info.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        parts = [TopicPartition(raw_topic, p) for p in range(PARTITIONS)]
        ends = consumer.end_offsets(parts)
        for tp in parts:
            print(
                f"  raw partition {tp.partition}: committed {consumer.committed(tp)} of "
                f"{ends[tp]}; devices with a wrong status {wrong.get(tp.partition, 0)}",
                flush=True,
            )
    finally:
        consumer.close()


def partition_of(device: str) -> int:
    """The raw partition of a device: Kafka's default partitioner (murmur2), as the bridge's."""
    return int(murmur2(device.encode()) & 0x7FFFFFFF) % PARTITIONS


def wait_gone(pid: int, marker: str) -> None:
    while pid_running(pid, marker):
        time.sleep(0.05)


def inject(
    fault: str, stack: LocalStack, bridge_: Managed, workers_: list[Managed], down_s: float
) -> None:
    """Do the fault and the recovery; return when the part is back (or continued)."""
    how, part = fault.split("-", 1)
    info = stack.info()
    assert info is not None
    if part in ("mosquitto", "kafka"):
        pid, marker = (
            (info.mqtt_pid, "mosquitto")
            if part == "mosquitto"
            else (info.kafka_pid, kafka.MAIN_CLASS)
        )
        if how == "kill":
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, marker)
            time.sleep(down_s)
            if part == "mosquitto":
                stack.start_mqtt()
            else:
                stack.start_kafka()
        else:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(STOP_S[part])
            os.kill(pid, signal.SIGCONT)
        return
    target = bridge_ if part == "bridge" else workers_[0]
    target.held = True
    try:
        if how == "kill":
            target.kill()
            time.sleep(down_s)
            target.start()
        else:
            os.kill(target.pid, signal.SIGSTOP)
            time.sleep(STOP_S[part])
            os.kill(target.pid, signal.SIGCONT)
    finally:
        target.held = False


def last_by_device(messages: list[Message], numbers: set[int]) -> dict[str, str]:
    """Each device's status as the last of its messages among `numbers` says."""
    out: dict[str, str] = {}
    for m in messages:  # in number order, which is each device's order
        if m.number in numbers:
            out[m.device] = m.status
    return out


def right(want: dict[str, str], got: dict[str, str] | None) -> int:
    got = got or {}
    return sum(1 for d, s in want.items() if got.get(d) == s)


def scenario(
    stack: LocalStack, home: Path, args: argparse.Namespace, fault: str
) -> dict[str, float]:
    info = stack.info()
    assert info is not None
    tag = uuid.uuid4().hex[:6]
    topics = {name: f"faults-{name}-{tag}" for name in ("raw", "status", "dlq", "ticks")}
    ensure_topics(info.kafka_bootstrap, "bench", [TopicSpec(topics["raw"], PARTITIONS)])
    ws = workers(info, home, tag, topics, args.workers)
    b = bridge(info, home, tag, topics)
    parts = [b, *ws]
    messages = plan(args.devices, args.messages)
    topic = f"faults-{tag}/{{}}/status"
    tail = StatusTail(info, topics["status"])
    api = ApiWatch(lambda: [w.port for w in ws])
    pubs = Publishers(info, PUBLISHERS)
    stop_supervising = threading.Event()

    def supervise() -> None:
        while not stop_supervising.wait(0.5):
            for p in parts:
                p.supervise()

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()
    fault_end: list[float] = []
    fault_error: list[BaseException] = []

    def run_fault() -> None:
        try:
            inject(fault, stack, b, ws, args.down_s)
            fault_end.append(time.monotonic())
        except BaseException as exc:
            fault_error.append(exc)

    fault_thread = threading.Thread(target=run_fault, daemon=True)
    try:
        started = time.monotonic()
        at = int(len(messages) * FAULT_AT)
        for i, m in enumerate(messages):
            if i == at:
                print(f"  {fault} at message {i:,}", flush=True)
                fault_thread.start()
            delay = started + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pubs.publish(topic.format(m.device), m)
        stream_end = time.monotonic()
        fault_thread.join(600)
        if fault_error:
            raise fault_error[0]
        end = fault_end[0]
        print(
            f"  fault over {end - started - at / args.rate:.1f} s after it began; "
            f"stream ended {stream_end - end:+.1f} s from then",
            flush=True,
        )
        deadline = time.monotonic() + WAIT_ACKS_S
        while len(pubs.acked()) < len(messages) and time.monotonic() < deadline:
            time.sleep(0.5)
        acked = pubs.acked()
        # the bridge drains: nothing in flight for 3 s in a row
        quiet_since = None
        deadline = time.monotonic() + WAIT_ACKS_S
        while time.monotonic() < deadline:
            if metric(b.port, "presence_bridge_in_flight") == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= 3:
                    break
            else:
                quiet_since = None
            time.sleep(0.5)
        raw = read_to_end(info.kafka_bootstrap, topics["raw"])
        numbers = [int(json.loads(value)["properties"]["mid"]) for value in raw]
        arrived = set(numbers)
        want = last_by_device(messages, acked)
        want_arrived = last_by_device(messages, arrived)
        deadline = time.monotonic() + CONVERGE_S
        while time.monotonic() < deadline:
            if tail.statuses() == want_arrived and api.right_since(want_arrived) is not None:
                break
            time.sleep(0.5)
        time.sleep(1)  # one more poll of the API
        api_since = api.right_since(want_arrived)
        status_view = tail.statuses()
        status_since = (
            max(tail.changed_at[d] for d in want_arrived) if status_view == want_arrived else None
        )
        converged = (
            max(api_since, status_since, end) - end
            if api_since is not None and status_since is not None
            else -1.0
        )
        if converged < 0:
            explain(info, f"faults-{tag}", topics["raw"], want_arrived, status_view)
        lost = len(acked - arrived)
        broker = fault == "kill-mosquitto"
        return {
            "published": len(messages),
            "acked": len(acked),
            "raw_distinct": len(arrived),
            "raw_records": len(numbers),
            "duplicates": len(numbers) - len(arrived),
            "lost": 0 if broker else lost,
            "lost_by_broker": lost if broker else 0,
            "unacked_in_raw": len(arrived - acked),
            "devices": len(want),
            "api_right": right(want, api.seen[-1][1] if api.seen else None),
            "status_right": right(want, status_view),
            "versions_back": tail.back,
            "status_repeats": tail.repeats,
            "converged_s": converged,
            "stream_left_s": max(stream_end - end, 0.0),
            "restarts": sum(p.restarts for p in parts),
        }
    finally:
        stop_supervising.set()
        supervisor.join(5)
        if fault_thread.is_alive():
            fault_thread.join(120)
        pubs.close()
        api.close()
        tail.close()
        for p in parts:
            p.terminate()
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            for p in parts:
                shutil.copy(p.log, args.logs / f"{fault}-{p.log.name}")


UNITS = {"converged_s": "s", "stream_left_s": "s", "devices": "devices", "restarts": "processes"}
ZERO = {"lost", "versions_back"}
COLUMNS = (
    ("fault", 15, None),
    ("acked", 6, "acked"),
    ("in raw", 6, "raw_distinct"),
    ("dups", 5, "duplicates"),
    ("lost", 5, "lost"),
    ("lost by broker", 14, "lost_by_broker"),
    ("API right", 10, "api_right"),
    ("topic right", 11, "status_right"),
    ("back", 5, "versions_back"),
    ("converged", 10, "converged_s"),
    ("stream left", 11, "stream_left_s"),
    ("restarts", 8, "restarts"),
)


def row(fault: str, r: dict[str, float]) -> str:
    cells = []
    for _name, width, key in COLUMNS:
        if key is None:
            cells.append(f"{fault:<{width}}")
        elif key.endswith("_s"):
            value = f"{r[key]:.1f} s" if r[key] >= 0 else "never"
            cells.append(f"{value:>{width}}")
        else:
            cells.append(f"{r[key]:>{width},.0f}")
    return " ".join(cells)


def measure(args: argparse.Namespace, figures: Figures) -> dict[str, str]:
    chosen = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FAULTS]
    if unknown:
        raise SystemExit(f"unknown faults {unknown}; choose among {','.join(FAULTS)}")
    with bench_stack(args.home) as (info, home):
        stack = LocalStack(Path(info.home))
        rows = []
        for fault in chosen:
            print(
                f"{fault}: {args.devices:,} devices, {args.messages:,} messages at "
                f"{args.rate}/s, 1 bridge, {args.workers} worker(s)",
                flush=True,
            )
            with contextlib.suppress(Exception):
                stack.up()  # a part a previous fault left down comes back in place
            r = scenario(stack, home, args, fault)
            rows.append((fault, r))
            print("  " + row(fault, r), flush=True)
            for key, value in r.items():
                unit = UNITS.get(key, "messages" if "right" not in key else "devices")
                figures.add(f"{fault}.{key}", value, unit, "== 0" if key in ZERO else None)
        print("\n" + " ".join(f"{name:>{w}}" if k else f"{name:<{w}}" for name, w, k in COLUMNS))
        for fault, r in rows:
            print(row(fault, r))
        latest = stack.info() or info
        return {"kafka": latest.kafka_version, "mosquitto": latest.mqtt_broker_version}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma separated, of {','.join(FAULTS)}"
    )
    parser.add_argument("--devices", type=int, default=2_000)
    parser.add_argument("--messages", type=int, default=6_000)
    parser.add_argument("--rate", type=int, default=200, help="messages per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--down-s", type=float, default=5.0, help="how long a killed part stays down"
    )
    parser.add_argument("--home", type=Path, help="use (or start) the local stack here")
    parser.add_argument("--logs", type=Path, help="keep the bridge's and workers' logs here")
    run_bench("faults", parser, measure)


if __name__ == "__main__":
    main()
