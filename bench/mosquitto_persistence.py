"""How much a Mosquitto crash loses of what it acknowledged, per autosave setting.

    python -m bench.mosquitto_persistence [--messages N] [--runs R]

The bridge's persistent session is where messages wait while the bridge cannot drain them (a
Kafka outage, a stalled bridge). Mosquitto keeps that session in memory and writes its whole
database to disk after `autosave_interval` seconds, or, with `autosave_on_changes true`, after
that many changes (mosquitto.conf(5)). A crash loses whatever arrived since the last write, yet
every one of those messages was already acknowledged (PUBACK) to its device, which will never
send it again.

For each setting: a fresh Mosquitto from the stack's own config; a subscriber makes a persistent
session (Clean Start 0, QoS 1) and goes away, as a bridge without Kafka does; a publisher sends N
QoS 1 births and waits for every PUBACK (the publish rate is measured here: what saving costs the
broker); Mosquitto is killed with SIGKILL at once; it is started again on the same data, and the
subscriber takes its session back and counts what it gets. Printed per setting: acknowledged,
recovered, lost, and the publish rate with its ratio to the rate of today's setting in the same run.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import Figures, run_bench
from mqtt_presence.stack import mosquitto
from mqtt_presence.stack.ports import HOST, free_port
from mqtt_presence.stack.processes import stop_pid

SETTINGS = {  # name: (autosave_interval, autosave_on_changes)
    "every 1 s (before)": (1, False),
    "every change": (1, True),
    "every 10 changes": (10, True),
    "every 100 changes": (100, True),
    "every 1000 changes": (1000, True),
}
SESSION = "bench-persistent-bridge"
CHUNK = 10_000


def client(port: int, client_id: str, clean_start: bool) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    c.connect(HOST, port, clean_start=clean_start, properties=props)
    return c


def start(binary: Path, home: Path, port: int, interval: int, on_changes: bool) -> int:
    conf = mosquitto.prepare(home, port, autosave_interval=interval, autosave_on_changes=on_changes)
    proc = mosquitto.start(binary, home, conf)
    mosquitto.wait_ready(port, lambda: proc.poll() is None, home / "mosquitto.log")
    return proc.pid


def one_run(binary: Path, messages: int, interval: int, on_changes: bool) -> tuple[int, int, float]:
    """(acknowledged, recovered, publish rate) for one setting."""
    with tempfile.TemporaryDirectory(prefix="presence-mosq-") as tmp:
        home, port = Path(tmp), free_port()
        pid = start(binary, home, port, interval, on_changes)
        try:
            acked, rate = fill_then_crash(port, pid, messages)
            pid = start(binary, home, port, interval, on_changes)
            return acked, len(drain(port)), rate
        finally:
            stop_pid(pid, "mosquitto", timeout=5)  # also when a run fails half-way


def fill_then_crash(port: int, pid: int, messages: int) -> tuple[int, float]:
    """A persistent session that is away, N acknowledged births for it, then SIGKILL."""
    sub = client(port, SESSION, clean_start=False)
    sub.loop_start()
    sub.subscribe("bench/+/status", qos=1)
    time.sleep(0.3)
    sub.disconnect()
    sub.loop_stop()

    pub = client(port, "bench-publisher", clean_start=True)
    pub.loop_start()
    began = time.perf_counter()
    infos: list[mqtt.MQTTMessageInfo] = []
    for first in range(0, messages, CHUNK):  # fewer outstanding than paho's 65535 ids
        chunk = [
            pub.publish(f"bench/d{i % 500}/status", f'{{"status":"online","session":{i}}}', 1)
            for i in range(first, min(messages, first + CHUNK))
        ]
        for info in chunk:
            info.wait_for_publish(timeout=60)
        infos += chunk
    rate = messages / (time.perf_counter() - began)
    acked = sum(1 for info in infos if info.is_published())
    os.kill(pid, signal.SIGKILL)  # right after the last PUBACK
    pub.loop_stop()
    return acked, rate


def drain(port: int) -> set[bytes]:
    """What the session gets back, until nothing more arrives for 2 s."""
    got: set[bytes] = set()
    sub = client(port, SESSION, clean_start=False)
    sub.on_message = lambda _c, _u, m: got.add(bytes(m.payload))
    sub.loop_start()
    last, seen = time.monotonic(), -1
    while time.monotonic() - last < 2.0:
        if len(got) != seen:
            seen, last = len(got), time.monotonic()
        time.sleep(0.1)
    sub.disconnect()
    sub.loop_stop()
    return got


def measure(args: argparse.Namespace, figures: Figures) -> dict[str, str]:
    binary = mosquitto.ensure_installed(print)
    version = mosquitto.version(binary)
    print(f"Mosquitto {version}; {args.messages} QoS 1 births, {args.runs} runs")
    results: dict[str, tuple[float, float, float]] = {}
    for name, (interval, on_changes) in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        runs = [one_run(binary, args.messages, interval, on_changes) for _ in range(args.runs)]
        acked = statistics.median(r[0] for r in runs)
        lost = statistics.median(r[0] - r[1] for r in runs)
        rate = statistics.median(r[2] for r in runs)
        results[name] = (acked, lost, rate)
        worst = max(r[0] - r[1] for r in runs)
        key = name.split(" (")[0].replace(" ", "_")
        figures.add(f"{key}.acknowledged", acked, "messages")
        figures.add(f"{key}.lost_at_sigkill", lost, "messages")
        figures.add(f"{key}.lost_at_sigkill_worst", worst, "messages")
        figures.add(f"{key}.publish_rate", rate, "messages/s")
        print(
            f"{name:20} acknowledged {acked:6.0f}  lost at SIGKILL {lost:6.0f} (worst {worst})"
            f"  publish rate {rate:8.0f} msg/s"
        )
    base = results.get("every 1 s (before)", next(iter(results.values())))[2]
    print("publish rate relative to autosave every 1 s (or the first setting), same run:")
    for name, (_, _, rate) in results.items():
        key = name.split(" (")[0].replace(" ", "_")
        figures.add(f"{key}.publish_rate_relative", rate / base, "ratio")
        print(f"  {name:20} {rate / base:5.2f}")
    return {"mosquitto": version}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2_000, help="births per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per setting (median shown)")
    parser.add_argument(
        "--only", nargs="*", choices=sorted(SETTINGS), help="settings to run (default: all)"
    )
    run_bench("mosquitto_persistence", parser, measure)


if __name__ == "__main__":
    main()
