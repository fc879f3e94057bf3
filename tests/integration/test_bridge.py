"""The bridge against the real stack: every profile, bad input, broker-side errors, health."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import msgspec
import paho.mqtt.client as mqtt
import pytest

from mqtt_presence.bridge.app import Bridge
from mqtt_presence.bridge.errors import (
    BrokerRefusedError,
    SubscriptionDeniedError,
)
from mqtt_presence.bridge.profiles.sparkplug import encode_payload
from mqtt_presence.core import ConnectionEvent, EventKind, SessionOrder
from mqtt_presence.core.records import DeadLetterRecord, schema_path
from mqtt_presence.stack import StackInfo, mosquitto
from mqtt_presence.stack.ports import free_port, is_listening
from mqtt_presence.stack.processes import stop_pid

from .helpers import (
    Publisher,
    bridge_settings,
    read_topic,
    running_bridge,
    topic_prefix,
    unique,
    wait_for,
)


def events_of(records: list) -> list[ConnectionEvent]:  # type: ignore[type-arg]
    return [msgspec.json.decode(r.value, type=ConnectionEvent) for r in records]


def test_every_profile_end_to_end(stack: StackInfo) -> None:
    tag = unique("p")
    profiles = [
        {"kind": "json", "topic": f"{tag}/json/{{device}}/status"},
        {"kind": "plain", "topic": f"{tag}/plain/{{device}}/availability"},
        {"kind": "homie", "topic": f"{tag}/homie/{{device}}/$state"},
        # Mosquitto does not let clients publish to $SYS: the same payloads on another prefix.
        {"kind": "emqx", "topic": f"{tag}/emqx/brokers/{{node}}/clients/{{device}}/{{event}}"},
        {"kind": "sparkplug", "topic": f"{tag}/spBv1.0/{{group}}/{{event}}/{{device}}"},
    ]
    settings = bridge_settings(stack, profiles=profiles)
    with running_bridge(settings):
        pub = Publisher(stack)
        pub.publish(f"{tag}/json/cam/status", '{"status":"online","session":3,"ts":5}')
        pub.publish(f"{tag}/plain/lamp/availability", "offline")
        pub.publish(f"{tag}/homie/thermo/$state", "lost")
        pub.publish(
            f"{tag}/emqx/brokers/n1/clients/gw/connected",
            json.dumps(
                {"clientid": "gw", "connected_at": 1_700_000_000_000, "ts": 1_700_000_000_001}
            ),
        )
        pub.publish(f"{tag}/spBv1.0/plant/NDEATH/edge", encode_payload(7, 2000))
        pub.close()
        got = {e.source: e for e in events_of(read_topic(stack, settings.kafka.raw_topic, 5))}
    assert (got["json"].device, got["json"].kind, got["json"].session) == (
        "cam",
        EventKind.BIRTH,
        3,
    )
    assert (got["plain"].device, got["plain"].kind) == ("lamp", EventKind.WILL)
    assert (got["homie"].device, got["homie"].kind) == ("thermo", EventKind.WILL)
    assert (got["emqx"].kind, got["emqx"].session, got["emqx"].session_order) == (
        EventKind.CONNECTED,
        1_700_000_000_000,
        SessionOrder.TIMESTAMP,
    )
    assert (got["sparkplug"].device, got["sparkplug"].session) == ("plant/edge", 7)


SAMPLES = Path(__file__).parents[1] / "unit" / "bridge" / "samples"


def test_the_documented_device_conventions_end_to_end_with_their_default_topics(
    stack: StackInfo,
) -> None:
    # Each project's documented birth and will (tests/unit/bridge/samples/), published by a real
    # client through Mosquitto to a bridge configured with nothing but each profile's kind.
    specs = [tomllib.loads(path.read_text()) for path in sorted(SAMPLES.glob("*.toml"))]
    specs = [spec for spec in specs if spec["kind"] != "emqx"]  # $SYS: above, on a prefix
    # the first matching profile translates: telemetry (tele/{device}/#) after Tasmota's LWT
    specs.sort(key=lambda spec: spec["kind"] == "activity")
    tag = unique("conv")
    settings = bridge_settings(stack, profiles=[{"kind": spec["kind"]} for spec in specs])
    expected = {}
    with running_bridge(settings) as bridge:
        pub = Publisher(stack)
        sent = 0
        for spec in specs:
            for sample in spec["samples"]:
                if "reason" in sample:
                    continue
                if spec["kind"] == "sparkplug":  # the id is <group>/<node>[/<device>]: a node
                    node = f"edge-1-{tag}"  # of this run's, whatever else runs
                    device = sample["device"].replace("edge-1", node)
                    topic = sample["topic"].replace("/edge-1", f"/{node}")
                    payload = bytes.fromhex(sample["payload_hex"])
                else:
                    device = f"{sample['device']}-{tag}"  # this run's devices
                    topic = sample["topic"].replace(sample["device"], device)
                    payload = sample["payload"].encode()
                pub.publish(topic, payload)
                expected[device, sample["event"]] = spec["kind"]
                sent += 1
        pub.close()
        wait_for(lambda: bridge.metrics.acknowledged._value.get() >= sent, 30, "every ack")
        records = read_topic(stack, settings.kafka.raw_topic, 10**9, timeout=3)
    got = {(e.device, e.kind.value): e.source for e in events_of(records) if tag in e.device}
    assert got == expected


def test_bad_input_goes_to_the_dead_letter_topic_and_the_bridge_goes_on(stack: StackInfo) -> None:
    settings = bridge_settings(stack, max_payload_bytes=256)
    prefix = topic_prefix(settings)
    with running_bridge(settings) as bridge:
        pub = Publisher(stack)
        pub.publish(f"{prefix}/d1/status", b"\x00\x01 not json")
        pub.publish(f"{prefix}/d2/status", "x" * 300)
        pub.publish(f"{prefix}/d3/status", '{"status":"online","device":"impostor"}')
        pub.publish(f"{prefix}/d4/status", '{"status":"online","session":1}')
        pub.close()
        dlq_records = read_topic(stack, settings.kafka.dlq_topic, 3)
        raw_records = read_topic(stack, settings.kafka.raw_topic, 1)
        letters = [msgspec.json.decode(r.value, type=DeadLetterRecord) for r in dlq_records]
        good = events_of(raw_records)
        wait_for(lambda: bridge.metrics.acknowledged._value.get() >= 4, 10, "all four acked")
        counted = {
            s.labels["reason"]: s.value
            for m in bridge.metrics.dead_letters.collect()
            for s in m.samples
            if s.name.endswith("_total")
        }
    # Real records, checked against the published contract.
    for topic, values in (
        ("presence.dlq", [r.value for r in dlq_records]),
        ("presence.raw", [r.value for r in raw_records]),
    ):
        schema = jsonschema.Draft202012Validator(json.loads(schema_path(topic).read_text()))
        for value in values:
            schema.validate(json.loads(value))
    by_reason = {letter.reason: letter for letter in letters}
    assert set(by_reason) == {"bad_payload", "oversize", "device_mismatch"}
    assert base64.b64decode(by_reason["bad_payload"].payload_base64) == b"\x00\x01 not json"
    assert by_reason["oversize"].topic == f"{prefix}/d2/status"
    assert counted == {"bad_payload": 1.0, "oversize": 1.0, "device_mismatch": 1.0}
    assert [e.device for e in good] == ["d4"]


def test_user_properties_and_the_retain_flag_reach_the_event_and_kafka_headers(
    stack: StackInfo,
) -> None:
    settings = bridge_settings(stack)
    prefix = topic_prefix(settings)
    pub = Publisher(stack)
    # Retained before the bridge subscribes: delivered to it with the retain flag set.
    pub.publish(
        f"{prefix}/cam/status",
        '{"status":"online"}',
        retain=True,
        user_properties={"session": "boot-9", "fw": "1.2"},
    )
    try:
        with running_bridge(settings):
            (record,) = read_topic(stack, settings.kafka.raw_topic, 1)
    finally:
        pub.publish(f"{prefix}/cam/status", b"", retain=True)  # clear the retained message
        pub.close()
    event = msgspec.json.decode(record.value, type=ConnectionEvent)
    assert event.retain is True
    assert (event.session, event.properties) == ("boot-9", {"session": "boot-9", "fw": "1.2"})
    headers = dict(record.headers)
    assert headers["mqtt.retain"] == b"1"
    assert headers["mqtt.user.fw"] == b"1.2"


def test_health_and_metrics_endpoints(stack: StackInfo) -> None:
    settings = bridge_settings(stack, http_port=0)
    with running_bridge(settings) as bridge:
        base = f"http://127.0.0.1:{bridge.http_port}"
        with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
            assert resp.status == 200
            assert json.loads(resp.read()) == {"healthy": True, "mqtt": True, "kafka": True}
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    assert 'presence_bridge_connected{broker="mqtt"} 1.0' in text
    assert "presence_bridge_messages_received_total" in text


def dynsec_mosquitto(tmp_path: Path, plugin: Path) -> Iterator[int]:
    """A Mosquitto with the dynamic-security plugin configured by tmp_path/dynsec.json; its port."""
    port = free_port()
    extra = f"plugin {plugin}\nplugin_opt_config_file {tmp_path / 'dynsec.json'}"
    config = mosquitto.prepare(tmp_path, port, extra)
    proc = mosquitto.start(mosquitto.ensure_installed(), tmp_path, config)
    try:
        mosquitto.wait_ready(port, lambda: proc.poll() is None, tmp_path / "mosquitto.log")
        yield port
    finally:
        stop_pid(proc.pid, "mosquitto")


@pytest.fixture
def denying_mosquitto(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto whose dynamic-security plugin refuses every subscription by default."""
    plugin = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
    assert plugin.exists(), "Debian's mosquitto package ships the dynamic-security plugin"
    (tmp_path / "dynsec.json").write_text(
        json.dumps(
            {
                "defaultACLAccess": {
                    "publishClientSend": True,
                    "publishClientReceive": True,
                    "subscribe": False,
                    "unsubscribe": True,
                },
                "clients": [],
                "groups": [],
                "roles": [],
            }
        )
    )
    yield from dynsec_mosquitto(tmp_path, plugin)


def test_a_denied_subscription_stops_the_bridge_naming_the_filter(
    stack: StackInfo, denying_mosquitto: int
) -> None:
    settings = bridge_settings(stack, mqtt_url=f"mqtt://127.0.0.1:{denying_mosquitto}")
    with pytest.raises(SubscriptionDeniedError) as caught:
        Bridge(settings).run()
    message = str(caught.value)
    assert f"{topic_prefix(settings)}/+/status" in message
    assert "Not authorized (0x87)" in message


@pytest.fixture
def probe_denying_mosquitto(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto whose dynamic-security plugin lets anonymous clients subscribe to anything
    but the bridges' progress probe topic (as an ACL written before the probes would)."""
    plugin = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
    (tmp_path / "dynsec.json").write_text(
        json.dumps(
            {
                "defaultACLAccess": {
                    "publishClientSend": True,
                    "publishClientReceive": True,
                    "subscribe": True,
                    "unsubscribe": True,
                },
                "clients": [],
                "groups": [{"groupname": "anonymous", "roles": [{"rolename": "no-probe"}]}],
                "roles": [
                    {
                        "rolename": "no-probe",
                        "acls": [
                            {
                                "acltype": "subscribePattern",
                                "topic": "mqtt-presence/probe/#",
                                "allow": False,
                            }
                        ],
                    }
                ],
                "anonymousGroup": "anonymous",
            }
        )
    )
    yield from dynsec_mosquitto(tmp_path, plugin)


def test_a_refused_probe_subscription_is_said_and_the_bridge_goes_on(
    stack: StackInfo, probe_denying_mosquitto: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The progress probe is the bridge's own business: a broker that refuses its topic (an
    ACL that predates it) gets one warning, and device messages still flow."""
    settings = bridge_settings(
        stack, mqtt_url=f"mqtt://127.0.0.1:{probe_denying_mosquitto}", progress_interval_s=1.0
    )
    prefix = topic_prefix(settings)
    with caplog.at_level(logging.WARNING, logger="presence.bridge"), running_bridge(settings):
        device = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        device.connect("127.0.0.1", probe_denying_mosquitto)
        device.loop_start()
        sent = device.publish(
            f"{prefix}/cam-1/status", json.dumps({"status": "online", "session": 1}), qos=1
        )
        sent.wait_for_publish(10)
        device.disconnect()
        device.loop_stop()
        (record,) = read_topic(stack, settings.kafka.raw_topic, 1, timeout=10)
    assert record.key == b"cam-1"
    refused = [r.getMessage() for r in caplog.records if "mqtt-presence/probe/" in r.getMessage()]
    assert refused, caplog.text
    assert "cannot measure its lag" in refused[0]


def test_shared_subscription_splits_the_load_between_two_bridges(stack: StackInfo) -> None:
    group = unique("group")
    first = bridge_settings(stack, shared_group=group)
    prefix = topic_prefix(first)
    second = bridge_settings(
        stack,
        shared_group=group,
        raw_topic=first.kafka.raw_topic,
        dlq_topic=first.kafka.dlq_topic,
        profiles=first.profiles,
    )
    with running_bridge(first) as a, running_bridge(second) as b:
        pub = Publisher(stack)
        for i in range(200):
            pub.publish(f"{prefix}/d{i}/status", json.dumps({"status": "online", "session": i}))
        pub.close()
        records = read_topic(stack, first.kafka.raw_topic, 200)
        received = (a.metrics.received._value.get(), b.metrics.received._value.get())
    sessions = sorted(
        msgspec.json.decode(r.value, type=ConnectionEvent).session  # type: ignore[type-var]
        for r in records
    )
    assert sessions == list(range(200))
    assert sum(received) == 200
    assert min(received) > 0, f"one bridge got nothing: {received}"


@pytest.fixture
def password_mosquitto(tmp_path: Path) -> Iterator[int]:
    """A Mosquitto that only lets `bridge` / `right-password` in."""
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "bridge", "right-password"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    config = mosquitto.prepare(tmp_path, port, f"password_file {passwd}")
    config.write_text(config.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    proc = mosquitto.start(mosquitto.ensure_installed(), tmp_path, config)
    try:
        wait_for(lambda: proc.poll() is not None or _listening(port), 10, "mosquitto to listen")
        yield port
    finally:
        stop_pid(proc.pid, "mosquitto")


def _listening(port: int) -> bool:
    return is_listening(port)


def test_bad_credentials_stop_the_bridge_with_a_clear_error(
    stack: StackInfo, password_mosquitto: int
) -> None:
    url = f"mqtt://127.0.0.1:{password_mosquitto}"
    wrong = bridge_settings(stack, mqtt_url=url, username="bridge", password="wrong")
    with pytest.raises(BrokerRefusedError, match="check username, password"):
        Bridge(wrong).run()
    right = bridge_settings(stack, mqtt_url=url, username="bridge", password="right-password")
    with running_bridge(right) as bridge:
        assert bridge.health()["mqtt"]


def test_credentials_in_the_url_get_in_and_never_reach_the_log(
    stack: StackInfo, password_mosquitto: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"mqtt://bridge:right-password@127.0.0.1:{password_mosquitto}"
    with running_bridge(bridge_settings(stack, mqtt_url=url)) as bridge:
        assert bridge.health()["mqtt"]  # the broker refuses anonymous clients
    assert "connected to MQTT" in caplog.text
    assert "right-password" not in caplog.text
