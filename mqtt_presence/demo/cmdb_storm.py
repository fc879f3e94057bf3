"""Field report A's storm in a database: what a flapping fleet costs a CMDB, fed two ways.

`presence demo --cmdb-storm` (and `python -m bench.cmdb_storm`, which adds the sink's speed): a
fleet runs live for a while: most devices come online and stay (a few reboot, with the old
connection's will after the new birth, as in report B); a share of them flap, as report A's
agent did on EMQX: online for 0.5 to 3 s, then dropped (its will) and back after 0.2 to 3 s (one
time in five after 5 to 15 s, longer than the offline grace), over and over. Their raw lifecycle
messages go to a raw topic as a bridge writes them (received now), and two consumers write into
PostgreSQL side by side, each into a database of its own on one server:

- **naive**: every raw message, as report A's CMDB did: update the device's row, then query the
  device again (two statements a message, autocommit);
- **sink**: a real worker turns the raw topic into a status topic, and `presence sink postgres`
  writes that (batched upserts, only newer versions).

Measured for each, once both have caught up: statements (pg_stat_statements), rows written
(pg_stat_user_tables: inserted + updated), transactions, and the database CPU time spent for it
(utime + stime of the server backend that served the consumer, from /proc); and the ratios.
"""

from __future__ import annotations

import heapq
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console

from mqtt_presence.core import ConnectionEvent, EventKind, SessionOrder
from mqtt_presence.errors import PresenceError
from mqtt_presence.kafka_topics import group_caught_up, read_from_beginning
from mqtt_presence.settings import render_config
from mqtt_presence.stack import LocalStack, StackInfo
from mqtt_presence.stack.postgres import LocalPostgres
from mqtt_presence.worker_process import WorkerProcess

PARTITIONS = 8
GRACE_MS = 5_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DATABASES = ("naive", "clean")


class StormError(PresenceError):
    """A consumer did not catch up, or the sink holds no connection."""


@dataclass(frozen=True)
class StormSettings:
    devices: int = 2_000
    flapping: float = 0.1  # share of flapping agents
    duration_s: float = 180.0  # seconds of the live fleet
    reboot_every_s: float = 600.0  # a stable device's mean seconds between reboots
    seed: int = 1


# -- the fleet -------------------------------------------------------------------------------


@dataclass
class Fleet:
    """Devices on a schedule: (when, device, what) in a heap; `session` per device."""

    devices: list[str]
    flappers: set[str]
    reboot_every_s: float
    rnd: random.Random
    session: dict[str, int] = field(default_factory=dict)
    queue: list[tuple[float, str, str]] = field(default_factory=list)
    sent: int = 0

    def start(self, t0: float) -> None:
        for device in self.devices:
            self.session[device] = 1
            heapq.heappush(self.queue, (t0 + self.rnd.uniform(0, 2), device, "birth"))

    def due(self, now: float) -> list[tuple[str, EventKind, int]]:
        """The messages due by `now` (device, kind, session), scheduling what follows."""
        out: list[tuple[str, EventKind, int]] = []
        while self.queue and self.queue[0][0] <= now:
            at, device, what = heapq.heappop(self.queue)
            token = self.session[device]
            if what == "birth":
                out.append((device, EventKind.BIRTH, token))
                if device in self.flappers:
                    self._at(at + self.rnd.uniform(0.5, 3), device, "drop")
                else:
                    self._at(at + self.rnd.expovariate(1 / self.reboot_every_s), device, "reboot")
            elif what == "drop":  # the broker drops a flapper: its will, then it comes back
                out.append((device, EventKind.WILL, token))
                self.session[device] = token + 1
                off = (
                    self.rnd.uniform(0.2, 3) if self.rnd.random() < 0.8 else self.rnd.uniform(5, 15)
                )
                self._at(at + off, device, "birth")
            elif what == "reboot":  # a quick power cycle: new birth, then the old will (stale)
                self.session[device] = token + 1
                out.append((device, EventKind.BIRTH, token + 1))
                out.append((device, EventKind.WILL, token))
                self._at(at + self.rnd.expovariate(1 / self.reboot_every_s), device, "reboot")
        self.sent += len(out)
        return out

    def _at(self, at: float, device: str, what: str) -> None:
        heapq.heappush(self.queue, (at, device, what))


def run_fleet(fleet: Fleet, producer: KafkaProducer, topic: str, seconds: float) -> None:
    t0 = time.monotonic()
    fleet.start(t0)
    while (now := time.monotonic()) - t0 < seconds:
        ms = int(time.time() * 1000)
        for device, kind, token in fleet.due(now):
            event = ConnectionEvent(
                device=device,
                kind=kind,
                received_at=ms,
                session=token,
                session_order=SessionOrder.COUNTER,
            )
            producer.send(topic, key=device.encode(), value=msgspec.json.encode(event))
        time.sleep(0.01)
    producer.flush(60)


# -- the naive consumer (report A's CMDB) ----------------------------------------------------

NAIVE_TABLE = """CREATE TABLE IF NOT EXISTS devices (
    device text PRIMARY KEY, status text NOT NULL, session text, updated_at timestamptz NOT NULL
)"""
NAIVE_UPDATE = """INSERT INTO devices (device, status, session, updated_at)
VALUES (%s, %s, %s, now())
ON CONFLICT (device) DO UPDATE SET status = EXCLUDED.status, session = EXCLUDED.session,
    updated_at = EXCLUDED.updated_at"""
NAIVE_REQUERY = "SELECT device, status, session, updated_at FROM devices WHERE device = %s"
ONLINE_KINDS = {EventKind.BIRTH, EventKind.CONNECTED, EventKind.ACTIVITY}


class NaiveConsumer(threading.Thread):
    """Every raw message: update the device, then read it back; autocommit, one connection."""

    def __init__(self, info: StackInfo, topic: str, dsn: str) -> None:
        super().__init__(name="naive", daemon=True)
        self.conn = psycopg.connect(dsn, autocommit=True, application_name="naive-cmdb")
        self.conn.execute(NAIVE_TABLE)
        row = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        self.backend_pid = int(row[0]) if row else 0
        # every partition from the start, without a consumer group: kafka-python 3.0.12's group
        # member was seen spinning its I/O thread and never fetching (the demo hung), and a
        # group adds nothing to what the naive CMDB shows
        self.consumer = KafkaConsumer(bootstrap_servers=info.kafka_bootstrap)
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self.messages = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        decode = msgspec.json.Decoder(ConnectionEvent).decode
        while not self.stopping.is_set():
            for records in self.consumer.poll(timeout_ms=200).values():
                for record in records:
                    event = decode(record.value)
                    status = "online" if event.kind in ONLINE_KINDS else "offline"
                    session = None if event.session is None else str(event.session)
                    self.conn.execute(NAIVE_UPDATE, (event.device, status, session))
                    self.conn.execute(NAIVE_REQUERY, (event.device,)).fetchone()
                    self.messages += 1

    def close(self) -> None:
        self.stopping.set()
        self.join(30)
        self.consumer.close()
        self.conn.close()


# -- measuring the database ------------------------------------------------------------------


def backend_cpu_s(pid: int) -> float:
    """utime + stime of a server backend, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def database_figures(pg: LocalPostgres, dbname: str, backend_pid: int) -> dict[str, float]:
    """What the database did for one consumer's database: statements and the rows its INSERTs
    wrote (pg_stat_statements: counted as each statement ends), commits (pg_stat_database: call
    after the backends' statistics were flushed), and its backend's CPU time."""
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        row = admin.execute(
            "SELECT coalesce(sum(s.calls), 0), coalesce(sum(s.total_exec_time), 0), "
            "coalesce(sum(s.rows) FILTER (WHERE s.query ILIKE 'insert%%'), 0) "
            "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
            (dbname,),
        ).fetchone()
        assert row is not None
        statements, exec_ms, rows = float(row[0]), float(row[1]), float(row[2])
        found = admin.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (dbname,)
        ).fetchone()
        commits = float(found[0]) if found else 0.0
    return {
        "statements": statements,
        "rows_written": rows,
        "transactions": commits,
        "exec_time_s": exec_ms / 1000,
        "db_cpu_s": backend_cpu_s(backend_pid),
    }


def sink_backend_pid(pg: LocalPostgres, dbname: str) -> int:
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        found = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = "
            "'presence-sink' ORDER BY backend_start DESC LIMIT 1",
            (dbname,),
        ).fetchone()
    if found is None:
        raise StormError("the sink holds no connection to the database")
    return int(found[0])


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise StormError(f"timed out after {timeout:.0f} s waiting for {what}")


# -- the storm -------------------------------------------------------------------------------


def prepare_databases(pg: LocalPostgres) -> None:
    """One database per consumer on one server, and statement statistics from zero."""
    with psycopg.connect(pg.dsn(), autocommit=True) as admin:
        for db in DATABASES:
            admin.execute(f"CREATE DATABASE {db}")
        admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        admin.execute("SELECT pg_stat_statements_reset()")


def storm(
    info: StackInfo,
    pg: LocalPostgres,
    home: Path,
    settings: StormSettings,
    say: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """The fleet for `settings.duration_s`, then both consumers' figures once caught up (the
    databases of `prepare_databases`)."""
    tag = uuid.uuid4().hex[:6]
    topics = {k: f"{k}-cmdb-{tag}" for k in ("raw", "status", "dlq", "ticks")}
    worker = WorkerProcess.start(
        info.kafka_bootstrap,
        home,
        topics,
        f"cmdb-{tag}",
        partitions=PARTITIONS,
        store="memory",
        presence={"offline_grace_ms": GRACE_MS},
    ).wait_ready(timeout=300)
    config = home / f"sink-{tag}.toml"
    config.write_text(render_config({"kafka": {"status_topic": topics["status"]}}))
    group = f"sink-{tag}"
    sink_log = (home / f"sink-{tag}.log").open("wb")
    sink = subprocess.Popen(
        [
            *(sys.executable, "-m", "mqtt_presence", "sink", "postgres"),
            *("--config", str(config), "--kafka-bootstrap", info.kafka_bootstrap),
            *("--group", group, "--table", "devices"),
        ],
        stdout=sink_log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PRESENCE_SINK_DSN": pg.dsn("clean"), "COLUMNS": "200"},
    )
    naive = NaiveConsumer(info, topics["raw"], pg.dsn("naive"))
    naive.start()
    producer = KafkaProducer(bootstrap_servers=info.kafka_bootstrap, linger_ms=5)
    try:
        rnd = random.Random(settings.seed)  # noqa: S311 - a seeded simulation
        devices = [f"agent-{i:05d}" for i in range(settings.devices)]
        flappers = set(rnd.sample(devices, int(settings.devices * settings.flapping)))
        fleet = Fleet(devices, flappers, settings.reboot_every_s, rnd)
        say(
            f"cmdb storm: {len(devices):,} devices, {len(flappers):,} flapping, "
            f"{settings.duration_s:.0f} s"
        )
        run_fleet(fleet, producer, topics["raw"], settings.duration_s)
        say(f"{fleet.sent:,} raw lifecycle messages sent; letting both consumers catch up")
        time.sleep(GRACE_MS / 1000 + 2)  # the last deadlines fire
        wait(lambda: naive.messages >= fleet.sent, 600, "the naive consumer")
        wait(
            lambda: group_caught_up(info.kafka_bootstrap, group, topics["status"]), 600, "the sink"
        )
        time.sleep(11)  # an idle backend flushes its statistics within 10 s (PostgreSQL 15)
        status_records = len(read_from_beginning(info.kafka_bootstrap, topics["status"]))
        results = {
            "naive": database_figures(pg, "naive", naive.backend_pid),
            "sink": database_figures(pg, "clean", sink_backend_pid(pg, "clean")),
        }
        results["naive"]["messages"] = float(fleet.sent)
        results["sink"]["messages"] = float(status_records)
        return results
    finally:
        producer.close()
        naive.close()
        sink.terminate()
        sink.wait(30)
        worker.stop()


# -- the report ------------------------------------------------------------------------------

LABELS = (("naive", "every raw message (naive)"), ("sink", "presence.status (sink)"))


def report_lines(results: dict[str, dict[str, float]]) -> list[str]:
    """The two consumers side by side, and naive / sink for what costs the database."""
    lines = [
        f"{'fed by':28} {'messages':>9} {'statements':>11} {'rows written':>13} "
        f"{'transactions':>13} {'exec time':>10} {'db CPU':>8}"
    ]
    for name, label in LABELS:
        r = results[name]
        lines.append(
            f"{label:28} {r['messages']:>9,.0f} {r['statements']:>11,.0f} "
            f"{r['rows_written']:>13,.0f} {r['transactions']:>13,.0f} "
            f"{r['exec_time_s']:>9.2f}s {r['db_cpu_s']:>7.2f}s"
        )
    ratios = ", ".join(
        f"{label} x{ratio(results, key):,.1f}"
        for key, label in (
            ("statements", "statements"),
            ("rows_written", "rows written"),
            ("db_cpu_s", "database CPU"),
        )
    )
    lines.append(f"naive / sink: {ratios}")
    return lines


def ratio(results: dict[str, dict[str, float]], key: str) -> float:
    naive, sink = results["naive"][key], results["sink"][key]
    return naive / sink if sink else float("inf")


def run_cmdb_storm(
    stack: LocalStack, console: Console, settings: StormSettings, keep_stack: bool
) -> dict[str, dict[str, float]]:
    """`presence demo --cmdb-storm`: the storm on the local stack and a throwaway PostgreSQL
    (removed after), with the table at the end."""
    was_up = stack.running()
    home = Path(tempfile.mkdtemp(prefix="presence-storm-"))
    pg: LocalPostgres | None = None
    try:
        info = stack.up(progress=console.log)
        pg = LocalPostgres.create(progress=console.log).start()
        prepare_databases(pg)
        results = storm(info, pg, home, settings, say=console.log)
        console.print()
        for line in report_lines(results):
            console.print(line, highlight=False)
        return results
    finally:
        if pg is not None:
            pg.destroy()
        shutil.rmtree(home, ignore_errors=True)
        if not was_up and not keep_stack:
            stack.down()
            console.log("stack stopped (use --keep-stack to keep it)")
