"""What the benchmark scripts share: the command line with `--json`, `--save` and `--compare`
(`run_bench`), a local stack of their own, a worker's event counter, and percentiles."""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqtt_presence import bench_report
from mqtt_presence.bench_report import BenchReport, Figure
from mqtt_presence.settings import KafkaSettings, load_file
from mqtt_presence.stack import LocalStack, StackInfo, secure
from mqtt_presence.stack.manager import BROKERS


class Figures:
    """The figures a benchmark measured, by stable name, for `--json`."""

    def __init__(self) -> None:
        self.items: dict[str, Figure] = {}

    def add(self, name: str, value: float, unit: str, target: str | None = None) -> float:
        self.items[name] = Figure(value=round(float(value), 4), unit=unit, target=target)
        return value


Body = Callable[[argparse.Namespace, Figures], dict[str, str]]  # -> broker versions


def run_bench(module: str, parser: argparse.ArgumentParser, body: Body) -> None:
    """Parse the options, run `body`, and print, keep or compare its figures as asked.

    With `--json` the usual lines go to stderr and stdout carries one JSON document only."""
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document (lines go to stderr)"
    )
    parser.add_argument("--save", type=Path, metavar="DIR", help="keep the JSON document here")
    parser.add_argument(
        "--compare", type=Path, metavar="FILE", help="an earlier --json result: say what changed"
    )
    parser.add_argument(
        "--json-schema", action="store_true", help="print the JSON Schema of --json and stop"
    )
    args = parser.parse_args()
    if args.json_schema:
        sys.stdout.write(msgspec.json.encode(msgspec.json.schema(BenchReport)).decode() + "\n")
        return
    earlier = None
    if args.compare is not None:
        try:
            earlier = msgspec.json.decode(args.compare.read_bytes(), type=BenchReport)
        except (OSError, msgspec.DecodeError) as exc:
            parser.error(f"--compare {args.compare}: not an earlier --json result ({exc})")
    figures = Figures()
    with redirect_stdout(sys.stderr) if args.json else nullcontext():
        brokers = body(args, figures)
    own = {"json", "save", "compare", "json_schema"}
    report = BenchReport(
        command=f"python -m bench.{module}",
        measured_at=bench_report.now_utc(),
        versions=bench_report.versions(**brokers),
        machine=bench_report.machine(),
        settings={k: _plain(v) for k, v in vars(args).items() if k not in own},
        figures=figures.items,
    )
    document = msgspec.json.format(msgspec.json.encode(report))
    if args.json:
        sys.stdout.write(document.decode() + "\n")
    if args.save is not None:
        path = bench_report.save(document, args.save, module, report.measured_at)
        print(f"saved {path}", file=sys.stderr)
    if earlier is not None:
        before = {k: f.value for k, f in earlier.figures.items()}
        now = {k: f.value for k, f in report.figures.items()}
        print(f"against {args.compare} ({earlier.measured_at}):", file=sys.stderr)
        for line in bench_report.changes(before, now):
            print(f"  {line}", file=sys.stderr)


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latency-rate", type=int, default=1_000, help="messages per second")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--home", type=Path, help="use (or start) the local stack here")
    parser.add_argument(
        "--broker",
        choices=sorted(BROKERS),
        help="the MQTT broker of a fresh stack (as `presence stack up --broker`; Mosquitto)",
    )


@contextmanager
def bench_stack(
    home_arg: Path | None, secure: bool = False, broker: str | None = None
) -> Iterator[tuple[StackInfo, Path]]:
    """The stack in `home_arg`, or a fresh one in a temporary folder, stopped and removed after
    (`secure`: `presence stack up --secure`; `broker`: its MQTT broker)."""
    home = home_arg or Path(tempfile.mkdtemp(prefix="presence-bench-"))
    stack = LocalStack(home / "stack" if home_arg is None else home)
    started = not stack.running()
    info = stack.up(progress=print, secure=secure, broker=broker)
    try:
        yield info, home
    finally:
        if started:
            stack.down()
        if home_arg is None:
            shutil.rmtree(home, ignore_errors=True)


def mqtt_client(info: StackInfo, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """A paho client speaking what the stack's broker speaks (MQTT 5, or 3.1.1 for RabbitMQ),
    with a persistent session when it is 3.1.1 (clean session 0; MQTT 5 asks in
    `connect_persistent`), and TCP_NODELAY on its socket."""
    mqtt5 = info.broker.mqtt5
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311,
        clean_session=None if mqtt5 else False,
        manual_ack=manual_ack,
    )
    c.on_socket_open = no_delay  # as the bridge does: a fair ceiling
    return c


def no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """TCP_NODELAY (paho leaves Nagle on): PUBACKs go out at once, as the bridge sends them.
    Against a broker with a small in-flight window (HiveMQ CE: 50) Nagle and delayed ACKs
    make a subscriber wait about 40 ms per window."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_persistent(
    info: StackInfo, c: mqtt.Client, *, resume: bool, receive_maximum: int | None = None
) -> None:
    """Connect with a session kept an hour (MQTT 5: Clean Start = not `resume`, Session Expiry
    3600 s; 3.1.1: clean session 0, kept as long as the broker keeps sessions)."""
    log_in(info, c)
    if not info.broker.mqtt5:
        c.connect(info.mqtt_host, info.mqtt_port)
        return
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    c.connect(info.mqtt_host, info.mqtt_port, clean_start=not resume, properties=props)


def fast_publisher(info: StackInfo) -> mqtt.Client:
    """A connected paho client for bursts: 1,000 QoS 1 messages in flight, no queue limit."""
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"pub-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5 if info.broker.mqtt5 else mqtt.MQTTv311,
    )
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    log_in(info, c)
    c.connect(info.mqtt_host, info.mqtt_port)
    c.loop_start()
    while not c.is_connected():
        time.sleep(0.01)
    return c


def log_in(info: StackInfo, client: mqtt.Client) -> None:
    """On a secure stack: TLS, and the bridge's user (it may read and write every topic)."""
    if info.secure:
        secure.mqtt_login(Path(info.home)).apply(client)


def stack_config(info: StackInfo) -> dict[str, Any]:
    """The config tables that reach the stack: its client.toml when secure, else none (the
    callers give mqtt_url and kafka_bootstrap)."""
    return load_file(info.client_config) if info.client_config else {}


def kafka_of(info: StackInfo) -> KafkaSettings | str:
    """How a benchmark's own Kafka clients reach the stack (kafka_topics.client_options)."""
    return KafkaSettings.load(stack_config(info)) if info.secure else info.kafka_bootstrap


def device_views(url: str, timeout: float = 5.0) -> list[dict[str, Any]] | None:
    """Every device's view from a worker's API (`GET /devices`, page by page), or None when a
    page does not come."""
    views: list[dict[str, Any]] = []
    cursor = ""
    while True:
        query = f"{url}/devices?limit=1000" + (f"&cursor={cursor}" if cursor else "")
        try:
            with urllib.request.urlopen(query, timeout=timeout) as r:
                page = msgspec.json.decode(r.read())
        except (OSError, msgspec.DecodeError):
            return None
        views += page["devices"]
        cursor = page.get("next_cursor") or ""
        if not cursor:
            return views


def p50_p99(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def metric(port: int, name: str) -> float:
    """A counter from a process's `/metrics` (0 when absent, -1 while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0
    except OSError:
        return -1.0


def worker_events(port: int) -> float:
    """The `presence_worker_events_total` a worker's /metrics shows (0 while it does not answer)."""
    return max(metric(port, "presence_worker_events_total"), 0.0)


def events_rate(
    ports: list[int], n: int, before: float = 0.0, timeout_s: float = 600
) -> tuple[float, float]:
    """events/s of the workers on `ports` working through `n` more events than `before`, from
    their first counted one; and how many they counted (less than `n` if time ran out)."""
    first_at = first = 0.0
    done = before
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = sum(worker_events(port) for port in ports)
        if done > before and not first_at:
            first_at, first = time.perf_counter(), done
        if done - before >= n:
            break
        time.sleep(0.2)
    if not first_at:
        raise SystemExit(f"the workers on {ports} processed no event in {timeout_s:.0f} s")
    return (done - first) / (time.perf_counter() - first_at), done - before
