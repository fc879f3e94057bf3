"""The sink's pure part: records of presence.status in, the rows one upsert writes out.

The property that matters downstream: whatever order and however often the records of a batch
arrive (Kafka redelivers after a crash, a worker announces a device's last change again after a
rebalance), the coalesced batch holds each device's highest version, once, in device order.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.core import StatusChange
from mqtt_presence.core.events import Reason, Status
from mqtt_presence.sink.batch import (
    BAD_RECORD,
    KEY_MISMATCH,
    NOT_JSON,
    OUT_OF_RANGE,
    TOMBSTONE,
    Row,
    SinkStats,
    coalesce,
    columns,
    datetime_to_millis,
    prepare,
    progress_line,
    row_of,
)


@dataclass(frozen=True)
class Record:
    """A Kafka record as the pure part sees it (kafka-python's ConsumerRecord has these)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def change(device: str, version: int, **fields: object) -> StatusChange:
    base: dict[str, object] = {
        "device": device,
        "status": Status.ONLINE if version % 2 else Status.OFFLINE,
        "flapping": False,
        "version": version,
        "since": 1_700_000_000_000 + version,
        "decided_at": 1_700_000_000_000 + version,
        "reason": Reason.BIRTH if version % 2 else Reason.WILL,
        "session": version,
        "verified": True,
        "suppressed": 0,
    }
    return StatusChange(**(base | fields))  # type: ignore[arg-type]


def record(c: StatusChange, offset: int = 0, key: bytes | None = None) -> Record:
    return Record(0, offset, c.device.encode() if key is None else key, msgspec.json.encode(c))


devices = st.sampled_from(["cam-1", "cam-2", "gw/kitchen", "sensor-ä", "x"])
versioned = st.lists(st.tuples(devices, st.integers(1, 50)), max_size=60)


@given(versioned, st.randoms(use_true_random=False), st.integers(1, 3))
def test_any_order_and_duplication_coalesces_to_each_devices_max_version(
    pairs: list[tuple[str, int]], rnd: object, copies: int
) -> None:
    changes = [change(d, v) for d, v in pairs] * copies
    rnd.shuffle(changes)  # type: ignore[attr-defined]
    out = coalesce(changes)
    expected: dict[str, int] = {}
    for d, v in pairs:
        expected[d] = max(expected.get(d, 0), v)
    assert [(c.device, c.version) for c in out] == sorted(expected.items())
    # the rows of a batch prepared from the same records say the same
    batch = prepare([record(c, i) for i, c in enumerate(changes)])
    assert [(r.device, r.version) for r in batch.rows] == sorted(expected.items())
    assert batch.refused == []
    assert batch.records == len(changes)


@given(versioned, st.randoms(use_true_random=False))
def test_history_keeps_every_distinct_version_once(
    pairs: list[tuple[str, int]], rnd: object
) -> None:
    changes = [change(d, v) for d, v in pairs] * 2
    rnd.shuffle(changes)  # type: ignore[attr-defined]
    batch = prepare([record(c, i) for i, c in enumerate(changes)], history=True)
    assert [(r.device, r.version) for r in batch.history] == sorted(set(pairs))


def test_a_row_holds_the_record_and_reads_back_to_it() -> None:
    c = change("cam-1", 7, session="boot-7", cause="keepalive_timeout", sleeping=False)
    row = row_of(c)
    assert row.session == '"boot-7"'  # JSON text: the string "7" and the number 7 stay apart
    assert row_of(change("cam-1", 7)).session == "7"
    assert row_of(change("cam-1", 7, session=None)).session is None
    assert datetime_to_millis(row.since) == c.since
    assert (row.status, row.reason, row.cause) == ("online", "birth", "keepalive_timeout")
    assert columns([row, row])[4] == [7, 7]
    assert len(columns([])) == len(Row._fields)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"d", None, TOMBSTONE),
        (b"d", b"not json", NOT_JSON),
        (b"d", b"\xff\xfe", NOT_JSON),
        (b"d", b'{"device": "d"}', BAD_RECORD),
        (
            b"d",
            msgspec.json.encode({**msgspec.structs.asdict(change("d", 1)), "status": "up"}),
            BAD_RECORD,
        ),
        (b"other", msgspec.json.encode(change("d", 1)), KEY_MISMATCH),
        (b"d", msgspec.json.encode(change("d", 0)), OUT_OF_RANGE),
        (b"d", msgspec.json.encode(change("d", 2**63)), OUT_OF_RANGE),
        (b"d", msgspec.json.encode(change("d", 1, since=-1)), OUT_OF_RANGE),
        (b"d", msgspec.json.encode(change("d", 1, decided_at=10**17)), OUT_OF_RANGE),
        (b"d", msgspec.json.encode(change("d", 1, cause="a\x00b")), OUT_OF_RANGE),
        (b"d", msgspec.json.encode(change("d", 1, session="\x00")), OUT_OF_RANGE),
        (
            b"d",
            b'{"device":"d","status":"online","flapping":false,"version":1,"since":1,'
            b'"decided_at":1,"reason":"birth","session":"\\ud800","verified":true,"suppressed":0}',
            NOT_JSON,  # msgspec refuses a lone surrogate escape as malformed JSON
        ),
        (b"d\n", msgspec.json.encode(change("d\n", 1)), OUT_OF_RANGE),
        (b"", msgspec.json.encode(change("", 1)), OUT_OF_RANGE),
    ],
)
def test_a_record_no_table_can_hold_is_refused_with_its_reason_not_raised(
    key: bytes, value: bytes | None, reason: str
) -> None:
    good = change("good", 3)
    batch = prepare([Record(2, 40, key, value), record(good, 41)])
    assert [(r.partition, r.offset, r.reason) for r in batch.refused] == [(2, 40, reason)]
    assert [r.device for r in batch.rows] == ["good"]  # the rest of the batch goes on
    line = batch.refused[0].log_line("presence.status")
    assert line.startswith(f"refused presence.status[2]@40: {reason}: ")


def test_a_record_without_a_key_is_taken_by_its_device() -> None:
    batch = prepare([Record(0, 0, None, msgspec.json.encode(change("cam-9", 2)))])
    assert [r.device for r in batch.rows] == ["cam-9"]


@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=20)))
def test_no_bytes_at_all_make_prepare_raise(value: bytes, key: bytes | None) -> None:
    batch = prepare([Record(0, 0, key, value)])
    assert len(batch.rows) + len(batch.refused) == 1


def test_progress_line_counts_refusals_by_reason_and_the_rate() -> None:
    stats = SinkStats()
    batch = prepare(
        [record(change("a", 1)), record(change("a", 2)), Record(0, 9, b"x", b"{")], history=False
    )
    stats.add(batch, written=1, history_written=0)
    line = progress_line(stats, rows_before=0, seconds=0.5, lag=12)
    assert line == (
        "sink: 1 rows written (2/s), 3 records read, 0 not newer, 1 refused (not_json 1), lag 12"
    )
    stats.add(prepare([record(change("a", 2))]), written=0, history_written=0)
    assert stats.not_newer == 1
    assert "lag unknown" in progress_line(stats, 1, 10, None)
