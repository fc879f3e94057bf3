"""Each profile on recorded example payloads, and the translator's dead letters."""

from __future__ import annotations

import base64
import json

import pytest

from mqtt_presence.bridge.errors import ConfigurationError
from mqtt_presence.bridge.message import MqttMessage
from mqtt_presence.bridge.profiles import build, subscriptions
from mqtt_presence.bridge.profiles.emqx import EmqxProfileSettings
from mqtt_presence.bridge.profiles.homie import HomieProfileSettings
from mqtt_presence.bridge.profiles.json_status import JsonProfileSettings
from mqtt_presence.bridge.profiles.plain import PlainProfileSettings
from mqtt_presence.bridge.profiles.sparkplug import (
    SparkplugProfileSettings,
    encode_device_payload,
    encode_payload,
)
from mqtt_presence.bridge.topics import TopicPattern
from mqtt_presence.bridge.translate import Translator
from mqtt_presence.core import ConnectionEvent, EventKind, SessionOrder
from mqtt_presence.core.records import DeadLetterRecord

T = 1_700_000_000_000


def msg(topic: str, payload: bytes | str, **kw: object) -> MqttMessage:
    data = payload.encode() if isinstance(payload, str) else payload
    return MqttMessage(topic=topic, payload=data, received_at=T, **kw)  # type: ignore[arg-type]


def translate(settings: object, m: MqttMessage) -> ConnectionEvent | DeadLetterRecord:
    return Translator([build(settings)]).translate(m)  # type: ignore[arg-type]


def event(settings: object, m: MqttMessage) -> ConnectionEvent:
    out = translate(settings, m)
    assert isinstance(out, ConnectionEvent), out
    return out


def dead(settings: object, m: MqttMessage) -> DeadLetterRecord:
    out = translate(settings, m)
    assert isinstance(out, DeadLetterRecord), out
    return out


# --- topic patterns -------------------------------------------------------------------------------


def test_topic_pattern_captures_and_subscribes() -> None:
    p = TopicPattern("site/{site}/{device}/status")
    assert p.subscription == "site/+/+/status"
    assert p.match("site/berlin/cam-1/status") == {"site": "berlin", "device": "cam-1"}
    assert p.match("site/berlin/cam-1/other") is None
    assert p.match("site/berlin/cam-1/status/extra") is None
    assert TopicPattern("fleet/{device}/#").match("fleet/d1/a/b") == {"device": "d1"}


@pytest.mark.parametrize("bad", ["devices/status", "a/#/{device}", "x/dev{device}"])
def test_bad_topic_patterns_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        TopicPattern(bad)


# --- json (the default convention) ----------------------------------------------------------------


def test_json_birth_and_will_with_counter_token() -> None:
    s = JsonProfileSettings()
    birth = event(s, msg("devices/cam-1/status", '{"status":"online","session":42,"ts":17}'))
    assert (birth.device, birth.kind, birth.session, birth.session_order, birth.event_time) == (
        "cam-1",
        EventKind.BIRTH,
        42,
        SessionOrder.COUNTER,
        17,
    )
    will = event(s, msg("devices/cam-1/status", '{"status":"offline","session":42}'))
    assert will.kind is EventKind.WILL
    bye = event(s, msg("devices/cam-1/status", '{"status":"offline","session":42,"graceful":true}'))
    assert bye.kind is EventKind.OFFLINE


def test_json_token_from_user_property_and_flags_are_carried() -> None:
    e = event(
        JsonProfileSettings(),
        msg(
            "devices/d/status",
            '{"status":"online"}',
            retain=True,
            dup=True,
            user_properties={"session": "boot-7a"},
        ),
    )
    assert (e.session, e.session_order, e.retain, e.dup) == (
        "boot-7a",
        SessionOrder.OPAQUE,
        True,
        True,
    )
    assert e.properties == {"session": "boot-7a"}


def test_field_report_b_cameras_need_only_a_topic_pattern() -> None:
    s = JsonProfileSettings(topic="aTopic/{device}")
    assert event(s, msg("aTopic/camera-9", '{"status":"online","session":3}')).device == "camera-9"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not json", "bad_payload"),
        ('["online"]', "bad_payload"),
        ('{"status":"maybe"}', "bad_payload"),
        ('{"status":"online","session":[1]}', "bad_payload"),
        ('{"status":"online","ts":"yesterday"}', "bad_payload"),
        ('{"status":"online","device":"cam-2"}', "device_mismatch"),
    ],
)
def test_json_bad_payloads_become_dead_letters_with_the_original_bytes(
    payload: bytes | str, reason: str
) -> None:
    m = msg("devices/cam-1/status", payload)
    letter = dead(JsonProfileSettings(), m)
    assert letter.reason == reason
    assert base64.b64decode(letter.payload_base64) == m.payload
    assert letter.topic == "devices/cam-1/status"
    assert letter.detail


# --- plain, homie --------------------------------------------------------------------------------


def test_plain_text_availability() -> None:
    s = PlainProfileSettings(topic="zigbee2mqtt/{device}/availability")
    assert event(s, msg("zigbee2mqtt/lamp/availability", "online")).kind is EventKind.BIRTH
    e = event(s, msg("zigbee2mqtt/lamp/availability", "OFFLINE\n"))
    assert (e.kind, e.session) == (EventKind.WILL, None)
    assert dead(s, msg("zigbee2mqtt/lamp/availability", "dunno")).reason == "bad_payload"


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        ("ready", EventKind.BIRTH),
        ("lost", EventKind.WILL),
        ("disconnected", EventKind.OFFLINE),
        ("sleeping", EventKind.OFFLINE),
        ("init", EventKind.ACTIVITY),
        ("alert", EventKind.ACTIVITY),
    ],
)
def test_homie_states(state: str, kind: EventKind) -> None:
    assert event(HomieProfileSettings(), msg("homie/thermo/$state", state)).kind is kind


# --- EMQX client events (payloads as EMQX publishes them) -----------------------------------------

EMQX_CONNECTED = {
    "username": "u",
    "ts": T,
    "sockport": 1883,
    "proto_ver": 5,
    "proto_name": "MQTT",
    "keepalive": 60,
    "ipaddress": "10.0.0.7",
    "expiry_interval": 0,
    "connected_at": T - 5,
    "connack": 0,
    "clientid": "cam-1",
    "clean_start": True,
}
EMQX_DISCONNECTED = {
    "username": "u",
    "ts": T + 9,
    "sockport": 1883,
    "reason": "takenover",
    "proto_ver": 5,
    "proto_name": "MQTT",
    "ipaddress": "10.0.0.7",
    "disconnected_at": T + 9,
    "connected_at": T - 5,
    "clientid": "cam-1",
}


def test_emqx_connected_and_disconnected_events() -> None:
    s = EmqxProfileSettings()
    up = event(
        s, msg("$SYS/brokers/emqx@10.0.0.1/clients/cam-1/connected", json.dumps(EMQX_CONNECTED))
    )
    assert (up.kind, up.session, up.session_order) == (
        EventKind.CONNECTED,
        T - 5,
        SessionOrder.TIMESTAMP,
    )
    down = event(
        s,
        msg("$SYS/brokers/emqx@10.0.0.1/clients/cam-1/disconnected", json.dumps(EMQX_DISCONNECTED)),
    )
    assert (down.kind, down.session, down.reason) == (EventKind.DISCONNECTED, T - 5, "takenover")
    other = dict(EMQX_CONNECTED, clientid="someone-else")
    assert (
        dead(s, msg("$SYS/brokers/n/clients/cam-1/connected", json.dumps(other))).reason
        == "device_mismatch"
    )
    assert dead(s, msg("$SYS/brokers/n/clients/cam-1/subscribed", "{}")).reason == "unknown_topic"


# --- Sparkplug B ---------------------------------------------------------------------------------


def test_sparkplug_nbirth_ndeath_with_bdseq() -> None:
    s = SparkplugProfileSettings()
    birth = event(s, msg("spBv1.0/plant/NBIRTH/edge-1", encode_payload(255, T, seq=0)))
    assert (birth.device, birth.kind, birth.session, birth.session_order, birth.event_time) == (
        "plant/edge-1",
        EventKind.BIRTH,
        255,
        SessionOrder.SERIAL8,
        T,
    )
    death = event(s, msg("spBv1.0/plant/NDEATH/edge-1", encode_payload(255, T + 1)))
    assert (death.kind, death.session) == (EventKind.WILL, 255)
    assert dead(s, msg("spBv1.0/plant/NBIRTH/edge-1", b"\x0a\xff")).reason == "bad_payload"
    assert subscriptions(build(s)) == [
        "spBv1.0/+/NBIRTH/+",
        "spBv1.0/+/NDEATH/+",
        "spBv1.0/+/NDATA/+",
        "spBv1.0/+/DBIRTH/+/+",
        "spBv1.0/+/DDEATH/+/+",
        "spBv1.0/+/DDATA/+/+",
    ]


def test_sparkplug_devices_behind_a_node_are_devices_of_their_own() -> None:
    # Sparkplug 3.0 topic namespace: spBv1.0/<group_id>/<message_type>/<edge_node_id>/<device_id>
    # for DBIRTH, DDEATH, DDATA; device messages carry no bdSeq.
    s = SparkplugProfileSettings()
    birth = event(s, msg("spBv1.0/plant/DBIRTH/edge-1/pump-3", encode_device_payload(T, seq=1)))
    assert (birth.device, birth.kind, birth.session, birth.event_time) == (
        "plant/edge-1/pump-3",
        EventKind.BIRTH,
        None,
        T,
    )
    death = event(s, msg("spBv1.0/plant/DDEATH/edge-1/pump-3", encode_device_payload(T + 5)))
    assert (death.device, death.kind) == ("plant/edge-1/pump-3", EventKind.WILL)
    data = event(s, msg("spBv1.0/plant/DDATA/edge-1/pump-3", encode_device_payload(T + 9)))
    assert data.kind is EventKind.ACTIVITY
    # a node message type on a device topic, and a device type on a node topic, are refused
    assert dead(s, msg("spBv1.0/plant/NBIRTH/edge-1/pump-3", b"")).reason == "unknown_topic"
    assert dead(s, msg("spBv1.0/plant/DBIRTH/edge-1", b"")).reason == "unknown_topic"
    assert dead(s, msg("spBv1.0/plant/NCMD/edge-1", b"")).reason == "unknown_topic"


# --- the translator -------------------------------------------------------------------------------


def test_oversize_and_unknown_topics_are_dead_letters() -> None:
    t = Translator([build(JsonProfileSettings())], max_payload_bytes=64)
    big = t.translate(msg("devices/d/status", "x" * 65))
    assert isinstance(big, DeadLetterRecord)
    assert big.reason == "oversize"
    stray = t.translate(msg("elsewhere/d", '{"status":"online"}'))
    assert isinstance(stray, DeadLetterRecord)
    assert stray.reason == "unknown_topic"


def test_first_matching_profile_wins() -> None:
    t = Translator(
        [
            build(PlainProfileSettings(topic="a/{device}")),
            build(JsonProfileSettings(topic="+/{device}")),
        ]
    )
    assert isinstance(t.translate(msg("a/d", "online")), ConnectionEvent)
    assert isinstance(t.translate(msg("b/d", '{"status":"online"}')), ConnectionEvent)
