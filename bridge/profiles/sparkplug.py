"""Sparkplug B edge nodes: NBIRTH / NDEATH (and NDATA as a sign of life), protobuf payloads.

The session token is the `bdSeq` metric, an 8-bit counter that wraps (compared with RFC 1982
serial arithmetic); Sparkplug's own rule is ours: a death counts only if its bdSeq matches the
birth's. The payload schema is the Eclipse Tahu `Payload` message, built here with the protobuf
runtime (no generated code to keep in step): only the fields we read are declared, the rest are
kept as unknown fields by the parser.
"""

from __future__ import annotations

from typing import Any, Literal

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from mqtt_presence.bridge.message import Invalid, MqttMessage
from mqtt_presence.bridge.profiles.base import ProfileSettingsBase, check_device, event_of
from mqtt_presence.bridge.topics import TopicPattern
from mqtt_presence.core import ConnectionEvent, EventKind, SessionOrder

_F = descriptor_pb2.FieldDescriptorProto
EVENTS = {"NBIRTH": EventKind.BIRTH, "NDEATH": EventKind.WILL, "NDATA": EventKind.ACTIVITY}


def _payload_class() -> Any:
    """The Sparkplug B `Payload` message class (the subset of fields we use)."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="mqtt_presence_sparkplug_b.proto", package="org.eclipse.tahu.protobuf", syntax="proto2"
    )
    payload = fdp.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    opt = _F.LABEL_OPTIONAL
    for name, number, ftype in (
        ("name", 1, _F.TYPE_STRING),
        ("alias", 2, _F.TYPE_UINT64),
        ("timestamp", 3, _F.TYPE_UINT64),
        ("datatype", 4, _F.TYPE_UINT32),
        ("int_value", 10, _F.TYPE_UINT32),
        ("long_value", 11, _F.TYPE_UINT64),
    ):
        metric.field.add(name=name, number=number, type=ftype, label=opt)
    payload.field.add(name="timestamp", number=1, type=_F.TYPE_UINT64, label=opt)
    payload.field.add(
        name="metrics",
        number=2,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_REPEATED,
        type_name=".org.eclipse.tahu.protobuf.Payload.Metric",
    )
    payload.field.add(name="seq", number=3, type=_F.TYPE_UINT64, label=opt)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload")
    )


Payload = _payload_class()


class SparkplugProfileSettings(ProfileSettingsBase):
    kind: Literal["sparkplug"] = "sparkplug"
    topic: str = "spBv1.0/{group}/{event}/{device}"
    device_includes_group: bool = True  # device id "<group>/<edge node>"


class SparkplugProfile:
    def __init__(self, settings: SparkplugProfileSettings) -> None:
        self.settings = settings
        self.name = "sparkplug"
        self.pattern = TopicPattern(settings.topic)

    @property
    def subscriptions(self) -> list[str]:
        base = self.pattern.pattern
        return [TopicPattern(base.replace("{event}", e)).subscription for e in EVENTS]

    def translate(self, msg: MqttMessage, captures: dict[str, str]) -> ConnectionEvent:
        node = check_device(captures["device"])
        event = captures.get("event", "")
        kind = EVENTS.get(event)
        if kind is None:
            raise Invalid(
                "unknown_topic", f"Sparkplug message type {event!r} is not one of {sorted(EVENTS)}"
            )
        group = captures.get("group", "")
        device = f"{group}/{node}" if self.settings.device_includes_group and group else node
        payload = Payload()
        try:
            payload.ParseFromString(msg.payload)
        except DecodeError as exc:
            raise Invalid("bad_payload", f"not a Sparkplug B protobuf payload: {exc}") from exc
        bdseq = next((m for m in payload.metrics if m.name == "bdSeq"), None)
        token: int | None = None
        if bdseq is not None:
            token = bdseq.long_value if bdseq.HasField("long_value") else bdseq.int_value
        elif kind is not EventKind.ACTIVITY:
            raise Invalid("bad_payload", f"{event} without a bdSeq metric")
        return event_of(
            msg,
            self.name,
            device,
            kind,
            session=token,
            session_order=SessionOrder.SERIAL8,
            event_time=payload.timestamp if payload.HasField("timestamp") else None,
        )


def encode_payload(bdseq: int, timestamp: int, seq: int | None = None) -> bytes:
    """An NBIRTH/NDEATH payload with a bdSeq metric (for the device helper and the tests)."""
    payload = Payload(timestamp=timestamp)
    if seq is not None:
        payload.seq = seq
    payload.metrics.add(name="bdSeq", datatype=8, long_value=bdseq)  # 8 = Int64 in Sparkplug
    data: bytes = payload.SerializeToString()
    return data
