"""The bridge as a Sparkplug B host application: what the spec asks of a host that no single
message says. Pure: events in, events and rebirth requests out; the bridge does the I/O.

- A node's death takes its devices offline. Sparkplug 3.0, tck-id-operational-behavior-edge-node-
  termination-host-action-ndeath-devices-offline: "Immediately after receiving an NDEATH from an
  Edge Node, Host Applications MUST mark all Sparkplug Devices associated with the Edge Node as
  offline". An NDEATH names only the node, so the host keeps, per node, the bdSeq of its current
  session and the devices born in it (DBIRTH), and answers the NDEATH of that session (not a
  stale one of an older bdSeq: the same rule as the core's) with a will for each device
  (`reason` "node_death").
- A new NBIRTH starts a new session: the devices of the previous one must be born again (DBIRTH
  follows NBIRTH on the node's connection), so each gets a will (`reason` "node_rebirth") ahead
  of its new birth; with the offline grace, a device born again at once never shows offline.
- A node whose NBIRTH this host has not seen (the bridge started after it, or it was lost) is
  asked to be born again: an NCMD `Node Control/Rebirth` (Sparkplug 3.0, 6.4.x "Rebirth
  Request"), at most once per `rebirth_interval_ms` per node.

It needs every message of a node, in order: a shared subscription splits them among bridges, so
the bridge refuses to read Sparkplug through one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from mqtt_presence.core import ConnectionEvent, EventKind

NODE_DEATH = "node_death"
NODE_REBIRTH = "node_rebirth"


@dataclass(frozen=True)
class SparkplugTopic:
    """What a Sparkplug topic names: `spBv1.0/<group>/<type>/<edge node>[/<device>]`."""

    group: str
    message_type: str  # NBIRTH, NDEATH, NDATA, DBIRTH, DDEATH, DDATA
    edge_node: str
    device: str | None  # a device behind the edge node, or None for the node itself


@dataclass
class NodeSession:
    bdseq: int | None  # None: a node heard of but not seen born
    devices: dict[str, None] = field(default_factory=dict)  # device ids born in this session


@dataclass(frozen=True)
class Answer:
    events: list[ConnectionEvent]  # the message's own event first, then any the host adds
    rebirth: SparkplugTopic | None = None  # ask this node to be born again


@dataclass
class SparkplugHost:
    rebirth_interval_ms: int = 30_000
    max_devices_per_node: int = 10_000
    nodes: dict[str, NodeSession] = field(default_factory=dict)  # by the node's device id
    _asked: dict[str, int] = field(default_factory=dict)  # node -> when a rebirth was asked

    def observe(self, event: ConnectionEvent, topic: SparkplugTopic, node_id: str) -> Answer:
        """`event` is the message's raw event; `node_id` the device id of its edge node."""
        kind = topic.message_type
        session = self.nodes.get(node_id)
        if kind == "NBIRTH":
            ended = self._end(session, event, NODE_REBIRTH) if session is not None else []
            self.nodes[node_id] = NodeSession(bdseq=_token(event))
            self._asked.pop(node_id, None)
            return Answer([event, *ended])
        if kind == "NDEATH":
            if session is None or session.bdseq is None or session.bdseq != _token(event):
                return Answer([event])  # a stale death, or of a session we never saw
            self.nodes[node_id] = NodeSession(bdseq=None)
            return Answer([event, *self._end(session, event, NODE_DEATH)])
        if session is None or session.bdseq is None:  # a node not seen born: ask for a birth
            self.nodes.setdefault(node_id, NodeSession(bdseq=None))
            return Answer([event], self._rebirth(node_id, topic, event.received_at))
        if kind == "DBIRTH":
            devices = session.devices
            if event.device not in devices and len(devices) < self.max_devices_per_node:
                devices[event.device] = None
        elif kind == "DDEATH":
            session.devices.pop(event.device, None)
        return Answer([event])

    def _end(
        self, session: NodeSession, cause: ConnectionEvent, reason: str
    ) -> list[ConnectionEvent]:
        """A will for each device of the session that ended with `cause`."""
        return [
            msgspec.structs.replace(
                cause,
                device=device,
                kind=EventKind.WILL,
                session=None,
                event_time=None,
                seq=None,
                reason=reason,
                dup=False,
            )
            for device in session.devices
        ]

    def _rebirth(self, node_id: str, topic: SparkplugTopic, now: int) -> SparkplugTopic | None:
        last = self._asked.get(node_id)
        if last is not None and now - last < self.rebirth_interval_ms:
            return None
        self._asked[node_id] = now
        return topic


def _token(event: ConnectionEvent) -> int | None:
    return event.session if isinstance(event.session, int) else None
