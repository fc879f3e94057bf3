"""`presence demo`: the whole product, live, on the local stack.

Brings the stack up (if it is not), starts a streams worker and a bridge on topics of their own,
and lets a fleet of real MQTT devices live through the field reports (stale wills after a power
cycle, long outages, deaths, flapping, duplicate births, a reconnect storm) while the terminal
shows raw events in against clean changes out. It ends with the accuracy of the pipeline and of
a naive consumer against the ground truth, and leaves nothing running that it started.
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
from rich.console import Console
from rich.live import Live
from rich.table import Table

from mqtt_presence.bridge.app import Bridge
from mqtt_presence.core import ConnectionEvent, StatusChange
from mqtt_presence.errors import PresenceError
from mqtt_presence.kafka_topics import read_from_beginning
from mqtt_presence.local_bridge import local_bridge_settings
from mqtt_presence.sim.live import KEEPALIVE_S, LiveDevice, LiveFleet
from mqtt_presence.stack import LocalStack, StackInfo
from mqtt_presence.worker_process import WorkerProcess, WorkerStartError

GRACE_MS = 2_000


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
    try:
        info = stack.up(progress=console.log)  # inside: stopped again if interrupted meanwhile
        console.log("starting a streams worker")
        try:  # kept before it is ready: an interrupt while it starts must stop it too
            worker = WorkerProcess.start(
                info.kafka_bootstrap, home, topics, f"demo-{tag}", grace_ms=GRACE_MS
            )
            worker.wait_ready()
        except WorkerStartError as exc:
            raise DemoError(str(exc)) from exc
        port = worker.port
        bridge, thread = _start_bridge(info, topics, tag)
        fleet = LiveFleet(
            info.mqtt_host, info.mqtt_port, devices, f"demo-{tag}", duration_s=duration
        )
        console.log(
            f"while it runs, ask a worker: presence status {fleet.devices[0].name} "
            f"--url http://127.0.0.1:{port}"
        )
        fates = Counter(d.fate.value for d in fleet.devices)
        console.log(
            f"{devices} devices on real MQTT connections: "
            + ", ".join(f"{n} {f}" for f, n in sorted(fates.items()))
        )
        started = time.monotonic()
        with Live(console=console, refresh_per_second=2) as live:

            def show() -> None:
                live.update(_live_table(bridge, port, fleet, time.monotonic() - started))

            fleet.run(progress=show)
            settle = KEEPALIVE_S * 1.5 + GRACE_MS / 1000 + 2
            end = time.monotonic() + settle
            while time.monotonic() < end:  # the last stale wills and grace periods
                show()
                time.sleep(1)
        _summary(console, info, topics, fleet)
    finally:
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


def _live_table(bridge: Bridge, port: int, fleet: LiveFleet, elapsed: float) -> Table:
    raw_in = int(bridge.metrics.received._value.get())
    try:
        out = _changes_out(port)
        counts = _get(port, "/fleet")
    except (urllib.error.URLError, OSError, ValueError):
        out, counts = 0, {}
    truth = sum(fleet.truth().values())
    table = Table(title=f"mqtt-presence demo: {elapsed:4.0f} s", title_justify="left")
    table.add_column("raw events in", justify="right")
    table.add_column("clean changes out", justify="right")
    table.add_column("suppressed", justify="right")
    table.add_column("online", justify="right")
    table.add_column("offline", justify="right")
    table.add_column("flapping", justify="right")
    table.add_column("truly online", justify="right")
    table.add_row(
        str(raw_in),
        str(out),
        str(max(raw_in - out, 0)),
        str(counts.get("online", "-")),
        str(counts.get("offline", "-")),
        str(counts.get("flapping", "-")),
        str(truth),
    )
    return table


def _read(info: StackInfo, topic: str) -> list[bytes]:
    return [r.value for r in read_from_beginning(info.kafka_bootstrap, topic)]


def _was_up(dev: LiveDevice, at_s: float) -> bool:
    """Was the device truly connected at `at_s` (and for a second before: no race)?"""
    return any(start <= at_s - 1 and (end is None or at_s < end) for start, end in dev.intervals)


def _summary(console: Console, info: StackInfo, topics: dict[str, str], fleet: LiveFleet) -> None:
    truth = fleet.truth()
    by_name = {d.name: d for d in fleet.devices}
    changes = [msgspec.json.decode(v, type=StatusChange) for v in _read(info, topics["status"])]
    raw = [msgspec.json.decode(v, type=ConnectionEvent) for v in _read(info, topics["raw"])]
    core_last: dict[str, StatusChange] = {}
    core_false = 0
    for c in changes:
        core_last[c.device] = c
        if (
            c.status.value == "offline"
            and not c.flapping
            and _was_up(by_name[c.device], c.since / 1000)
        ):
            core_false += 1
    naive_last: dict[str, bool] = {}
    naive_false = 0
    lifecycle = [e for e in raw if e.kind.value != "activity"]
    for e in lifecycle:
        online = e.kind.opens
        naive_last[e.device] = online
        if not online and _was_up(by_name[e.device], e.received_at / 1000):
            naive_false += 1
    core_wrong = sum(
        1
        for d, up in truth.items()
        if d in core_last
        and not core_last[d].flapping
        and (core_last[d].status.value == "online") != up
    )
    flapping = sum(1 for c in core_last.values() if c.flapping)
    naive_wrong = sum(1 for d, up in truth.items() if naive_last.get(d, False) != up)
    table = Table(title="accuracy against the ground truth", title_justify="left")
    table.add_column("")
    table.add_column("mqtt-presence", justify="right")
    table.add_column("naive consumer (trusts every message)", justify="right")
    table.add_row("status changes sent downstream", str(len(changes)), str(len(lifecycle)))
    table.add_row(
        "offlines while the device was up (stale wills)", str(core_false), str(naive_false)
    )
    table.add_row(
        "devices shown with the wrong status at the end", str(core_wrong), str(naive_wrong)
    )
    table.add_row("devices marked flapping at the end", str(flapping), "-")
    console.print(table)
    console.print(f"raw events in: {len(raw)}, clean changes out: {len(changes)}")
