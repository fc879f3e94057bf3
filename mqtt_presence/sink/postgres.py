"""`presence sink postgres`: `presence.status` into a PostgreSQL table, one row per device.

The guarantees, and how:

- **A row never goes back to an older version.** Each batch is one upsert,
  `INSERT ... ON CONFLICT (device) DO UPDATE ... WHERE d.version < EXCLUDED.version`: a record
  delivered again, late or out of order (a redelivery after a crash, a worker announcing a
  device's last change again after a rebalance, two sinks overlapping during one) changes nothing.
- **Nothing is lost.** Kafka offsets are committed only after the database transaction that holds
  the batch has committed; the group's committed offsets are where a (re)started sink resumes
  (the first time: from the beginning of the topic). A crash between the two commits means the
  records come again, which the upsert makes harmless.
- **A database outage stops nothing for good.** A write that fails for a reason that passes
  (connection lost, server shutting down, deadlock, disk full: psycopg's `OperationalError`) is
  retried with exponential backoff and jitter until it succeeds; Kafka's offsets stay where they
  were meanwhile. A write that fails for a reason that does not pass (the table changed shape,
  permission revoked) ends the sink with that reason: its offsets are not committed, so a
  restarted sink writes the batch again.
- **A bad record never stops it** (`batch.read_record`): refused, counted, logged with its
  partition and offset, and its offset committed with the batch.

Two or more sinks in one consumer group share the partitions, so each device's records reach one
of them; rows are written in device order, so two sinks whose batches overlap during a rebalance
take their row locks in the same order and do not deadlock.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata, TopicPartition
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from mqtt_presence.errors import PresenceError
from mqtt_presence.kafka_topics import client_options
from mqtt_presence.sink.batch import Batch, Row, SinkStats, columns, prepare, progress_line
from mqtt_presence.sink.config import SinkSettings

log = logging.getLogger(__name__)

# The columns both tables share, in `batch.Row`'s order: (name, type as declared, type as
# information_schema.columns.data_type names it).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("device", "text", "text"),
    ("status", "text", "text"),
    ("sleeping", "boolean", "boolean"),
    ("flapping", "boolean", "boolean"),
    ("version", "bigint", "bigint"),
    ("since", "timestamptz", "timestamp with time zone"),
    ("decided_at", "timestamptz", "timestamp with time zone"),
    ("reason", "text", "text"),
    ("cause", "text", "text"),
    ("session", "jsonb", "jsonb"),
    ("verified", "boolean", "boolean"),
    ("suppressed", "bigint", "bigint"),
)
assert tuple(c[0] for c in COLUMNS) == Row._fields
STAMP = {"current": "updated_at", "history": "written_at"}  # when the sink wrote the row
IDLE_LOG_S = 300.0  # a sink with nothing to do says so this often


class SinkError(PresenceError):
    """The sink cannot run as configured: the message names what and what to do."""


def where(dsn: str) -> str:
    """What may be logged of a DSN: host, port and database (never the user's password)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(a DSN that does not parse)"
    host = str(parts.get("host") or parts.get("hostaddr") or "the local socket")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{host}{port}/{parts.get('dbname') or parts.get('user') or '(default database)'}"


def scrub(message: str) -> str:
    """libpq's message on a DSN that does not parse, without the quoted fragments of the DSN it
    repeats (they may be a password)."""
    return one_line(re.sub(r'"[^"]*"', '"…"', message))


def one_line(message: str) -> str:
    """A server's or libpq's message (which may span lines) as one line, without its final dot."""
    return " ".join(message.split()).rstrip(".")


def split_name(table: str) -> tuple[str | None, str]:
    schema, _, name = table.rpartition(".")
    return schema or None, name


def identifier(schema: str | None, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


@dataclass(frozen=True)
class Statements:
    """The SQL of one sink, for its table names."""

    table: str

    @property
    def names(self) -> dict[str, tuple[str | None, str]]:
        schema, name = split_name(self.table)
        return {"current": (schema, name), "history": (schema, f"{name}_history")}

    def ident(self, which: str) -> sql.Identifier:
        return identifier(*self.names[which])

    def create(self, which: str) -> sql.Composed:
        defs = [
            sql.SQL("device text NOT NULL"),
            sql.SQL("status text NOT NULL CHECK (status IN ('online', 'offline'))"),
            sql.SQL("sleeping boolean NOT NULL"),
            sql.SQL("flapping boolean NOT NULL"),
            sql.SQL("version bigint NOT NULL CHECK (version > 0)"),
            sql.SQL("since timestamptz NOT NULL"),
            sql.SQL("decided_at timestamptz NOT NULL"),
            sql.SQL("reason text NOT NULL"),
            sql.SQL("cause text"),
            sql.SQL("session jsonb"),
            sql.SQL("verified boolean NOT NULL"),
            sql.SQL("suppressed bigint NOT NULL"),
            sql.SQL("{} timestamptz NOT NULL DEFAULT now()").format(sql.Identifier(STAMP[which])),
            sql.SQL(
                "PRIMARY KEY (device)" if which == "current" else "PRIMARY KEY (device, version)"
            ),
        ]
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
            self.ident(which), sql.SQL(", ").join(defs)
        )

    def _insert(self, which: str) -> sql.Composed:
        names = [c[0] for c in COLUMNS]
        arrays = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(c[1])) for c in COLUMNS)
        return sql.SQL(
            "INSERT INTO {table} AS d ({cols}, {stamp}) SELECT {cols}, now() "
            "FROM unnest({arrays}) AS u({cols}) "
        ).format(
            table=self.ident(which),
            cols=sql.SQL(", ").join(map(sql.Identifier, names)),
            stamp=sql.Identifier(STAMP[which]),
            arrays=arrays,
        )

    @property
    def upsert(self) -> sql.Composed:
        """One statement per batch: every device's row, only where the record is newer."""
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name))
            for name in [*(c[0] for c in COLUMNS[1:]), STAMP["current"]]
        )
        return self._insert("current") + sql.SQL(
            "ON CONFLICT (device) DO UPDATE SET {} WHERE d.version < EXCLUDED.version"
        ).format(updates)

    @property
    def append_history(self) -> sql.Composed:
        return self._insert("history") + sql.SQL("ON CONFLICT (device, version) DO NOTHING")


def check_shape(conn: psycopg.Connection[Any], statements: Statements, which: str) -> None:
    """Stop with what differs when an existing table is not the shape the sink writes."""
    schema, name = statements.names[which]
    found = {
        row[0]: (row[1], row[2], row[3])
        for row in conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns "
            "WHERE table_schema = coalesce(%s, current_schema()) AND table_name = %s",
            (schema, name),
        )
    }
    wanted = {c[0]: c[2] for c in COLUMNS} | {STAMP[which]: "timestamp with time zone"}
    problems = [f"no column {col} ({kind})" for col, kind in wanted.items() if col not in found]
    problems += [
        f"column {col} is {found[col][0]}, the sink writes {kind}"
        for col, kind in wanted.items()
        if col in found and found[col][0] != kind
    ]
    problems += [
        f"column {col} is NOT NULL without a default, and the sink does not write it"
        for col, (_, nullable, default) in found.items()
        if col not in wanted and nullable == "NO" and default is None
    ]
    table = ".".join(p for p in (schema, name) if p)
    if problems:
        raise SinkError(
            f"table {table} exists with another shape than the sink writes: "
            + "; ".join(problems)
            + ". Point --table at a new name (the sink creates it), or fix or drop this one"
        )
    # The statement itself, on no rows: PostgreSQL checks the conflict target when it plans it.
    probe = statements.upsert if which == "current" else statements.append_history
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(probe, [[] for _ in COLUMNS])
    except psycopg.errors.InvalidColumnReference as exc:
        key = "(device)" if which == "current" else "(device, version)"
        raise SinkError(
            f"table {table} has no primary key or unique constraint on {key}, which the "
            f"sink's upsert needs ({one_line(str(exc))}); add one, or point --table elsewhere"
        ) from exc
    except (psycopg.ProgrammingError, psycopg.DataError) as exc:
        raise SinkError(
            f"table {table} does not take the sink's rows: {one_line(str(exc))}"
        ) from exc


def is_transient(exc: BaseException) -> bool:
    """A failure that passes by itself (connection lost, server restarting, deadlock): retry."""
    return isinstance(exc, psycopg.OperationalError)


class PostgresWriter:
    """The database side: a small pool, the tables, one transaction per batch with retries."""

    def __init__(
        self,
        settings: SinkSettings,
        stopping: threading.Event,
        stats: SinkStats,
    ) -> None:
        assert settings.dsn is not None
        self.settings, self.stopping, self.stats = settings, stopping, stats
        self.dsn = settings.dsn.get_secret_value()
        self.where = where(self.dsn)
        self.statements = Statements(settings.table)
        self.pool: ConnectionPool[psycopg.Connection[Any]] | None = None

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "connect_timeout": self.settings.connect_timeout_s,
            "application_name": "presence-sink",
        }

    def open(self) -> None:
        """Reach the database (one clear error if not), make the tables, check their shape."""
        try:
            conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError as exc:
            raise SinkError(f"the DSN does not parse: {scrub(str(exc))}") from None
        try:
            with psycopg.connect(self.dsn, **self._connect_kwargs()) as conn:
                self._prepare_tables(conn)
        except psycopg.OperationalError as exc:
            raise SinkError(
                f"cannot reach PostgreSQL at {self.where}: {one_line(str(exc))} (check the DSN: "
                "host, port, database, user, password; and that the server is up)"
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise SinkError(
                f"PostgreSQL at {self.where} refused the sink: {one_line(str(exc))}. The sink's "
                "user needs CREATE on the schema (or the tables made for it), SELECT, INSERT "
                "and UPDATE"
            ) from None
        self.pool = self._new_pool()
        log.info(
            "sink: writing to PostgreSQL at %s, table %s%s",
            self.where,
            self.settings.table,
            f" and {self.settings.table}_history" if self.settings.history else "",
        )

    def _new_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self.dsn,
            kwargs=self._connect_kwargs(),
            min_size=1,
            max_size=1,  # one writer thread; the pool is for connecting and checking
            open=False,
            check=ConnectionPool.check_connection,  # a connection an outage broke is replaced
            timeout=self.settings.connect_timeout_s,
            name="presence-sink",
        )
        pool.open()
        return pool

    def _prepare_tables(self, conn: psycopg.Connection[Any]) -> None:
        kinds = ["current", "history"] if self.settings.history else ["current"]
        with conn.transaction():
            # Two sinks starting together must not race on CREATE TABLE IF NOT EXISTS.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                (f"presence-sink:{self.settings.table}",),
            )
            for which in kinds:
                conn.execute(self.statements.create(which))
        for which in kinds:
            check_shape(conn, self.statements, which)

    def write(self, batch: Batch) -> tuple[int, int]:
        """Write the batch in one transaction, retrying what passes; (rows, history rows)."""
        retrying = Retrying(
            retry=retry_if_exception_type(psycopg.OperationalError),
            wait=wait_exponential_jitter(multiplier=0.5, max=10),
            stop=lambda _state: self.stopping.is_set(),
            sleep=self._sleep,
            before_sleep=self._before_retry,
            reraise=True,
        )
        try:
            return retrying(self._write_once, batch)
        except psycopg.OperationalError as exc:
            raise SinkError(
                f"stopped while PostgreSQL at {self.where} was unreachable ({one_line(str(exc))}); "
                "the batch's offsets were not committed, a restarted sink writes it again"
            ) from None
        except psycopg.Error as exc:
            raise SinkError(
                f"PostgreSQL at {self.where} refused a batch for table {self.settings.table}: "
                f"{type(exc).__name__}: {one_line(str(exc))}. Offsets were not committed: fix the "
                "cause and restart, and the batch is written again"
            ) from None

    def _sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)  # a stop request ends the wait

    def _before_retry(self, state: RetryCallState) -> None:
        self.stats.db_retries += 1
        # A fresh pool for the next attempt: it tries to connect at once, where the old one's
        # reconnection backoff grows with the outage (and gives up after 5 minutes).
        if self.pool is not None:
            self.pool.close(timeout=1)
        self.pool = self._new_pool()
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "sink: PostgreSQL at %s: %s; retry %d in %.1f s (nothing is lost: Kafka's offsets "
            "wait for the database)",
            self.where,
            one_line(str(exc)) if exc else "failed",
            state.attempt_number,
            wait,
        )

    def _write_once(self, batch: Batch) -> tuple[int, int]:
        if self.pool is None:
            self.pool = self._new_pool()
        with self.pool.connection() as conn, conn.transaction():
            cur = conn.execute(self.statements.upsert, columns(batch.rows))
            written = max(cur.rowcount, 0)
            history = 0
            if batch.history:
                cur = conn.execute(self.statements.append_history, columns(batch.history))
                history = max(cur.rowcount, 0)
        return written, history

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


class _Assignments(ConsumerRebalanceListener):  # type: ignore[misc]
    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            log.info("sink: partitions revoked: %s", _partitions(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("sink: partitions assigned: %s", _partitions(assigned) or "none")


def _partitions(tps: Any) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps))


class PostgresSink:
    """The loop: poll a batch, write it, commit its offsets; log progress now and then."""

    def __init__(self, settings: SinkSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.clock = settings, clock
        self.stopping = threading.Event()
        self.stats = SinkStats()
        self.writer = PostgresWriter(settings, self.stopping, self.stats)
        self.topic = settings.kafka.status_topic
        self.consumer: KafkaConsumer | None = None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        self.writer.open()
        try:
            self.consumer = self._consumer()
            self._loop(self.consumer)
        finally:
            if self.consumer is not None:
                self.consumer.close(autocommit=False)
            self.writer.close()
            final = progress_line(self.stats, self.stats.rows_written, 0, None, show_lag=False)
            log.info("sink: stopped after %s", final.removeprefix("sink: "))

    def _consumer(self) -> KafkaConsumer:
        try:
            consumer = KafkaConsumer(
                **client_options(self.settings.kafka),
                group_id=self.settings.group_id,
                client_id=f"presence-sink-{self.settings.group_id}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # the first time: from the beginning
                max_poll_records=self.settings.batch_size,
                # a sink that died (kill -9) holds its partitions this long, not 45 s
                session_timeout_ms=int(self.settings.session_timeout_s * 1000),
                heartbeat_interval_ms=int(self.settings.session_timeout_s * 1000 / 3),
            )
        except KafkaError as exc:
            raise SinkError(
                f"cannot reach Kafka at {self.settings.kafka.bootstrap}: {exc}"
            ) from None
        consumer.subscribe([self.topic], listener=_Assignments())
        try:
            missing = not consumer.partitions_for_topic(self.topic)
        except KafkaError:
            missing = False  # the first poll says more
        if missing:
            log.warning(
                "sink: topic %s does not exist (yet): waiting for it (the workers create it; "
                "is [kafka] status_topic right?)",
                self.topic,
            )
        log.info(
            "sink: reading %s as group %s from its committed offsets",
            self.topic,
            self.settings.group_id,
        )
        return consumer

    def _poll_batch(self, consumer: KafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """Up to batch_size records, waiting at most linger_ms after the first one came."""
        polled: dict[TopicPartition, list[Any]] = {}
        count, first_at = 0, None
        limit = self.settings.batch_size
        while count < limit and not self.stopping.is_set():
            if first_at is None:
                timeout = 500
            else:
                left = self.settings.linger_ms - (self.clock() - first_at) * 1000
                if left <= 0:
                    break
                timeout = int(left) + 1
            records = consumer.poll(timeout_ms=timeout, max_records=limit - count)
            if not records:
                if first_at is None:
                    break  # nothing at all: let the loop log progress and look at `stopping`
                continue
            first_at = first_at if first_at is not None else self.clock()
            for tp, part in records.items():
                polled.setdefault(tp, []).extend(part)
                count += len(part)
            if self.settings.linger_ms == 0:
                break
        return polled

    def _loop(self, consumer: KafkaConsumer) -> None:
        """Poll, write, commit; a progress line every progress interval while records come or
        lag remains, and once every IDLE_LOG_S while all is quiet."""
        last_check = last_line = self.clock()
        rows_before, records_before = 0, -1
        while not self.stopping.is_set():
            polled = self._poll_batch(consumer)
            if polled:
                self._handle(consumer, polled)
            now = self.clock()
            if now - last_check < self.settings.progress_interval_s:
                continue
            lag = self.lag(consumer)
            busy = self.stats.records != records_before or lag != 0
            if busy or now - last_line >= IDLE_LOG_S:
                log.info(progress_line(self.stats, rows_before, now - last_check, lag))
                last_line, rows_before = now, self.stats.rows_written
            last_check, records_before = now, self.stats.records

    def _handle(self, consumer: KafkaConsumer, polled: dict[TopicPartition, list[Any]]) -> None:
        messages = [m for part in polled.values() for m in part]
        batch = prepare(messages, history=self.settings.history)
        for refusal in batch.refused:
            log.warning("sink: %s", refusal.log_line(self.topic))
        written, history = self.writer.write(batch) if batch.rows else (0, 0)
        self.stats.add(batch, written, history)
        offsets = {
            tp: OffsetAndMetadata(part[-1].offset + 1, "", -1) for tp, part in polled.items()
        }
        try:  # only now: the database has committed every row of these records
            consumer.commit(offsets)
        except (CommitFailedError, RebalanceInProgressError) as exc:
            self.stats.commit_failures += 1
            log.warning(
                "sink: offsets not committed (%s): the group rebalanced; these records come "
                "again, and the upsert makes that harmless",
                type(exc).__name__,
            )

    def lag(self, consumer: KafkaConsumer) -> int | None:
        """Records of the assigned partitions not yet read (None when Kafka does not say)."""
        try:
            assigned = list(consumer.assignment())
            if not assigned:
                return 0
            ends = consumer.end_offsets(assigned)
            return sum(max(int(ends[tp]) - int(consumer.position(tp)), 0) for tp in assigned)
        except (KafkaError, KeyError, AssertionError):
            return None
