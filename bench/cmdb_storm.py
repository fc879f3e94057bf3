"""Field report A's storm, measured in the database: what a flapping fleet costs a CMDB.

    python -m bench.cmdb_storm [--devices 2000] [--flapping 0.1] [--duration 180] [--json]

A fleet runs live for `--duration` seconds: most devices come online and stay (a few reboot, with
the old connection's will after the new birth, as in report B); a share of them flap, as report
A's agent did on EMQX: online for 0.5 to 3 s, then dropped (its will) and back after 0.2 to 3 s
(one time in five after 5 to 15 s, longer than the offline grace), over and over. Their raw
lifecycle messages go to `presence.raw` as a bridge writes them (received now), and two consumers
write into PostgreSQL side by side, each into a database of its own on one server:

- **naive**: every raw message, as report A's CMDB did: update the device's row, then query the
  device again (two statements a message, autocommit);
- **sink**: a real worker turns the raw topic into `presence.status`, and `presence sink postgres`
  writes that (batched upserts, only newer versions).

Measured for each, once both have caught up: statements (pg_stat_statements), rows written
(pg_stat_user_tables: inserted + updated), transactions, and the database CPU time spent for it
(utime + stime of the server backend that served the consumer, from /proc); and the ratios.

Then the sink's own speed against a bare psycopg loop writing the same rows in the same run:
`--throughput-records` status records (every device's version 1, then every version 2, ..., so a
batch holds each device once and coalescing gains nothing), written by the sink from Kafka, and by
a loop of single-row upserts (the same statement's rule, a commit every batch) from memory.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from kafka import KafkaConsumer, KafkaProducer

from bench.common import Figures, bench_stack, run_bench
from mqtt_presence.core import ConnectionEvent, EventKind, SessionOrder, StatusChange
from mqtt_presence.core.events import Reason, Status
from mqtt_presence.kafka_topics import (
    TopicSpec,
    ensure_topics,
    group_caught_up,
    read_from_beginning,
)
from mqtt_presence.settings import render_config
from mqtt_presence.sink.config import load_sink_settings
from mqtt_presence.sink.postgres import PostgresSink
from mqtt_presence.stack import StackInfo
from mqtt_presence.stack.postgres import LocalPostgres
from mqtt_presence.worker_process import WorkerProcess

PARTITIONS = 8
GRACE_MS = 5_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=info.kafka_bootstrap,
            group_id=f"naive-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
        )
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
        raise SystemExit("the sink holds no connection to the database")
    return int(found[0])


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


# -- the storm -------------------------------------------------------------------------------


def storm(
    info: StackInfo, pg: LocalPostgres, home: Path, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
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
        rnd = random.Random(args.seed)
        devices = [f"agent-{i:05d}" for i in range(args.devices)]
        flappers = set(rnd.sample(devices, int(args.devices * args.flapping)))
        fleet = Fleet(devices, flappers, args.reboot_every, rnd)
        print(
            f"cmdb storm: {len(devices):,} devices, {len(flappers):,} flapping, "
            f"{args.duration:.0f} s",
            flush=True,
        )
        run_fleet(fleet, producer, topics["raw"], args.duration)
        print(f"  {fleet.sent:,} raw lifecycle messages sent; letting both consumers catch up")
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


# -- the sink against a bare loop ------------------------------------------------------------

BARE_UPSERT = """INSERT INTO {table} AS d (device, status, sleeping, flapping, version, since,
    decided_at, reason, cause, session, verified, suppressed, updated_at)
VALUES (%s, %s, %s, %s, %s, to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), %s, %s,
    %s::jsonb, %s, %s, now())
ON CONFLICT (device) DO UPDATE SET status = EXCLUDED.status, sleeping = EXCLUDED.sleeping,
    flapping = EXCLUDED.flapping, version = EXCLUDED.version, since = EXCLUDED.since,
    decided_at = EXCLUDED.decided_at, reason = EXCLUDED.reason, cause = EXCLUDED.cause,
    session = EXCLUDED.session, verified = EXCLUDED.verified, suppressed = EXCLUDED.suppressed,
    updated_at = EXCLUDED.updated_at
WHERE d.version < EXCLUDED.version"""


def throughput(info: StackInfo, pg: LocalPostgres, args: argparse.Namespace) -> dict[str, float]:
    tag = uuid.uuid4().hex[:6]
    topic = f"status-speed-{tag}"
    ensure_topics(
        info.kafka_bootstrap,
        "cmdb-bench",
        [TopicSpec(topic, PARTITIONS, 1, {"cleanup.policy": "compact"})],
    )
    devices = max(args.throughput_records // 5, 1)
    changes = [
        StatusChange(
            device=f"speed-{d:06d}",
            status=Status.ONLINE if v % 2 else Status.OFFLINE,
            flapping=False,
            version=v,
            since=1_700_000_000_000 + v,
            decided_at=1_700_000_000_000 + v,
            reason=Reason.BIRTH if v % 2 else Reason.WILL,
            session=v,
            verified=True,
            suppressed=0,
        )
        for v in range(1, 6)
        for d in range(devices)
    ]
    producer = KafkaProducer(bootstrap_servers=info.kafka_bootstrap, linger_ms=20)
    for c in changes:
        producer.send(topic, key=c.device.encode(), value=msgspec.json.encode(c))
    producer.flush(120)
    producer.close()
    n = len(changes)
    print(f"sink speed: {n:,} status records ({devices:,} devices x 5 versions)", flush=True)

    settings = load_sink_settings(
        {},
        kafka_bootstrap=info.kafka_bootstrap,
        status_topic=topic,
        dsn=pg.dsn("speed"),
        table="sink_rows",
        group_id=f"speed-{tag}",
        progress_interval_s=3600,
    )
    sink = PostgresSink(settings)
    runner = threading.Thread(target=sink.run, daemon=True)
    runner.start()
    wait_fine(lambda: sink.stats.records > 0, 120)
    started, first = time.perf_counter(), sink.stats.records  # from the first batch written
    wait_fine(lambda: sink.stats.records >= n, 600)
    sink_s = time.perf_counter() - started
    sink.stop()
    runner.join(60)

    records = read_from_beginning(info.kafka_bootstrap, topic)
    decode = msgspec.json.Decoder(StatusChange).decode
    decoded = [decode(r.value) for r in records]
    with psycopg.connect(pg.dsn("speed")) as conn:
        conn.execute(
            "CREATE TABLE bare_rows (LIKE sink_rows INCLUDING ALL)"  # the same shape and key
        )
        conn.commit()
        sql = BARE_UPSERT.format(table="bare_rows")
        started = time.perf_counter()
        with conn.cursor() as cur:
            for i, c in enumerate(decoded, start=1):
                cur.execute(
                    sql,
                    (
                        *(c.device, c.status.value, c.sleeping, c.flapping, c.version),
                        *(c.since, c.decided_at, c.reason.value, c.cause),
                        *(msgspec.json.encode(c.session).decode(), c.verified, c.suppressed),
                    ),
                )
                if i % settings.batch_size == 0:
                    conn.commit()
        conn.commit()
        bare_s = time.perf_counter() - started
    return {
        "records": float(n),
        "sink_records_per_s": (n - first) / sink_s,
        "bare_records_per_s": len(decoded) / bare_s,
    }


def wait_fine(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the sink")
        time.sleep(0.01)


# -- the report ------------------------------------------------------------------------------

UNITS = {
    "messages": "messages",
    "statements": "statements",
    "rows_written": "rows",
    "transactions": "transactions",
    "exec_time_s": "s",
    "db_cpu_s": "s",
}


def measure(args: argparse.Namespace, figures: Figures) -> dict[str, str]:
    with bench_stack(args.home) as (info, home):
        pg = LocalPostgres.create(progress=print).start()
        try:
            with psycopg.connect(pg.dsn(), autocommit=True) as admin:
                for db in ("naive", "clean", "speed"):
                    admin.execute(f"CREATE DATABASE {db}")
                admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                admin.execute("SELECT pg_stat_statements_reset()")
            results = storm(info, pg, home, args)
            speed = throughput(info, pg, args) if args.throughput_records else None
            pg_version = pg.version().split()[2]
        finally:
            pg.destroy()
    naive, sink = results["naive"], results["sink"]
    print(
        f"\n{'fed by':28} {'messages':>9} {'statements':>11} {'rows written':>13} "
        f"{'transactions':>13} {'exec time':>10} {'db CPU':>8}"
    )
    for name, label in (("naive", "every raw message (naive)"), ("sink", "presence.status (sink)")):
        r = results[name]
        print(
            f"{label:28} {r['messages']:>9,.0f} {r['statements']:>11,.0f} "
            f"{r['rows_written']:>13,.0f} {r['transactions']:>13,.0f} "
            f"{r['exec_time_s']:>9.2f}s {r['db_cpu_s']:>7.2f}s"
        )
        for key, value in r.items():
            figures.add(f"{name}.{key}", value, UNITS[key])

    def ratio(key: str) -> float:
        return naive[key] / sink[key] if sink[key] else float("inf")

    line = ", ".join(
        f"{label} x{ratio(key):,.1f}"
        for key, label in (
            ("statements", "statements"),
            ("rows_written", "rows written"),
            ("db_cpu_s", "database CPU"),
        )
    )
    print(f"naive / sink: {line}")
    for key in ("statements", "rows_written", "transactions", "db_cpu_s"):
        value = ratio(key)
        if value != float("inf"):
            figures.add(f"ratio.{key}", value, "ratio")
    if speed is not None:
        print(
            f"sink speed: {speed['sink_records_per_s']:,.0f} records/s from Kafka; a bare psycopg "
            f"loop of single-row upserts: {speed['bare_records_per_s']:,.0f} records/s "
            f"({speed['records']:,.0f} records, the same rows)"
        )
        figures.add("speed.records", speed["records"], "records")
        figures.add("speed.sink_records_per_s", speed["sink_records_per_s"], "records/s")
        figures.add("speed.bare_loop_records_per_s", speed["bare_records_per_s"], "records/s")
    return {"kafka": info.kafka_version, "postgresql": pg_version, "psycopg": psycopg.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=2_000)
    parser.add_argument("--flapping", type=float, default=0.1, help="share of flapping agents")
    parser.add_argument("--duration", type=float, default=180, help="seconds of the live fleet")
    parser.add_argument(
        "--reboot-every", type=float, default=600, help="a stable device's mean s between reboots"
    )
    parser.add_argument(
        "--throughput-records", type=int, default=50_000, help="0: skip the sink's speed"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--home", type=Path, help="use (or start) the local stack here")
    run_bench("cmdb_storm", parser, measure)


if __name__ == "__main__":
    main()
