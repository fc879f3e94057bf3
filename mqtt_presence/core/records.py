"""The wire contract: one record type per topic, and its JSON Schema.

The schemas are generated from the msgspec types (so they cannot drift from the code), written to
`schemas/<topic>.v<version>.json` beside this module (so consumers can read them without
Python), and a test fails when the files and the code disagree. A change that breaks consumers
bumps the record's `schema_version` and adds a new file next to the old one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import msgspec

from mqtt_presence.core import ConnectionEvent, StatusChange
from mqtt_presence.core.events import RAW_SCHEMA_VERSION, STATUS_SCHEMA_VERSION

SCHEMA_DIR = Path(__file__).parent / "schemas"
DLQ_SCHEMA_VERSION = 1

_encode = msgspec.json.Encoder().encode
_decode_raw = msgspec.json.Decoder(ConnectionEvent).decode


def check_raw(event: ConnectionEvent) -> ConnectionEvent:
    """`event`, if a consumer of `presence.raw` can read it back; else `msgspec.ValidationError`
    saying which value is out of range (the bounds are the record type's, checked on decode)."""
    try:
        _decode_raw(_encode(event))
    except OverflowError as exc:  # an integer beyond what JSON encoders write
        raise msgspec.ValidationError(f"an integer is out of range: {exc}") from exc
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from the JSON escape "\ud800"
        raise msgspec.ValidationError(f"a string is not writable as UTF-8: {exc}") from exc
    return event


PROGRESS_HEADER = "presence-progress"  # the Kafka header that marks a BridgeProgress record
BRIDGE_HEADER = "presence-bridge"  # the client id of the bridge that wrote a raw record


class BridgeProgress(msgspec.Struct, frozen=True, kw_only=True):
    """A bridge's progress, written to every partition of `presence.raw` (empty key, the header
    `presence-progress` set to the bridge's client id): every message the MQTT broker handed to
    this bridge before `watermark` (ms since the epoch) is in the partition before this record.
    A consumer of device events skips these records (`is_progress`); the worker times offline
    graces by them (a grace ends when every bridge has passed its deadline)."""

    bridge: str
    watermark: int


def header(headers: Any, name: str) -> bytes | None:
    """A Kafka header's value (headers as a list of pairs, or a mapping), or None."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, dict) else headers
    return next((value for key, value in pairs if key == name), None)


def is_progress(headers: Any) -> bool:
    """Whether a record's Kafka headers mark a BridgeProgress record."""
    return header(headers, PROGRESS_HEADER) is not None


class DeadLetterRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A message that could not be turned into a raw event or processed, with the reason and the
    original bytes. Record on `presence.dlq`."""

    reason: str  # machine-readable: bad_payload, unknown_topic, oversize, device_mismatch, ...
    detail: str  # for a person: what exactly was wrong
    topic: Annotated[
        str,
        msgspec.Meta(
            description="where the bytes came from: the MQTT topic, or for source worker the "
            "Kafka topic the worker read them from"
        ),
    ]
    payload_base64: str  # the original bytes, untouched
    received_at: int
    retain: bool = False
    dup: bool = False
    user_properties: dict[str, str] = {}
    source: Annotated[
        str,
        msgspec.Meta(
            description="who refused it: the bridge's profile that read it (json, sparkplug, "
            "...), bridge (before any profile: oversize, unknown topic, poison) or worker"
        ),
    ] = "bridge"
    schema_version: int = DLQ_SCHEMA_VERSION


RECORDS: dict[str, tuple[type[msgspec.Struct], int, str]] = {
    "presence.raw": (
        ConnectionEvent,
        RAW_SCHEMA_VERSION,
        "One raw lifecycle message of one device, as the bridge read it. "
        "Key: the device id (UTF-8 bytes).",
    ),
    "presence.status": (
        StatusChange,
        STATUS_SCHEMA_VERSION,
        "One clean status change of one device. Key: the device id (UTF-8 "
        "bytes); the topic is compacted, so the last record per key is the "
        "device's current status. Upsert only when `version` is greater than "
        "the one you have.",
    ),
    "presence.dlq": (
        DeadLetterRecord,
        DLQ_SCHEMA_VERSION,
        "A message the bridge could not turn into a raw event (key: the MQTT topic), "
        "or a raw record a worker could not process (source worker; key: the raw "
        "record's key, the device id, so it stays in the device's partition), with "
        "the reason and the original bytes.",
    ),
}


def schema_of(topic: str) -> dict[str, Any]:
    record, version, description = RECORDS[topic]
    schema: dict[str, Any] = msgspec.json.schema(record)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"mqtt-presence/{topic}.v{version}.json",
        "title": topic,
        "description": description,
        **schema,
    }


def schema_path(topic: str) -> Path:
    return SCHEMA_DIR / f"{topic}.v{RECORDS[topic][1]}.json"


def write_schemas() -> list[Path]:
    """Regenerate the schema files (run after changing a record type)."""
    paths = []
    for topic in RECORDS:
        path = schema_path(topic)
        path.write_text(json.dumps(schema_of(topic), indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_schemas():
        print(written)
