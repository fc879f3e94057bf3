"""Fuzzing every profile and the translator: no message can stop the flow.

Field report: one JSON payload holding the bytes \\xff\\xfe inside a string made the json profile
raise `UnicodeDecodeError`, the bridge died, the broker redelivered the message to the persistent
session (MQTT 5.0 section 4.4: unacknowledged QoS 1 messages are sent again on reconnect), and every
restart died on it again. The rule these tests hold every profile to: a profile either returns an
event that every consumer of `presence.raw` can read back, or raises `Invalid` (a dead letter with
a reason); and the translator, for any topic, payload and flags, returns a record, never raises.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.bridge.message import Invalid, MqttMessage
from mqtt_presence.bridge.profiles import Profile, build
from mqtt_presence.bridge.profiles.emqx import EmqxProfileSettings
from mqtt_presence.bridge.profiles.homie import HomieProfileSettings
from mqtt_presence.bridge.profiles.json_status import JsonProfileSettings
from mqtt_presence.bridge.profiles.plain import PlainProfileSettings
from mqtt_presence.bridge.profiles.sparkplug import Payload, SparkplugProfileSettings
from mqtt_presence.bridge.translate import Translator
from mqtt_presence.core import ConnectionEvent
from mqtt_presence.core.records import DeadLetterRecord, check_raw

T = 1_700_000_000_000
PROFILES: dict[str, Profile] = {
    "json": build(JsonProfileSettings()),
    "plain": build(PlainProfileSettings()),
    "homie": build(HomieProfileSettings()),
    "emqx": build(EmqxProfileSettings()),
    "sparkplug": build(SparkplugProfileSettings()),
}
EVERY = Translator(list(PROFILES.values()))

# One topic level as devices write them: any text MQTT allows in a level (no '/', '+', '#', NUL).
level = st.text(
    st.characters(blacklist_characters="/+#\x00"),  # lone surrogates too: JSON can escape them
    min_size=0,
    max_size=40,
)


def topic_for(name: str, device: str, extra: str) -> str:
    return {
        "json": f"devices/{device}/status",
        "plain": f"{device}/availability",
        "homie": f"homie/{device}/$state",
        "emqx": f"$SYS/brokers/{extra}/clients/{device}/connected",
        "sparkplug": f"spBv1.0/{extra}/NBIRTH/{device}",
    }[name]


def message(topic: str, payload: bytes, dup: bool = False, retain: bool = False) -> MqttMessage:
    return MqttMessage(topic=topic, payload=payload, received_at=T, dup=dup, retain=retain)


def profile_outcome(name: str, msg: MqttMessage) -> ConnectionEvent | Invalid:
    """What one profile makes of a message: a readable event or `Invalid`; anything else fails."""
    profile = PROFILES[name]
    captures = profile.pattern.match(msg.topic)
    if captures is None:  # an empty level, say: the translator calls it an unknown topic
        return Invalid("unknown_topic", msg.topic)
    try:
        event = profile.translate(msg, captures)
    except Invalid as exc:
        return exc
    try:
        return check_raw(event)
    except msgspec.ValidationError as exc:  # the translator dead-letters these: out_of_range
        return Invalid("out_of_range", str(exc))


# JSON values of every shape, with the fields the profiles read sometimes present.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
status_bodies = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["online", "offline"]) | json_values,
        "session": json_values,
        "ts": json_values,
        "graceful": json_values,
        "device": json_values,
        "clientid": json_values,
        "connected_at": json_values,
        "disconnected_at": json_values,
        "reason": json_values,
    },
)


@given(
    name=st.sampled_from(sorted(PROFILES)),
    device=level,
    extra=level,
    payload=st.binary(max_size=300),
)
def test_any_bytes_give_an_event_or_a_reasoned_refusal(
    name: str, device: str, extra: str, payload: bytes
) -> None:
    profile_outcome(name, message(topic_for(name, device, extra), payload))


@given(
    name=st.sampled_from(["json", "emqx"]),
    device=level,
    body=status_bodies,
    at=st.integers(min_value=0, max_value=300),
    splice=st.binary(min_size=1, max_size=4),
)
def test_any_json_object_whole_or_spliced_gives_an_event_or_a_reasoned_refusal(
    name: str, device: str, body: dict[str, Any], at: int, splice: bytes
) -> None:
    """Whole, and with random bytes spliced in (inside a string, they are the field report's
    invalid UTF-8; elsewhere, broken JSON)."""
    payload = json.dumps(body).encode()
    topic = topic_for(name, device, "node1")
    profile_outcome(name, message(topic, payload))
    profile_outcome(name, message(topic, payload[:at] + splice + payload[at:]))


@given(
    device=level,
    metrics=st.lists(
        st.tuples(
            st.text(max_size=10) | st.just("bdSeq"),
            st.integers(min_value=0, max_value=2**64 - 1),
            st.integers(min_value=0, max_value=2**32 - 1),
        ),
        max_size=5,
    ),
    timestamp=st.integers(min_value=0, max_value=2**64 - 1),
    cut=st.integers(min_value=0, max_value=400),
    flip=st.binary(max_size=4),
)
def test_sparkplug_payloads_built_and_broken_give_an_event_or_a_reasoned_refusal(
    device: str,
    metrics: list[tuple[str, int, int]],
    timestamp: int,
    cut: int,
    flip: bytes,
) -> None:
    payload = Payload(timestamp=timestamp)
    for metric_name, long_value, int_value in metrics:
        payload.metrics.add(name=metric_name, long_value=long_value, int_value=int_value)
    data: bytes = payload.SerializeToString()
    for broken in (data, data[:cut], data[:cut] + flip + data[cut:]):
        profile_outcome("sparkplug", message(topic_for("sparkplug", device, "g"), broken))


@given(
    topic=st.text(max_size=60),
    payload=st.binary(max_size=200),
    dup=st.booleans(),
    retain=st.booleans(),
)
def test_the_translator_answers_every_message_with_a_record(
    topic: str, payload: bytes, dup: bool, retain: bool
) -> None:
    record = EVERY.translate(message(topic, payload, dup=dup, retain=retain))
    if isinstance(record, DeadLetterRecord):
        assert base64.b64decode(record.payload_base64) == payload  # the original bytes, untouched
        assert record.reason
        assert record.detail
    else:
        assert check_raw(record) is record
    msgspec.json.encode(record)  # and the bridge can write it


# --- the field report's message, and values no consumer can read -------------------------------


def dead(name: str, payload: bytes, device: str = "cam-1") -> DeadLetterRecord:
    record = Translator([PROFILES[name]]).translate(message(topic_for(name, device, "n"), payload))
    assert isinstance(record, DeadLetterRecord), record
    return record


def test_invalid_utf8_inside_a_json_string_is_a_dead_letter_not_a_crash() -> None:
    letter = dead("json", b'{"status":"online","note":"\xff\xfe"}')
    assert letter.reason == "bad_payload"
    assert "utf-8" in letter.detail.lower()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "online", "session": 2**70}, "$.session"),
        ({"status": "online", "session": -1}, "$.session"),
        ({"status": "online", "session": "boot\u00007"}, "$.session"),
        ({"status": "online", "session": 1, "ts": 2**70}, "$.event_time"),
        ({"status": "online", "session": 1, "ts": -5}, "$.event_time"),
    ],
)
def test_values_outside_what_consumers_read_are_dead_lettered_with_the_field(
    body: dict[str, Any], field: str
) -> None:
    letter = dead("json", json.dumps(body).encode())
    assert letter.reason == "out_of_range"
    assert field in letter.detail


def test_lone_surrogates_are_dead_letters_wherever_they_come_from() -> None:
    # A JSON escape of half a UTF-16 pair: msgspec refuses it when decoding.
    assert dead("json", b'{"status":"online","session":"\\ud800"}').reason == "bad_payload"
    # A string that holds one anyway (a broker that does not check topics): not writable.
    assert dead("plain", b"online", device="cam\ud800").reason == "out_of_range"


def test_a_topic_that_is_not_utf8_is_a_dead_letter() -> None:
    msg = MqttMessage("devices/\ufffd/status", b"{}", T, defect="the topic is not UTF-8")
    record = EVERY.translate(msg)
    assert isinstance(record, DeadLetterRecord)
    assert record.reason == "bad_packet"


def test_a_profile_bug_is_an_internal_error_dead_letter() -> None:
    class Broken:
        name = "broken"
        pattern = PROFILES["json"].pattern

        def translate(self, msg: MqttMessage, captures: dict[str, str]) -> ConnectionEvent:
            raise RecursionError("maximum recursion depth exceeded")

    record = Translator([Broken()]).translate(message("devices/d/status", b"{}"))
    assert isinstance(record, DeadLetterRecord)
    assert record.reason == "internal_error"
    assert "RecursionError" in record.detail
