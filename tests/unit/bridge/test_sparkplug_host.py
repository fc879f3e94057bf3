"""The bridge as a Sparkplug B host: a node's death takes its devices offline, a new NBIRTH needs
fresh DBIRTHs, and a node never seen born is asked to rebirth, at most once per interval.

Sparkplug 3.0, tck-id-operational-behavior-edge-node-termination-host-action-ndeath-devices-offline:
"Immediately after receiving an NDEATH from an Edge Node, Host Applications MUST mark all Sparkplug
Devices associated with the Edge Node as offline using the current Host Application's system UTC
time". The NDEATH counts only when its bdSeq is the current NBIRTH's (the spec's bdSeq rule).
Rebirth: an NCMD with the boolean metric `Node Control/Rebirth` = true.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.bridge.message import Invalid, MqttMessage
from mqtt_presence.bridge.profiles.sparkplug import (
    REBIRTH_METRIC,
    Payload,
    SparkplugProfile,
    SparkplugProfileSettings,
    encode_device_payload,
    encode_payload,
    rebirth_payload,
)
from mqtt_presence.bridge.sparkplug_host import Answer, SparkplugHost
from mqtt_presence.core import ConnectionEvent, EventKind

PROFILE = SparkplugProfile(SparkplugProfileSettings())


def feed(host: SparkplugHost, topic: str, payload: bytes, at: int) -> Answer:
    msg = MqttMessage(topic, payload, at)
    parts = PROFILE.parts(topic)
    assert parts is not None
    captures = PROFILE.pattern.match(topic)
    assert captures is not None
    event = PROFILE.translate(msg, captures)
    return host.observe(event, parts, PROFILE.node_id(parts))


def nbirth(host: SparkplugHost, bdseq: int, at: int, node: str = "edge-1") -> Answer:
    return feed(host, f"spBv1.0/plant/NBIRTH/{node}", encode_payload(bdseq, at, seq=0), at)


def ndeath(host: SparkplugHost, bdseq: int, at: int, node: str = "edge-1") -> Answer:
    return feed(host, f"spBv1.0/plant/NDEATH/{node}", encode_payload(bdseq, at), at)


def dbirth(host: SparkplugHost, device: str, at: int, node: str = "edge-1") -> Answer:
    return feed(host, f"spBv1.0/plant/DBIRTH/{node}/{device}", encode_device_payload(at), at)


def wills(answer: Answer) -> list[tuple[str, str | None]]:
    return [(e.device, e.reason) for e in answer.events[1:] if e.kind is EventKind.WILL]


def test_a_nodes_death_is_a_will_for_each_of_its_devices() -> None:
    host = SparkplugHost()
    nbirth(host, 7, 1_000)
    dbirth(host, "pump-1", 1_001)
    dbirth(host, "pump-2", 1_002)
    nbirth(host, 3, 1_003, node="edge-2")
    dbirth(host, "fan", 1_004, node="edge-2")
    answer = ndeath(host, 7, 5_000)
    assert answer.events[0].kind is EventKind.WILL  # the node's own
    assert answer.events[0].device == "plant/edge-1"
    assert wills(answer) == [
        ("plant/edge-1/pump-1", "node_death"),
        ("plant/edge-1/pump-2", "node_death"),
    ]  # edge-2's fan is not edge-1's
    assert all(e.received_at == 5_000 for e in answer.events)  # the host's time of the death


def test_a_stale_ndeath_of_an_older_bdseq_takes_no_device_offline() -> None:
    # The broker publishes the old connection's will after the node came back (the first field
    # report, for Sparkplug): NDEATH bdSeq 7 after NBIRTH bdSeq 8.
    host = SparkplugHost()
    nbirth(host, 7, 1_000)
    dbirth(host, "pump-1", 1_001)
    nbirth(host, 8, 2_000)
    dbirth(host, "pump-1", 2_001)
    assert wills(ndeath(host, 7, 3_000)) == []


def test_a_new_nbirth_ends_the_devices_of_the_previous_session() -> None:
    # Devices must be born again in the new session; one that is not stays offline.
    host = SparkplugHost()
    nbirth(host, 1, 1_000)
    dbirth(host, "pump-1", 1_001)
    dbirth(host, "pump-2", 1_002)
    answer = nbirth(host, 2, 9_000)
    assert wills(answer) == [
        ("plant/edge-1/pump-1", "node_rebirth"),
        ("plant/edge-1/pump-2", "node_rebirth"),
    ]
    dbirth(host, "pump-1", 9_001)
    assert wills(ndeath(host, 2, 20_000)) == [("plant/edge-1/pump-1", "node_death")]


def test_a_ddeath_removes_the_device_from_the_nodes_session() -> None:
    host = SparkplugHost()
    nbirth(host, 1, 1_000)
    dbirth(host, "pump-1", 1_001)
    feed(host, "spBv1.0/plant/DDEATH/edge-1/pump-1", encode_device_payload(1_500), 1_500)
    assert wills(ndeath(host, 1, 2_000)) == []


def test_a_node_never_seen_born_is_asked_to_rebirth_at_most_once_per_interval() -> None:
    host = SparkplugHost(rebirth_interval_ms=30_000)
    data = encode_device_payload(1_000)
    first = feed(host, "spBv1.0/plant/DDATA/edge-9/pump", data, 1_000)
    assert first.rebirth is not None
    assert PROFILE.command_topic(first.rebirth) == "spBv1.0/plant/NCMD/edge-9"
    assert feed(host, "spBv1.0/plant/NDATA/edge-9", data, 20_000).rebirth is None
    assert feed(host, "spBv1.0/plant/NDATA/edge-9", data, 31_000).rebirth is not None
    nbirth(host, 4, 32_000, node="edge-9")
    assert feed(host, "spBv1.0/plant/NDATA/edge-9", data, 33_000).rebirth is None  # born now


def test_an_ndeath_of_a_node_never_seen_born_asks_nothing() -> None:
    host = SparkplugHost()
    answer = ndeath(host, 5, 1_000)
    assert (answer.rebirth, len(answer.events)) == (None, 1)  # it is dead: nothing to ask


def test_the_rebirth_request_is_the_node_control_metric() -> None:
    payload = Payload()
    payload.ParseFromString(rebirth_payload(1_700_000_000_000))
    (metric,) = payload.metrics
    assert (metric.name, metric.datatype, metric.boolean_value) == (REBIRTH_METRIC, 11, True)
    assert payload.timestamp == 1_700_000_000_000


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "DDATA", "NDATA"]),
            st.integers(0, 3),  # bdSeq
            st.sampled_from(["a", "b", "c"]),  # device
        ),
        max_size=40,
    )
)
def test_every_device_will_is_for_a_device_born_in_the_session_that_ended(
    steps: list[tuple[str, int, str]],
) -> None:
    host = SparkplugHost()
    born: set[str] = set()  # devices born in the node's current session, by our own account
    current: int | None = None
    for at, (kind, bdseq, device) in enumerate(steps, start=1):
        node_topic = f"spBv1.0/plant/{kind}/edge-1"
        if kind in ("NBIRTH", "NDEATH"):
            answer = feed(host, node_topic, encode_payload(bdseq, at), at)
        else:
            topic = node_topic + (f"/{device}" if kind.startswith("D") else "")
            answer = feed(host, topic, encode_device_payload(at), at)
        ended = {d for d, _ in wills(answer)}
        if kind == "NBIRTH":
            assert ended == born
            born, current = set(), bdseq
        elif kind == "NDEATH":
            assert ended == (born if bdseq == current else set())
            if bdseq == current:
                born, current = set(), None
        else:
            assert ended == set()
            if current is not None and kind == "DBIRTH":
                born.add(f"plant/edge-1/{device}")
            if current is not None and kind == "DDEATH":
                born.discard(f"plant/edge-1/{device}")
        assert all(isinstance(e, ConnectionEvent) for e in answer.events)


# As an adversary: any message type, odd node and device names, and payloads built, cut or random,
# in any order. The host never fails, and a will it adds is only ever for a device behind the very
# node that died or was reborn.
LEVEL = st.text(st.characters(blacklist_characters="/+#\x00"), min_size=1, max_size=12)
TYPES = ["NBIRTH", "NDEATH", "NDATA", "DBIRTH", "DDEATH", "DDATA", "NCMD", "STATE"]


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["node", "device", "random"]))
    if kind == "node":
        data = encode_payload(draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1)))
    elif kind == "device":
        data = encode_device_payload(draw(st.integers(0, 2**64 - 1)))
    else:
        return draw(st.binary(max_size=60))
    return data[: draw(st.integers(0, len(data)))]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(TYPES),
            st.sampled_from(["edge-1", "edge-2"]) | LEVEL,
            st.none() | LEVEL,
            payloads(),
        ),
        max_size=30,
    )
)
def test_no_message_sequence_breaks_the_host(
    steps: list[tuple[str, str, str | None, bytes]],
) -> None:
    host = SparkplugHost()
    for at, (kind, node, device, payload) in enumerate(steps, start=1):
        topic = f"spBv1.0/plant/{kind}/{node}" + (f"/{device}" if device else "")
        parts = PROFILE.parts(topic)
        captures = PROFILE.pattern.match(topic)
        if parts is None or captures is None:
            continue
        try:
            event = PROFILE.translate(MqttMessage(topic, payload, at), captures)
        except Invalid:
            continue  # a dead letter with its reason
        node_id = PROFILE.node_id(parts)
        answer = host.observe(event, parts, node_id)
        assert answer.events[0] is event
        for will in answer.events[1:]:
            assert will.kind is EventKind.WILL
            assert will.device.startswith(node_id + "/")
            assert will.reason in ("node_death", "node_rebirth")
            assert will.received_at == at
