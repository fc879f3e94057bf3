"""How far behind the broker a bridge is, written into `presence.raw` for the workers.

Why: a device's will and its next birth may reach Kafka through different bridges (a shared
subscription hands each message to one member), or through one bridge with a backlog; the
worker must not end an offline grace while a birth that would have cancelled it still waits in
a bridge's queue at the broker. The broker says nothing about that queue, so the bridge measures
it: every `interval_s` it publishes a probe (QoS 1, its send time as payload, the MQTT 5 user
property `presence-probe`) to a topic of its own that it also subscribes to, through the same
shared group as its device topics: `mqtt-presence/probe/<group>` (`<client id>` without a
group). Devices' topics stay untouched: a probe on them would look like a device to every other
subscriber (on Sparkplug, an NBIRTH). The broker queues the probe for some member behind what
it queued for that member before (a client's session delivers its messages in the order they
were queued: Mosquitto's and EMQX's session queues; MQTT 5.0, 4.6 promises it per topic). A
bridge that receives a probe sent at T has therefore received everything the broker routed to
it before T: its watermark is the newest such T. Every `interval_s` it writes that watermark to
every partition of the raw topic (a `BridgeProgress` record), after the events it received
before it (the producer is idempotent: one partition's records stay in order).

`ProgressProbe` decides what to send when; the bridge's loop does the sending.
"""

from __future__ import annotations

import logging

import msgspec

from mqtt_presence.bridge.message import MqttMessage
from mqtt_presence.core.records import BridgeProgress

log = logging.getLogger("presence.bridge")

PROBE_PROPERTY = "presence-probe"
PROBE_TOPIC = "mqtt-presence/probe/{name}"  # name: the shared group, else the client id
PROBE_EXPIRY_S = 60  # a probe nobody took in this long is of no use: the broker drops it
SILENT_PROBES = 10  # probes sent with none back before the bridge says so, once

_encode = msgspec.json.Encoder().encode


def probe_topic(client_id: str, shared_group: str | None) -> str:
    """The probe topic of a bridge: its shared group's, else its own."""
    return PROBE_TOPIC.format(name=shared_group or client_id)


class ProgressProbe:
    """`shared_group`: the bridge's shared subscription group, if any. `interval_s` of 0
    switches probes and progress records off."""

    def __init__(self, client_id: str, shared_group: str | None, interval_s: float) -> None:
        self.client_id = client_id
        self.interval_s = interval_s
        self.topic = probe_topic(client_id, shared_group) if interval_s else None
        self.watermark: int | None = None  # the newest probe send time received, ms
        self._next_probe = 0.0
        self._next_report = 0.0
        self._unanswered = 0
        self._warned = False

    @property
    def on(self) -> bool:
        return self.topic is not None

    @staticmethod
    def is_probe(msg: MqttMessage) -> bool:
        return PROBE_PROPERTY in msg.user_properties

    def probe_due(self, now: float) -> bool:
        """A probe to publish now (monotonic seconds)."""
        if not self.on or now < self._next_probe:
            return False
        self._next_probe = now + self.interval_s
        self._unanswered += 1
        if self._unanswered == SILENT_PROBES and not self._warned:
            self._warned = True
            log.warning(
                "none of the last %d progress probes on %r came back: the broker's ACL may not "
                "let this bridge publish or read there (grant it readwrite on "
                "mqtt-presence/probe/#); the workers then time offline graces by their own "
                "clock, not by this bridge's progress",
                SILENT_PROBES,
                self.topic,
            )
        return True

    @staticmethod
    def probe_payload(now_ms: int) -> bytes:
        return str(now_ms).encode()

    def observe(self, msg: MqttMessage) -> None:
        """A probe came back (this bridge's or another's of the same shared group)."""
        self._unanswered = 0
        try:
            sent_at = int(msg.payload)
        except ValueError:
            return  # not one of ours after all
        self.watermark = sent_at if self.watermark is None else max(self.watermark, sent_at)

    def report_due(self, now: float) -> bytes | None:
        """The progress record to write to every raw partition now, if one is due."""
        if self.watermark is None or now < self._next_report:
            return None
        self._next_report = now + self.interval_s
        return _encode(BridgeProgress(bridge=self.client_id, watermark=self.watermark))
