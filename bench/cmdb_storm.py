"""Field report A's storm, measured in the database: what a flapping fleet costs a CMDB.

    python -m bench.cmdb_storm [--devices 2000] [--flapping 0.1] [--duration 180] [--json]

The storm itself (the fleet, the naive consumer and the sink side by side in PostgreSQL, what
each cost the database) is `mqtt_presence.demo.cmdb_storm`, which `presence demo --cmdb-storm`
runs too; see its docstring. This adds the figures' record and the sink's own speed against a
bare psycopg loop writing the same rows in the same run: `--throughput-records` status records
(every device's version 1, then every version 2, ..., so a batch holds each device once and
coalescing gains nothing), written by the sink from Kafka, and by a loop of single-row upserts
(the same statement's rule, a commit every batch) from memory.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from kafka import KafkaProducer

from bench.common import Figures, bench_stack, run_bench
from mqtt_presence.core import StatusChange
from mqtt_presence.core.events import Reason, Status
from mqtt_presence.demo.cmdb_storm import (
    LABELS,
    PARTITIONS,
    StormSettings,
    prepare_databases,
    ratio,
    report_lines,
    storm,
)
from mqtt_presence.kafka_topics import TopicSpec, ensure_topics, read_from_beginning
from mqtt_presence.sink.config import load_sink_settings
from mqtt_presence.sink.postgres import PostgresSink
from mqtt_presence.stack import StackInfo
from mqtt_presence.stack.postgres import LocalPostgres

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
            prepare_databases(pg)
            with psycopg.connect(pg.dsn(), autocommit=True) as admin:
                admin.execute("CREATE DATABASE speed")
            settings = StormSettings(
                devices=args.devices,
                flapping=args.flapping,
                duration_s=args.duration,
                reboot_every_s=args.reboot_every,
                seed=args.seed,
            )
            results = storm(info, pg, home, settings, say=lambda line: print(line, flush=True))
            speed = throughput(info, pg, args) if args.throughput_records else None
            pg_version = pg.version().split()[2]
        finally:
            pg.destroy()
    print()
    for line in report_lines(results):
        print(line)
    for name, _ in LABELS:
        for key, value in results[name].items():
            figures.add(f"{name}.{key}", value, UNITS[key])
    for key in ("statements", "rows_written", "transactions", "db_cpu_s"):
        value = ratio(results, key)
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
