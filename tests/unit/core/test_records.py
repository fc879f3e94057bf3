"""The committed JSON Schemas are the code's, and records the code writes validate against them."""

from __future__ import annotations

import json

import jsonschema
import msgspec
import pytest

from mqtt_presence.bridge.message import MqttMessage, dead_letter
from mqtt_presence.core import PresenceConfig
from mqtt_presence.core.devices import Devices
from mqtt_presence.core.records import RECORDS, schema_of, schema_path
from mqtt_presence.sim.simulator import SCENARIOS, simulate


@pytest.mark.parametrize("topic", sorted(RECORDS))
def test_committed_schema_matches_the_code(topic: str) -> None:
    committed = json.loads(schema_path(topic).read_text())
    assert committed == schema_of(topic), (
        f"{schema_path(topic).name} is stale: run `python -m mqtt_presence.core.records`"
    )


def validator(topic: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(schema_path(topic).read_text()))


def test_raw_and_status_records_validate() -> None:
    sim = simulate(SCENARIOS["reorder"], 40, seed=2)
    raw, status = validator("presence.raw"), validator("presence.status")
    for event in sim.events:
        raw.validate(json.loads(msgspec.json.encode(event)))
    changes = list(Devices(PresenceConfig()).run(sim.events, until=sim.duration_ms))
    assert changes
    for change in changes:
        status.validate(json.loads(msgspec.json.encode(change)))


def test_dead_letters_validate_and_bad_records_do_not() -> None:
    letter = dead_letter(MqttMessage("devices/x/status", b"\xff", 1), "bad_payload", "not JSON")
    validator("presence.dlq").validate(json.loads(msgspec.json.encode(letter)))
    with pytest.raises(jsonschema.ValidationError):
        validator("presence.status").validate({"device": "d", "status": "sideways"})
