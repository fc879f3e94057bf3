"""`presence demo`: the whole product, live, on the local stack.

Brings the stack up (if it is not), starts a streams worker and a bridge on topics of their own,
and lets a fleet of real MQTT devices live through the field reports (stale wills after a power
cycle, long outages, deaths, flapping, duplicate births, a reconnect storm) while the terminal
shows raw events in against clean changes out, the core's decisions as they happen beside what a
naive consumer did, and clean against naive per scenario (`story`, `screen`). It ends with the
accuracy of both against the ground truth, a verdict, and a dump of the raw topic to explain any
device with `presence replay --explain`; it leaves nothing running that it started.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
from kafka import KafkaConsumer
from rich.console import Console
from rich.live import Live

from mqtt_presence.bridge.app import Bridge
from mqtt_presence.core import ConnectionEvent, StatusChange
from mqtt_presence.core.records import is_progress
from mqtt_presence.demo import screen
from mqtt_presence.demo.story import LAG_MS, Story
from mqtt_presence.errors import PresenceError
from mqtt_presence.local_bridge import local_bridge_settings
from mqtt_presence.settings import presence_config, render_config
from mqtt_presence.sim.live import KEEPALIVE_S, LiveFleet
from mqtt_presence.stack import LocalStack, StackInfo
from mqtt_presence.worker_process import WorkerProcess, WorkerStartError

GRACE_MS = 2_000
# How late after a device's last packet Mosquitto may publish its will: 1.5 x keepalive, but
# Mosquitto 2.0 looks for expired keepalives only every 6 s, in whole seconds (keepalive.c,
# `last_keepalive_check + 5 < now`), so up to 7 s more. A truth younger than this is not judged.
WILL_LATE_S = KEEPALIVE_S * 1.5 + 7
PRESENCE = {"offline_grace_ms": GRACE_MS}  # the worker's [presence] table, and the replay's


class DemoError(PresenceError):
    """The demo could not run (a part did not start)."""


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


def _changes_out(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return int(
        sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("presence_worker_status_changes_total")
        )
    )


def _start_bridge(
    info: StackInfo, topics: dict[str, str], tag: str
) -> tuple[Bridge, threading.Thread]:
    settings = local_bridge_settings(
        info,
        client_id=f"demo-bridge-{tag}",
        raw_topic=topics["raw"],
        dlq_topic=topics["dlq"],
        topic_prefix=f"demo-{tag}",
        session_expiry_s=60,  # a demo leaves no lasting session behind
    )
    bridge = Bridge(settings)
    return bridge, bridge.start_in_thread()


class Tap:
    """Reads the demo's raw and status topics as they fill (no group, no commits) into the story,
    and keeps the raw records for the dump that `presence replay --explain` reads."""

    def __init__(self, bootstrap: str, topics: dict[str, str], story: Story) -> None:
        self.raw_topic = topics["raw"]
        self.story = story
        self.lock = threading.Lock()  # the story is read by the screen, written here
        self.raw: list[tuple[int, bytes]] = []  # (receive time, record value)
        self.last_record = time.monotonic()
        self._consumer = KafkaConsumer(
            topics["raw"],
            topics["status"],
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-tap", daemon=True)

    def start(self) -> Tap:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            batches = self._consumer.poll(timeout_ms=200)
            with self.lock:
                for part, records in batches.items():
                    events = [r for r in records if not is_progress(r.headers)]
                    for record in events:
                        self._take(part.topic, record.value)
                    if events:  # the bridge's progress records come every second: not news
                        self.last_record = time.monotonic()
                self.story.advance(time.time_ns() // 1_000_000)

    def _take(self, topic: str, value: bytes) -> None:
        try:
            if topic == self.raw_topic:
                event = _decode_raw(value)
                self.raw.append((event.received_at, value))
                self.story.take_raw(event)
            else:
                self.story.take_status(_decode_status(value))
        except msgspec.DecodeError:
            pass  # not a record of ours: the worker dead-letters such input anyway

    def drain(self, idle_s: float = 2.0, limit_s: float = 30.0) -> None:
        """Wait until no record came for `idle_s`, stop reading, and let the story catch up."""
        end = time.monotonic() + limit_s
        while time.monotonic() < end and time.monotonic() - self.last_record < idle_s:
            time.sleep(0.2)
        self.stop()
        with self.lock:
            self.story.advance(time.time_ns() // 1_000_000 + LAG_MS)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._consumer.close()

    def dump(self, folder: Path) -> Path:
        """The raw records in receive order, as JSON lines: `presence replay`'s input."""
        path = folder / "raw.jsonl"
        with path.open("wb") as out:
            for _, value in sorted(self.raw, key=lambda item: item[0]):
                out.write(value + b"\n")
        return path


_decode_raw = msgspec.json.Decoder(ConnectionEvent).decode
_decode_status = msgspec.json.Decoder(StatusChange).decode


def run_demo(
    stack: LocalStack, console: Console, duration: float, devices: int, keep_stack: bool
) -> None:
    was_up = stack.running()
    tag = uuid.uuid4().hex[:6]
    topics = {name: f"demo-{tag}.{name}" for name in ("raw", "status", "dlq", "ticks")}
    home = Path(tempfile.mkdtemp(prefix="presence-demo-"))
    worker: WorkerProcess | None = None
    bridge: Bridge | None = None
    thread: threading.Thread | None = None
    fleet: LiveFleet | None = None
    tap: Tap | None = None
    try:
        info = stack.up(progress=console.log)  # inside: stopped again if interrupted meanwhile
        console.log("starting a streams worker")
        try:  # kept before it is ready: an interrupt while it starts must stop it too
            worker = WorkerProcess.start(
                info.kafka_bootstrap, home, topics, f"demo-{tag}", presence=PRESENCE
            )
            worker.wait_ready()
        except WorkerStartError as exc:
            raise DemoError(str(exc)) from exc
        port = worker.port
        bridge, thread = _start_bridge(info, topics, tag)
        fleet = LiveFleet(
            info.mqtt_host, info.mqtt_port, devices, f"demo-{tag}", duration_s=duration
        )
        settle_s = WILL_LATE_S + GRACE_MS / 1000 + 1
        story = Story(
            presence_config({"presence": PRESENCE}, "the demo's settings"),
            {d.name: d for d in fleet.devices},
            settle_ms=int(settle_s * 1000),
        )
        tap = Tap(info.kafka_bootstrap, topics, story).start()
        console.log(
            f"while it runs, ask a worker: presence status {fleet.devices[0].name} "
            f"--url http://127.0.0.1:{port}"
        )
        fates = Counter(d.fate.value for d in fleet.devices)
        console.log(
            f"{devices} devices on real MQTT connections: "
            + ", ".join(f"{n} {f}" for f, n in sorted(fates.items()))
        )
        _play(console, fleet, story, tap, bridge, port, settle_s)
        _summary(console, story, tap, tag)
    finally:
        if tap is not None:
            tap.stop()
        if fleet is not None:
            fleet.close()
        if bridge is not None and thread is not None:
            bridge.stop()
            thread.join(30)
        if worker is not None:
            worker.stop()
        shutil.rmtree(home, ignore_errors=True)
        if not was_up and not keep_stack:
            stack.down()
            console.log("stack stopped (use --keep-stack to keep it)")


def _play(
    console: Console,
    fleet: LiveFleet,
    story: Story,
    tap: Tap,
    bridge: Bridge,
    port: int,
    settle_s: float,
) -> None:
    """The fleet's life on screen, then the settle time for the last stale wills and graces."""
    started = time.monotonic()
    with Live(console=console, refresh_per_second=2) as live:

        def show() -> None:
            raw_in = int(bridge.metrics.received._value.get())
            try:
                out, counts = _changes_out(port), _get(port, "/fleet")
            except (urllib.error.URLError, OSError, ValueError):
                out, counts = 0, {}
            with tap.lock:
                frame = screen.live_frame(story, time.monotonic() - started, raw_in, out, counts)
            live.update(frame)

        fleet.run(progress=show)
        end = time.monotonic() + settle_s
        while time.monotonic() < end:
            show()
            time.sleep(1)
        tap.drain()
        show()


def _summary(console: Console, story: Story, tap: Tap, tag: str) -> None:
    console.print(screen.accuracy_table(story))
    console.print(screen.decisions_line(story), highlight=False)
    console.print(f"[bold]{screen.verdict(story)}[/]", highlight=False)
    folder = Path(tempfile.gettempdir()) / f"presence-demo-{tag}"
    folder.mkdir(exist_ok=True)
    dump = tap.dump(folder)
    config = folder / "presence.toml"
    config.write_text(render_config({"presence": PRESENCE}))
    device = story.explainable or next(iter(story.fleet))
    console.print(
        f"why any device has its status: presence replay {dump} --config {config} "
        f"--explain {device}",
        highlight=False,
        soft_wrap=True,
    )
