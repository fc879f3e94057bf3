"""The worker's reading of `presence.raw`, fuzzed: any bytes are a raw event or a `bad_record`.

Anyone who can write to `presence.raw` (another producer, a bridge of another version, a typo in a
console producer) can put anything there. The worker's agent dead-letters what it cannot decode
as `bad_record` (the exceptions `Processor.handle` names) and any other exception as
`processing_error`; these tests hold the decoder to the first: no input may surprise it.
"""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.core import ConnectionEvent
from mqtt_presence.streams.processor import clock_skew, decode_event

BAD_RECORD = (msgspec.DecodeError, ValueError, KeyError, TypeError)  # as Processor.handle reads

fields = st.fixed_dictionaries(
    {"device": st.text(max_size=5), "kind": st.sampled_from(["birth", "will", "x"])},
    optional={
        "received_at": st.integers(min_value=-(2**70), max_value=2**70) | st.floats(),
        "session": st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=5),
        "event_time": st.integers(min_value=-(2**70), max_value=2**70),
        "schema_version": st.integers(),
        "properties": st.dictionaries(st.text(max_size=3), st.text(max_size=3)),
    },
)


def decode(data: bytes) -> ConnectionEvent | None:
    try:
        return decode_event(data)
    except BAD_RECORD:
        return None


@given(st.binary(max_size=300))
def test_any_bytes_are_an_event_or_a_bad_record(data: bytes) -> None:
    decode(data)


@given(fields, st.integers(min_value=0, max_value=200), st.binary(min_size=1, max_size=3))
def test_any_record_shape_whole_or_spliced_is_an_event_or_a_bad_record(
    record: dict[str, object], at: int, splice: bytes
) -> None:
    data = json.dumps(record).encode()
    for variant in (data, data[:at] + splice + data[at:]):
        event = decode(variant)
        if event is not None:  # what passes is inside the bounds every consumer reads
            assert 0 <= event.received_at < 2**63
            assert isinstance(event.session, str) or event.session is None or event.session >= 0


@pytest.mark.parametrize(
    "record",
    [
        b'{"device":"d","kind":"birth","received_at":1,"session":1180591620717411303424}',
        b'{"device":"d","kind":"birth","received_at":-5}',
        b'{"device":"d\\u0000","kind":"birth","received_at":1}',
        b'{"device":"","kind":"birth","received_at":1}',
        b'{"device":"d\xff\xfe","kind":"birth","received_at":1}',
    ],
)
def test_records_out_of_range_or_not_utf8_are_bad_records(record: bytes) -> None:
    with pytest.raises(BAD_RECORD):
        decode_event(record)


def test_a_receive_time_far_ahead_of_the_workers_clock_is_refused_with_the_reason() -> None:
    now = 1_800_000_000_000
    assert clock_skew(now + 299_000, now, 300_000) is None
    assert clock_skew(now - 10**9, now, 300_000) is None  # late is fine: the core clamps it
    year = clock_skew(now + 365 * 86_400_000, now, 300_000)
    assert year is not None
    assert "31536000 s ahead" in year
    assert "max_clock_skew_s is 300" in year
