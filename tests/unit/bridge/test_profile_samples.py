"""Every profile on the payloads its device project documents: one file per profile in
`samples/`, each sample citing the page that documents its format. Run through the bridge's
whole translation (profile, bounds, encoding), with each profile's default settings, as a
bridge configured with just `kind = "..."` would."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import topic_matches_sub as matches  # the broker-side rule, paho's
from pydantic import TypeAdapter

from mqtt_presence.bridge.message import MqttMessage
from mqtt_presence.bridge.profiles import ProfileSettings, build, subscriptions
from mqtt_presence.bridge.translate import Translator
from mqtt_presence.core import ConnectionEvent
from mqtt_presence.core.events import PROFILE_KINDS
from mqtt_presence.core.records import DeadLetterRecord

SAMPLES = Path(__file__).with_name("samples")
FILES = sorted(SAMPLES.glob("*.toml"))


def load(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def translator(kind: str) -> Translator:
    settings = TypeAdapter(ProfileSettings).validate_python({"kind": kind})
    return Translator([build(settings)], max_payload_bytes=64 * 1024)


def test_every_availability_kind_has_a_sample_file() -> None:
    kinds = {load(f)["kind"] for f in FILES}
    assert {
        "zigbee2mqtt",
        "tasmota",
        "esphome",
        "shelly",
        "homie",
        "emqx",
        "activity",
        "sparkplug",
    } <= kinds


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_documented_payloads_become_the_documented_events(path: Path) -> None:
    spec = load(path)
    assert spec["source"].startswith("https://"), "each file cites its documentation"
    translate = translator(spec["kind"]).translate
    for sample in spec["samples"]:
        assert sample["source"].startswith("https://"), sample
        payload = (
            bytes.fromhex(sample["payload_hex"])
            if "payload_hex" in sample
            else sample["payload"].encode()
        )
        msg = MqttMessage(sample["topic"], payload, 1_700_000_000_000)
        out = translate(msg)
        if "reason" in sample:
            assert isinstance(out, DeadLetterRecord), (sample, out)
            assert out.reason == sample["reason"]
            continue
        assert isinstance(out, ConnectionEvent), (sample, out)
        assert (out.device, out.kind.value) == (sample["device"], sample["event"]), sample
        assert out.source == spec["kind"]
        if "session" in sample:
            assert out.session == sample["session"], sample
        if "reason_field" in sample:
            assert out.reason == sample["reason_field"], sample
        assert out.sleeping == sample.get("sleeping", False), sample


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_the_default_subscriptions_receive_the_lifecycle_topics_and_no_other(path: Path) -> None:
    spec = load(path)
    settings = TypeAdapter(ProfileSettings).validate_python({"kind": spec["kind"]})
    filters = subscriptions(build(settings))
    for sample in spec["samples"]:
        received = any(matches(f, sample["topic"]) for f in filters)
        # a device's other topics (telemetry, the bridge's own state) never reach the bridge
        assert received == (sample.get("reason") != "unknown_topic"), (sample["topic"], filters)


def test_every_profile_kind_is_one_the_core_knows() -> None:
    # device classes match on the profile an event came from: the core lists them
    kinds = {
        TypeAdapter(ProfileSettings).validate_python({"kind": k, "topic": "x/{device}"}).kind
        for k in PROFILE_KINDS
    }
    assert kinds == PROFILE_KINDS
    union = {m.model_fields["kind"].default for m in ProfileSettings.__args__[0].__args__}
    assert union == PROFILE_KINDS
