"""The pure part of a sink: records of `presence.status` in, the rows to write out.

No I/O here. A batch of Kafka records becomes (1) the newest change per device, sorted by device
(one upsert statement may touch a row only once, and a fixed lock order keeps two sinks that
overlap during a rebalance from deadlocking), (2) every distinct (device, version) for the
history table, and (3) the records refused, each with a reason: a record no consumer could
store (not JSON, not the schema, a key that is not its device, a value out of range) is counted
and logged by the caller and skipped; it never stops the sink.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol

import msgspec

from mqtt_presence.core import StatusChange
from mqtt_presence.core.events import ID_PATTERN, INT64_MAX, MAX_ID_LENGTH

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_MILLIS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last instant Python dates hold
_CONTROL = frozenset(chr(c) for c in [*range(0x20), 0x7F])
_decode = msgspec.json.Decoder(StatusChange).decode
_encode = msgspec.json.Encoder().encode

# The reasons a record is refused (the counter's label, the log line's first word).
NOT_JSON = "not_json"  # not JSON at all, or not UTF-8
BAD_RECORD = "bad_record"  # JSON, but not a status record of the schema (field, type, enum)
TOMBSTONE = "tombstone"  # no value: nothing the pipeline writes; never deletes a row
KEY_MISMATCH = "key_mismatch"  # the key is not the record's device id
OUT_OF_RANGE = "out_of_range"  # a value the table cannot hold (bigint, timestamp, NUL, id)


class Message(Protocol):
    """What the pure part needs of a Kafka record (kafka-python's ConsumerRecord fits)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class RefusedError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class Refusal:
    partition: int
    offset: int
    reason: str
    detail: str

    def log_line(self, topic: str) -> str:
        return f"refused {topic}[{self.partition}]@{self.offset}: {self.reason}: {self.detail}"


class Row(NamedTuple):
    """One device's row, in the table's column order (`postgres.COLUMNS`)."""

    device: str
    status: str
    sleeping: bool
    flapping: bool
    version: int
    since: datetime
    decided_at: datetime
    reason: str
    cause: str | None
    session: str | None  # the token as JSON text (42 and "42" stay apart), NULL without one
    verified: bool
    suppressed: int


@dataclass
class Batch:
    rows: list[Row]  # the newest change per device, sorted by device
    history: list[Row]  # every distinct (device, version), sorted
    refused: list[Refusal]
    records: int  # Kafka records in the batch, refused ones included


def millis_to_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def datetime_to_millis(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def _check_text(name: str, text: str) -> None:
    if "\x00" in text:
        raise RefusedError(OUT_OF_RANGE, f"{name} has a NUL character (PostgreSQL text cannot)")
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise RefusedError(OUT_OF_RANGE, f"{name} is not writable as UTF-8: {exc.reason}") from exc


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise RefusedError(OUT_OF_RANGE, f"{name} {value} is outside {low}..{high}")


def read_record(key: bytes | None, value: bytes | None) -> StatusChange:
    """The status change in one record of `presence.status`, or `RefusedError` saying why a
    table could not hold it."""
    if value is None:
        raise RefusedError(TOMBSTONE, "a record without a value (a tombstone); no row is deleted")
    try:
        change = _decode(value)
    except msgspec.ValidationError as exc:
        raise RefusedError(BAD_RECORD, str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise RefusedError(NOT_JSON, str(exc)) from exc
    device = change.device
    if not 1 <= len(device) <= MAX_ID_LENGTH or any(c in _CONTROL for c in device):
        raise RefusedError(
            OUT_OF_RANGE,
            f"device id must be 1..{MAX_ID_LENGTH} characters without control characters "
            f"({ID_PATTERN})",
        )
    _check_text("device", device)
    if key is not None and key != device.encode():
        shown = key[:80].decode(errors="replace")
        raise RefusedError(KEY_MISMATCH, f"key {shown!r} is not the record's device {device!r}")
    _check_int("version", change.version, 1, INT64_MAX)
    _check_int("since", change.since, 0, MAX_MILLIS)
    _check_int("decided_at", change.decided_at, 0, MAX_MILLIS)
    _check_int("suppressed", change.suppressed, 0, INT64_MAX)
    if change.cause is not None:
        _check_text("cause", change.cause)
    if isinstance(change.session, str):
        _check_text("session", change.session)
    return change


def row_of(change: StatusChange) -> Row:
    return Row(
        device=change.device,
        status=change.status.value,
        sleeping=change.sleeping,
        flapping=change.flapping,
        version=change.version,
        since=millis_to_datetime(change.since),
        decided_at=millis_to_datetime(change.decided_at),
        reason=change.reason.value,
        cause=change.cause,
        session=None if change.session is None else _encode(change.session).decode(),
        verified=change.verified,
        suppressed=change.suppressed,
    )


def coalesce(changes: Iterable[StatusChange]) -> list[StatusChange]:
    """The change with the highest version of each device (of equal versions, the later one:
    a worker announces a device's last change again, with its version, after a rebalance),
    sorted by device."""
    newest: dict[str, StatusChange] = {}
    for change in changes:
        held = newest.get(change.device)
        if held is None or change.version >= held.version:
            newest[change.device] = change
    return [newest[d] for d in sorted(newest)]


def distinct_versions(changes: Iterable[StatusChange]) -> list[StatusChange]:
    """One change per (device, version), the later of equal ones, sorted: the history rows."""
    seen: dict[tuple[str, int], StatusChange] = {}
    for change in changes:
        seen[(change.device, change.version)] = change
    return [seen[k] for k in sorted(seen)]


def prepare(messages: Sequence[Message], history: bool = False) -> Batch:
    """Kafka records in (any partitions, in the order read), the rows to write out."""
    changes: list[StatusChange] = []
    refused: list[Refusal] = []
    for message in messages:
        try:
            changes.append(read_record(message.key, message.value))
        except RefusedError as exc:
            refused.append(Refusal(message.partition, message.offset, exc.reason, exc.detail))
    return Batch(
        rows=[row_of(c) for c in coalesce(changes)],
        history=[row_of(c) for c in distinct_versions(changes)] if history else [],
        refused=refused,
        records=len(messages),
    )


def columns(rows: Sequence[Row]) -> list[list[object]]:
    """The rows as one list per column: the arrays one `unnest(...)` statement inserts."""
    return (
        [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in Row._fields]
    )


@dataclass
class SinkStats:
    """What a sink did since it started: the figures of its progress lines."""

    records: int = 0  # read from Kafka
    batches: int = 0
    rows_offered: int = 0  # after coalescing: one per device per batch
    rows_written: int = 0  # inserted or updated (the database had an older version or none)
    history_rows: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    commit_failures: int = 0  # Kafka offset commits refused (a rebalance): records come again
    db_retries: int = 0

    @property
    def not_newer(self) -> int:
        """Rows the database already had at this version or a newer one: left untouched."""
        return self.rows_offered - self.rows_written

    def add(self, batch: Batch, written: int, history_written: int) -> None:
        self.records += batch.records
        self.batches += 1
        self.rows_offered += len(batch.rows)
        self.rows_written += written
        self.history_rows += history_written
        self.refused.update(r.reason for r in batch.refused)


def progress_line(
    stats: SinkStats, rows_before: int, seconds: float, lag: int | None, show_lag: bool = True
) -> str:
    """One log line: totals, the write rate since the previous line (over `seconds`, if > 0),
    and the lag (records of the assigned partitions not read yet; None: Kafka did not say)."""
    rate = f" ({(stats.rows_written - rows_before) / seconds:,.0f}/s)" if seconds > 0 else ""
    refused = sum(stats.refused.values())
    parts = [
        f"{stats.rows_written:,} rows written{rate}",
        f"{stats.records:,} records read",
        f"{stats.not_newer:,} not newer",
        f"{refused:,} refused" + (f" ({_counts(stats.refused)})" if refused else ""),
    ]
    if show_lag:
        parts.append(f"lag {'unknown' if lag is None else f'{lag:,}'}")
    if stats.db_retries:
        parts.append(f"{stats.db_retries} database retries")
    if stats.commit_failures:
        parts.append(f"{stats.commit_failures} offset commits refused (rebalance)")
    return "sink: " + ", ".join(parts)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counter.items()))
