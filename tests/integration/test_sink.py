"""`presence sink postgres` against a real PostgreSQL (a throwaway cluster of the session) and the
real local Kafka: redelivery, a SIGKILL mid-run, two sinks in one group, a database outage, the
operator's mistakes, and a real worker's HTTP API equal to the table.

The upsert's rule is PostgreSQL's own: INSERT ... ON CONFLICT (device) DO UPDATE ... WHERE
d.version < EXCLUDED.version. PostgreSQL 15 documentation, SQL Commands, INSERT, "ON CONFLICT
Clause" (https://www.postgresql.org/docs/15/sql-insert.html#SQL-ON-CONFLICT): DO UPDATE gives an
atomic insert-or-update outcome; only rows for which the WHERE condition is true are updated
(the others are neither updated nor reported in the row count); and one command may not affect
the same row twice, which is why a batch is coalesced to one row per device first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from kafka import KafkaProducer

from mqtt_presence.core import ConnectionEvent, EventKind, SessionOrder, StatusChange
from mqtt_presence.core.events import Reason, Status
from mqtt_presence.kafka_topics import TopicSpec, ensure_topics, group_caught_up
from mqtt_presence.settings import render_config
from mqtt_presence.sink.batch import SinkStats, datetime_to_millis, prepare
from mqtt_presence.sink.config import load_sink_settings
from mqtt_presence.sink.postgres import PostgresWriter, SinkError
from mqtt_presence.stack import StackInfo
from mqtt_presence.stack.postgres import LocalPostgres
from mqtt_presence.worker_process import WorkerProcess

from .helpers import unique, wait_for

PARTITIONS = 4


def change(device: str, version: int, **fields: Any) -> StatusChange:
    base: dict[str, Any] = {
        "device": device,
        "status": Status.ONLINE if version % 2 else Status.OFFLINE,
        "flapping": version % 3 == 0,
        "version": version,
        "since": 1_700_000_000_000 + version * 1_000,
        "decided_at": 1_700_000_000_000 + version * 1_000 + 5,
        "reason": Reason.BIRTH if version % 2 else Reason.WILL,
        "session": version,
        "verified": True,
        "suppressed": version,
    }
    return StatusChange(**(base | fields))


def status_topic(stack: StackInfo) -> str:
    topic = unique("status")
    ensure_topics(
        stack.kafka_bootstrap,
        "sink-test",
        [TopicSpec(topic, PARTITIONS, 1, {"cleanup.policy": "compact"})],
    )
    return topic


def produce(stack: StackInfo, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=5)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(30)
    finally:
        producer.close()


def produce_changes(stack: StackInfo, topic: str, changes: list[StatusChange]) -> None:
    produce(stack, topic, [(c.device.encode(), msgspec.json.encode(c)) for c in changes])


def caught_up(stack: StackInfo, group: str, topic: str) -> bool:
    return group_caught_up(stack.kafka_bootstrap, group, topic)


def rows(pg: LocalPostgres, table: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(pg.dsn()) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f"SELECT * FROM {table}")
        return {r["device"]: r for r in cur.fetchall()}


def count(pg: LocalPostgres, table: str) -> int:
    with psycopg.connect(pg.dsn()) as conn:
        found = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(found[0]) if found else 0


def versions(pg: LocalPostgres, table: str) -> dict[str, int]:
    with psycopg.connect(pg.dsn()) as conn:
        return dict(conn.execute(f"SELECT device, version FROM {table}").fetchall())


def newest(changes: list[StatusChange]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in changes:
        out[c.device] = max(out.get(c.device, 0), c.version)
    return out


class Sink:
    """`presence sink postgres` in a process of its own, its DSN in the environment."""

    def __init__(
        self,
        stack: StackInfo,
        pg: LocalPostgres,
        home: Path,
        topic: str,
        group: str,
        table: str,
        *args: str,
        dsn: str | None = None,
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        config = home / f"{group}-{table}.toml"
        config.write_text(render_config({"kafka": {"status_topic": topic}}))
        self.log = home / f"sink-{unique('log')}.log"
        env = {
            **os.environ,
            "PRESENCE_SINK_DSN": dsn if dsn is not None else pg.dsn(),
            "COLUMNS": "300",  # one log line a line
            "PRESENCE_SINK_SESSION_TIMEOUT_S": "6",  # a killed sink's partitions move sooner
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mqtt_presence",
                    "sink",
                    "postgres",
                    "--config",
                    str(config),
                    "--kafka-bootstrap",
                    stack.kafka_bootstrap,
                    "--group",
                    group,
                    "--table",
                    table,
                    "--progress-interval",
                    "1",
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(30)


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[list[Sink]]:
    started: list[Sink] = []
    yield started
    for sink in started:
        sink.stop(signal.SIGKILL)


def test_an_upsert_never_takes_a_row_back_to_an_older_version(
    stack: StackInfo, postgres: LocalPostgres
) -> None:
    # PostgreSQL 15 docs, INSERT, "ON CONFLICT Clause" (sql-insert.html#SQL-ON-CONFLICT): only
    # rows for which the DO UPDATE's WHERE is true are updated, and only those count in the
    # command's row count; one command may not affect a row twice (hence the coalescing).
    table = unique("upsert").replace("-", "_")
    settings = load_sink_settings(
        {}, kafka_bootstrap=stack.kafka_bootstrap, dsn=postgres.dsn(), table=table, history=True
    )
    writer = PostgresWriter(settings, threading.Event(), SinkStats())
    writer.open()
    try:

        def write(*changes: StatusChange) -> tuple[int, int]:
            records = [_Rec(i, c) for i, c in enumerate(changes)]
            return writer.write(prepare(records, history=True))

        assert write(change("a", 5), change("b", 1)) == (2, 2)
        assert write(change("a", 3), change("a", 4)) == (0, 2)  # older: not reported, not applied
        assert write(change("a", 5)) == (0, 0)  # the same again: nothing
        assert write(change("a", 7), change("a", 6)) == (1, 2)  # coalesced to 7 first
        assert versions(postgres, table) == {"a": 7, "b": 1}
        assert count(postgres, f"{table}_history") == 6
        row = rows(postgres, table)["a"]
        assert (row["status"], row["session"], row["flapping"]) == ("online", 7, False)
        assert datetime_to_millis(row["since"]) == change("a", 7).since
    finally:
        writer.close()


class _Rec:
    def __init__(self, offset: int, c: StatusChange) -> None:
        self.partition, self.offset = 0, offset
        self.key, self.value = c.device.encode(), msgspec.json.encode(c)


def test_a_schema_qualified_table_works_and_an_extra_required_column_is_named(
    stack: StackInfo, postgres: LocalPostgres
) -> None:
    schema = unique("cmdb").replace("-", "_")
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    settings = load_sink_settings(
        {}, kafka_bootstrap=stack.kafka_bootstrap, dsn=postgres.dsn(), table=f"{schema}.devices"
    )
    writer = PostgresWriter(settings, threading.Event(), SinkStats())
    writer.open()
    try:
        assert writer.write(prepare([_Rec(0, change("cam-1", 2))])) == (1, 0)
    finally:
        writer.close()
    assert versions(postgres, f"{schema}.devices") == {"cam-1": 2}
    # An operator's own column the sink does not write, NOT NULL without a default: every insert
    # would fail, so the sink refuses to start and says which column.
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {schema}.devices ADD COLUMN owner text NOT NULL DEFAULT 'ops'")
        conn.execute(f"ALTER TABLE {schema}.devices ALTER COLUMN owner DROP DEFAULT")
    writer = PostgresWriter(settings, threading.Event(), SinkStats())
    with pytest.raises(SinkError, match="column owner is NOT NULL without a default"):
        writer.open()


def test_redelivered_records_change_nothing_and_bad_ones_stop_nothing(
    stack: StackInfo, postgres: LocalPostgres, tmp_path: Path, sinks: list[Sink]
) -> None:
    topic, table = status_topic(stack), unique("redeliver").replace("-", "_")
    changes = [change(f"dev-{d:03d}", v) for d in range(200) for v in (1, 2, 3)]
    changes.append(change("dev-000", 2))  # a late, older record after the newest
    produce_changes(stack, topic, changes)
    produce(stack, topic, [(b"dev-bad", b"{not json"), (b"dev-x", None)])
    group = unique("g")
    sinks.append(Sink(stack, postgres, tmp_path, topic, group, table))
    wait_for(
        lambda: caught_up(stack, group, topic),
        30,
        "the sink to commit the topic's end",
    )
    before = rows(postgres, table)
    assert {d: r["version"] for d, r in before.items()} == newest(changes)
    # Kafka delivers everything again: to a second group from the beginning, and the same records
    # once more to the first group.
    again = unique("g")
    sinks.append(Sink(stack, postgres, tmp_path, topic, again, table))
    produce_changes(stack, topic, changes)
    wait_for(
        lambda: caught_up(stack, again, topic),
        30,
        "the second group to catch up",
    )
    wait_for(
        lambda: caught_up(stack, group, topic),
        30,
        "the first group to catch up again",
    )
    assert rows(postgres, table) == before  # updated_at included: no row was touched
    text = sinks[0].text()
    assert "refused" in text
    assert "not_json" in text
    assert "tombstone" in text
    assert all(s.alive() for s in sinks)
    assert sinks[1].stop() == 0
    assert "stopped after 0 rows written" in sinks[1].text()  # all of it, and nothing was newer


def test_a_sink_killed_mid_run_and_restarted_loses_nothing_and_never_goes_back(
    stack: StackInfo, postgres: LocalPostgres, tmp_path: Path, sinks: list[Sink]
) -> None:
    topic, table = status_topic(stack), unique("kill").replace("-", "_")
    devices, top = 2_000, 6  # 12,000 records in batches of 50: a second or two of writing
    changes = [change(f"dev-{d:04d}", v) for v in range(1, top + 1) for d in range(devices)]
    produce_changes(stack, topic, changes)
    group = unique("g")
    args = ("--history", "--batch-size", "50", "--linger-ms", "0")
    regressions: list[str] = []
    done = threading.Event()

    def watch() -> None:  # versions read back over and over never go down
        seen: dict[str, int] = {}
        while not done.is_set():
            try:
                now = versions(postgres, table)
            except psycopg.errors.UndefinedTable:
                continue
            regressions.extend(
                f"{d}: {seen[d]} -> {v}" for d, v in now.items() if v < seen.get(d, 0)
            )
            seen |= now
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    first = Sink(stack, postgres, tmp_path, topic, group, table, *args)
    sinks.append(first)
    watcher.start()
    wait_for(lambda: _history(postgres, table) >= 500, 30, "the sink to be under way")
    first.stop(signal.SIGKILL)
    at_kill = _history(postgres, table)
    print(f"killed with {at_kill:,} of {len(changes):,} history rows written")
    assert at_kill < len(changes), "the sink finished before it was killed: kill it sooner"
    sinks.append(Sink(stack, postgres, tmp_path, topic, group, table, *args))
    wait_for(
        lambda: caught_up(stack, group, topic),
        60,
        "the restarted sink to catch up",
    )
    done.set()
    watcher.join(5)
    assert regressions == []
    assert versions(postgres, table) == newest(changes)
    assert _history(postgres, table) == len(changes)  # every (device, version): nothing lost


def _history(pg: LocalPostgres, table: str) -> int:
    try:
        return count(pg, f"{table}_history")
    except psycopg.errors.UndefinedTable:
        return 0


def test_two_sinks_in_one_group_share_the_partitions_and_the_table_is_right(
    stack: StackInfo, postgres: LocalPostgres, tmp_path: Path, sinks: list[Sink]
) -> None:
    topic, table, group = status_topic(stack), unique("two").replace("-", "_"), unique("g")
    sinks.append(Sink(stack, postgres, tmp_path, topic, group, table))
    sinks.append(Sink(stack, postgres, tmp_path, topic, group, table))
    all_changes: list[StatusChange] = []
    for version in range(1, 5):  # written while both run and the group settles
        batch = [change(f"dev-{d:03d}", version) for d in range(300)]
        produce_changes(stack, topic, batch)
        all_changes += batch
        time.sleep(0.5)

    def shared() -> bool:
        return all("partitions assigned: " + topic in s.text() for s in sinks)

    wait_for(shared, 30, "both sinks to be assigned partitions")
    wait_for(lambda: caught_up(stack, group, topic), 30, "the group to catch up")
    assert versions(postgres, table) == newest(all_changes)
    assert all(s.alive() for s in sinks)


def test_a_database_outage_mid_run_is_retried_and_loses_nothing(
    stack: StackInfo, postgres: LocalPostgres, tmp_path: Path, sinks: list[Sink]
) -> None:
    topic, table, group = status_topic(stack), unique("outage").replace("-", "_"), unique("g")
    sink = Sink(stack, postgres, tmp_path, topic, group, table)
    sinks.append(sink)
    first = [change(f"dev-{d:03d}", 1) for d in range(100)]
    produce_changes(stack, topic, first)
    wait_for(lambda: caught_up(stack, group, topic), 30, "the first records")
    postgres.stop("immediate")  # as a crash of the server would
    try:
        later = [change(f"dev-{d:03d}", 2) for d in range(100)]
        produce_changes(stack, topic, later)
        wait_for(lambda: "retry 1 in" in sink.text(), 30, "the sink to retry")
        assert not group_caught_up(
            stack.kafka_bootstrap, group, topic
        )  # offsets wait for the database
    finally:
        postgres.start()
    wait_for(
        lambda: caught_up(stack, group, topic),
        60,
        "the sink to write after the outage",
    )
    assert versions(postgres, table) == newest(first + later)
    assert sink.alive()


KEYLESS_COLUMNS = (
    "device text NOT NULL, status text NOT NULL, sleeping boolean NOT NULL, "
    "flapping boolean NOT NULL, version bigint NOT NULL, since timestamptz NOT NULL, "
    "decided_at timestamptz NOT NULL, reason text NOT NULL, cause text, session jsonb, "
    "verified boolean NOT NULL, suppressed bigint NOT NULL, updated_at timestamptz NOT NULL"
)


def run_sink_once(
    stack: StackInfo, pg: LocalPostgres, tmp_path: Path, table: str, dsn: str
) -> tuple[int, str]:
    sink = Sink(stack, pg, tmp_path, unique("status"), unique("g"), table, dsn=dsn)
    code = sink.proc.wait(60)
    return code, sink.text()


def test_an_operators_mistakes_each_end_in_one_clear_line_without_the_password(
    stack: StackInfo, postgres: LocalPostgres, tmp_path: Path
) -> None:
    secret = "s3cret-" + unique("pw")
    table = unique("shape").replace("-", "_")
    host = f"127.0.0.1:{postgres.port}/postgres"
    code, text = run_sink_once(stack, postgres, tmp_path, table, postgres.dsn(password=secret))
    assert code == 1
    assert f"cannot reach PostgreSQL at {host}" in text
    assert "password authentication failed" in text
    down = f"host=127.0.0.1 port=1 dbname=cmdb user=presence password={secret}"
    code, text = run_sink_once(stack, postgres, tmp_path, table, down)
    assert code == 1
    assert "cannot reach PostgreSQL at 127.0.0.1:1/cmdb" in text
    code, text = run_sink_once(stack, postgres, tmp_path, table, f"postgresql://u:{secret}%zz@h/db")
    assert code == 1
    assert "the DSN does not parse" in text
    with psycopg.connect(postgres.dsn()) as conn:
        conn.execute(f"CREATE TABLE {table} (device text PRIMARY KEY, version integer)")
    code, text = run_sink_once(stack, postgres, tmp_path, table, postgres.dsn())
    assert code == 1
    assert f"table {table} exists with another shape" in text
    assert "column version is integer, the sink writes bigint" in text
    assert "no column status (text)" in text
    keyless = unique("keyless").replace("-", "_")
    with psycopg.connect(postgres.dsn()) as conn:
        conn.execute(f"CREATE TABLE {keyless} ({KEYLESS_COLUMNS})")
    code, keyless_text = run_sink_once(stack, postgres, tmp_path, keyless, postgres.dsn())
    assert code == 1
    assert f"table {keyless} has no primary key or unique constraint on (device)" in keyless_text
    for output in (text, keyless_text):
        assert secret not in output
        assert postgres.password not in output
        assert "Traceback" not in output


def test_the_table_equals_what_a_real_workers_http_api_shows(
    stack: StackInfo, postgres: LocalPostgres, tmp_path: Path, sinks: list[Sink]
) -> None:
    tag = unique("e2e")
    topics = {
        "raw": f"raw-{tag}",
        "status": f"status-{tag}",
        "dlq": f"dlq-{tag}",
        "ticks": f"ticks-{tag}",
    }
    worker = WorkerProcess.start(
        stack.kafka_bootstrap,
        tmp_path,
        topics,
        f"app-{tag}",
        partitions=PARTITIONS,
        presence={"offline_grace_ms": 500},
    ).wait_ready()
    try:
        now = int(time.time() * 1000)
        devices = [f"{tag}-dev-{i:02d}" for i in range(30)]
        events: list[ConnectionEvent] = []
        for i, device in enumerate(devices):
            events.append(_event(device, EventKind.BIRTH, now, 1))
            if i % 3 == 0:  # a third die, a third of those come back on a new session
                events.append(_event(device, EventKind.WILL, now + 10, 1))
                if i % 9 == 0:
                    events.append(_event(device, EventKind.BIRTH, now + 2_000, 2))
        events.sort(key=lambda e: (e.device, e.received_at))
        produce(stack, topics["raw"], [(e.device.encode(), msgspec.json.encode(e)) for e in events])
        table, group = tag.replace("-", "_"), unique("g")
        sinks.append(Sink(stack, postgres, tmp_path, topics["status"], group, table))

        def shown() -> dict[str, dict[str, Any]]:
            out = {}
            for device in devices:
                quoted = urllib.parse.quote(device, safe="")
                try:
                    with urllib.request.urlopen(f"{worker.url}/devices/{quoted}", timeout=5) as r:
                        out[device] = msgspec.json.decode(r.read())
                except urllib.error.HTTPError as err:  # 404: not applied yet
                    if err.code != 404:
                        raise
            return out

        def settled() -> bool:
            api = shown()
            expected_offline = {d for i, d in enumerate(devices) if i % 3 == 0 and i % 9}
            offline = {d for d, s in api.items() if s["status"] == "offline"}
            return len(api) == len(devices) and offline == expected_offline

        wait_for(settled, 30, "the worker to settle every device")
        wait_for(
            lambda: caught_up(stack, group, topics["status"]),
            30,
            "the sink to catch up",
        )
        api, table_rows = shown(), rows(postgres, table)
        assert set(table_rows) == set(devices)
        for device in devices:
            row, view = table_rows[device], api[device]
            assert {
                "status": row["status"],
                "version": row["version"],
                "since": datetime_to_millis(row["since"]),
                "reason": row["reason"],
                "session": row["session"],
                "flapping": row["flapping"],
                "sleeping": row["sleeping"],
                "cause": row["cause"],
                "verified": row["verified"],
            } == {
                k: view[k]
                for k in (
                    "status",
                    "version",
                    "since",
                    "reason",
                    "session",
                    "flapping",
                    "sleeping",
                    "cause",
                    "verified",
                )
            }, device
    finally:
        worker.stop()


def _event(device: str, kind: EventKind, at: int, session: int) -> ConnectionEvent:
    return ConnectionEvent(
        device=device,
        kind=kind,
        received_at=at,
        session=session,
        session_order=SessionOrder.COUNTER,
    )
