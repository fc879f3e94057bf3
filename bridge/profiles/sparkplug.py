"""Sparkplug B edge nodes and their devices, protobuf payloads.

Edge nodes: NBIRTH / NDEATH, NDATA as a sign of life; the session token is the `bdSeq` metric, an
8-bit counter that wraps (compared with RFC 1982 serial arithmetic); Sparkplug's own rule is ours:
a death counts only if its bdSeq matches the birth's. Devices behind a node
(`spBv1.0/<group>/DBIRTH/<node>/<device>`): DBIRTH / DDEATH, DDATA as a sign of life, with the
device id `<group>/<node>/<device>`; they carry no bdSeq (their session is the node's), and what a
node's death means for them is the host's part (`bridge/sparkplug_host.py`).

The payload schema is the Eclipse Tahu `Payload` message, built here with the protobuf runtime (no
generated code to keep in step): only the fields we read or write are declared, the rest are kept
as unknown fields by the parser.
"""

from __future__ import annotations

from typing import Any, Literal

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from mqtt_presence.bridge.message import Invalid, MqttMessage
from mqtt_presence.bridge.profiles.base import ProfileSettingsBase, check_device, event_of
from mqtt_presence.bridge.sparkplug_host import SparkplugTopic
from mqtt_presence.bridge.topics import TopicPattern
from mqtt_presence.core import ConnectionEvent, EventKind, SessionOrder

_F = descriptor_pb2.FieldDescriptorProto
NODE_EVENTS = {"NBIRTH": EventKind.BIRTH, "NDEATH": EventKind.WILL, "NDATA": EventKind.ACTIVITY}
DEVICE_EVENTS = {"DBIRTH": EventKind.BIRTH, "DDEATH": EventKind.WILL, "DDATA": EventKind.ACTIVITY}
EVENTS = {**NODE_EVENTS, **DEVICE_EVENTS}
UINT64, BOOLEAN = 8, 11  # Sparkplug B data types (the Tahu schema's DataType enum)
REBIRTH_METRIC = "Node Control/Rebirth"


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
        ("boolean_value", 14, _F.TYPE_BOOL),
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
    topic: str = "spBv1.0/{group}/{event}/{device}"  # a device's topics: one level more
    device_includes_group: bool = True  # node id "<group>/<edge node>"


class SparkplugProfile:
    def __init__(self, settings: SparkplugProfileSettings) -> None:
        self.settings = settings
        self.name = "sparkplug"
        # `{device}` is the edge node; a device behind it is the level after (one capture of
        # one or two levels, split in `parts`).
        self.node_pattern = TopicPattern(settings.topic)
        self.pattern = TopicPattern(settings.topic.replace("{device}", "{device+}"))

    @property
    def subscriptions(self) -> list[str]:
        base = self.node_pattern.pattern
        return [
            TopicPattern(base.replace("{event}", e)).subscription
            + ("/+" if e in DEVICE_EVENTS else "")
            for e in EVENTS
        ]

    def parts(self, topic: str) -> SparkplugTopic | None:
        """What a Sparkplug topic names, or None when it is not one of this profile's."""
        captures = self.pattern.match(topic)
        if captures is None:
            return None
        node, _, device = captures["device"].partition("/")
        return SparkplugTopic(
            captures.get("group", ""), captures.get("event", ""), node, device or None
        )

    def node_id(self, parts: SparkplugTopic) -> str:
        """The device id the records give the edge node."""
        node = parts.edge_node
        return (
            f"{parts.group}/{node}" if self.settings.device_includes_group and parts.group else node
        )

    def command_topic(self, parts: SparkplugTopic) -> str:
        """The NCMD topic of the node `parts` names (where a rebirth request goes)."""
        return (
            self.node_pattern.pattern.replace("{group}", parts.group)
            .replace("{event}", "NCMD")
            .replace("{device}", parts.edge_node)
        )

    def translate(self, msg: MqttMessage, captures: dict[str, str]) -> ConnectionEvent:
        parts = self.parts(msg.topic)
        if parts is None:  # pragma: no cover - the translator matched this pattern already
            raise Invalid("unknown_topic", "not a Sparkplug topic")
        check_device(parts.edge_node)
        event = parts.message_type
        kinds = DEVICE_EVENTS if parts.device is not None else NODE_EVENTS
        kind = kinds.get(event)
        if kind is None or (parts.device is not None and "/" in parts.device):
            raise Invalid(
                "unknown_topic",
                f"Sparkplug message type {event!r} is not one of {sorted(kinds)} "
                + ("for a device" if parts.device is not None else "for an edge node"),
            )
        device = self.node_id(parts)
        if parts.device is not None:
            device = check_device(f"{device}/{parts.device}")
        payload = Payload()
        try:
            payload.ParseFromString(msg.payload)
        except DecodeError as exc:
            raise Invalid("bad_payload", f"not a Sparkplug B protobuf payload: {exc}") from exc
        bdseq = next((m for m in payload.metrics if m.name == "bdSeq"), None)
        token: int | None = None
        if bdseq is not None and parts.device is None:
            token = bdseq.long_value if bdseq.HasField("long_value") else bdseq.int_value
        elif kind is not EventKind.ACTIVITY and parts.device is None:
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
    payload.metrics.add(name="bdSeq", datatype=UINT64, long_value=bdseq)
    data: bytes = payload.SerializeToString()
    return data


def encode_device_payload(timestamp: int, seq: int | None = None) -> bytes:
    """A DBIRTH/DDEATH/DDATA payload: a timestamp and a sequence number, no bdSeq."""
    payload = Payload(timestamp=timestamp)
    if seq is not None:
        payload.seq = seq
    data: bytes = payload.SerializeToString()
    return data


def rebirth_payload(timestamp: int) -> bytes:
    """An NCMD payload asking an edge node to be born again (`Node Control/Rebirth` = true)."""
    payload = Payload(timestamp=timestamp)
    payload.metrics.add(name=REBIRTH_METRIC, datatype=BOOLEAN, boolean_value=True)
    data: bytes = payload.SerializeToString()
    return data
