"""A real MQTT device that does the lifecycle right: will and birth carry the same session token.

This is the helper for device teams (see the README's device guide) and the simulated fleet's
client: it registers its will on CONNECT, publishes its birth, and can leave gracefully or die
abruptly (the broker then publishes the will).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import paho.mqtt.client as mqtt


def status_payload(
    status: str, session: int | str | None, ts: int | None = None, graceful: bool = False
) -> bytes:
    body: dict[str, Any] = {"status": status}
    if session is not None:
        body["session"] = session
    body["ts"] = ts if ts is not None else time.time_ns() // 1_000_000
    if graceful:
        body["graceful"] = True
    return json.dumps(body, separators=(",", ":")).encode()


class MqttDevice:
    """One device connection. `session` is the token shared by this connection's birth and will
    (a boot or connection counter is best)."""

    def __init__(
        self,
        device_id: str,
        host: str,
        port: int,
        *,
        session: int | str | None,
        topic: str | None = None,
        keepalive: int = 30,
        client_id: str | None = None,
        clean_start: bool = True,
        mqtt5: bool = True,
    ) -> None:
        """`mqtt5=False`: MQTT 3.1.1 (RabbitMQ 3.10), where `clean_start` is the clean session
        flag."""
        self.device_id = device_id
        self.session = session
        self.topic = topic or f"devices/{device_id}/status"
        self.host, self.port, self.keepalive = host, port, keepalive
        self.clean_start, self.mqtt5 = clean_start, mqtt5
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or device_id,
            protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311,
            clean_session=None if mqtt5 else clean_start,
        )
        self.client.will_set(self.topic, status_payload("offline", session), qos=1)
        self._birth: bytes | None = None

    def connect(self) -> MqttDevice:
        if self.mqtt5:
            self.client.connect(
                self.host, self.port, keepalive=self.keepalive, clean_start=self.clean_start
            )
        else:
            self.client.connect(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()
        return self

    def birth(self, retain: bool = False, *, again: bool = False) -> None:
        """Publish the birth; `again` publishes the last one's very bytes once more, as a QoS 1
        sender does when it did not see the PUBACK (same payload, same device time)."""
        if not again or self._birth is None:
            self._birth = status_payload("online", self.session)
        info = self.client.publish(self.topic, self._birth, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)

    def leave(self) -> None:
        """A graceful goodbye: an offline of our own, then DISCONNECT (no will)."""
        info = self.client.publish(
            self.topic, status_payload("offline", self.session, graceful=True), qos=1
        )
        info.wait_for_publish(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()

    def die(self) -> None:
        """Drop the connection without DISCONNECT: the broker publishes our will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def vanish(self) -> None:
        """Stop talking but leave the TCP connection half-open, as after a power loss: the broker
        publishes the will only when the keepalive expires (1.5 x keepalive)."""
        self.client.loop_stop()
