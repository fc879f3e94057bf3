"""The MQTT side of the bridge (paho-mqtt, callback API 2): a persistent MQTT 5 session.

Clean Start = 0 with a Session Expiry Interval, QoS 1 subscriptions, manual acknowledgements.
As a Sparkplug primary host (`sparkplug_host_id`), it also keeps the host's STATE: Sparkplug 3.0
host birth and death, `{"online": true|false, "timestamp": T}` retained at QoS 1 on
`spBv1.0/STATE/<host id>`, the death registered as the will of each connection and published
before a clean disconnect, both with the timestamp T of that connection's will. paho
callbacks only translate what they get into calls on a `Listener`; errors that must stop the bridge
(a refused subscription, a session taken over) are kept and raised from `loop()`, on the caller's
thread, never lost on paho's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import ssl
import threading
import time
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqtt_presence.bridge.config import BridgeSettings
from mqtt_presence.bridge.errors import (
    BridgeError,
    BrokerRefusedError,
    ClientIdConflictError,
    SubscriptionDeniedError,
)
from mqtt_presence.bridge.message import MqttMessage
from mqtt_presence.bridge.progress import probe_topic

log = logging.getLogger(__name__)
SESSION_TAKEN_OVER = 0x8E
# Brokers that do not send DISCONNECT 0x8E on a takeover (Mosquitto 2.0 and RabbitMQ 3.10 just
# close the old socket; HiveMQ sends it) show a client-id conflict as a ping-pong: this many
# losses of an established session within the window stop the bridge instead of fighting the
# other client forever.
PING_PONG_LOSSES = 3
READ_BATCH = 256
PING_PONG_WINDOW_S = 60.0
FATAL_CONNACK = {0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C}  # version, client id, credentials, auth


class Wakeup:
    """Ends the loop's select() from another thread: kafka-python's I/O thread, when a write is
    done whose PUBACK the broker waits for. Without it the PUBACK waited for the select's
    timeout (50 ms) whenever the broker had stopped sending because its in-flight window was
    full: HiveMQ CE holds 50 unacknowledged messages per client whatever the client's receive
    maximum, so the bridge drained it at 50 messages per ~60 ms (820 msg/s)."""

    def __init__(self) -> None:
        self._read, self._write = socket.socketpair()
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._set = False  # a byte is on its way: wake() writes no more until clear()

    def fileno(self) -> int:
        return self._read.fileno()

    def wake(self, *_: object) -> None:
        if self._set:
            return
        self._set = True
        with contextlib.suppress(OSError):  # full (so it is set) or closed (the bridge ends)
            self._write.send(b"\0")

    def clear(self) -> None:
        """Drain, then re-arm (in this order: a wake between the two is a write the caller
        settles next anyway, and re-arming first could leave the flag set with no byte)."""
        try:
            while self._read.recv(4096):
                pass
        except OSError:  # BlockingIOError: nothing more to read
            pass
        self._set = False

    def close(self) -> None:
        self._read.close()
        self._write.close()


class Listener(Protocol):
    def on_mqtt_message(self, msg: MqttMessage, mid: int) -> None: ...
    def on_mqtt_connected(self, session_present: bool) -> None: ...
    def on_mqtt_disconnected(self, reason: str) -> None: ...


class MqttSource:
    def __init__(self, settings: BridgeSettings, filters: list[str], listener: Listener) -> None:
        self.settings = settings
        self.filters = [
            f"$share/{settings.shared_group}/{f}" if settings.shared_group else f for f in filters
        ]
        self.listener = listener
        # the progress probe's subscription: a broker may refuse it without stopping the bridge
        probe = probe_topic(settings.client_id, settings.shared_group)
        self.optional = {f for f in self.filters if f.endswith(probe)}
        self.connected = False
        self._fatal: BridgeError | None = None
        self._leaving = False
        self._losses: list[float] = []
        self.delivered = 0  # PUBLISH packets handed to the listener
        host = settings.sparkplug_host_id
        self.state_topic = f"spBv1.0/STATE/{host}" if host else None
        self._state_ts = 0  # the timestamp of this connection's STATE will
        self.subscribed = threading.Event()  # the broker granted every subscription
        self._pending_subs: dict[int, list[str]] = {}
        self.mqtt5 = settings.mqtt_version == "5"
        self.wakeup = Wakeup()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5 if self.mqtt5 else mqtt.MQTTv311,
            clean_session=None if self.mqtt5 else False,  # 3.1.1: a persistent session
            manual_ack=True,
        )
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else None
            client.username_pw_set(settings.username, password)
        if settings.mqtt_tls:
            client.tls_set(
                ca_certs=str(settings.tls_ca_file) if settings.tls_ca_file else None,
                certfile=str(settings.tls_cert_file) if settings.tls_cert_file else None,
                keyfile=str(settings.tls_key_file) if settings.tls_key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        self.client = client

    def connect(self) -> None:
        """Open the connection (raises OSError when the broker is unreachable)."""
        props = None
        if self.mqtt5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.settings.session_expiry_s
            props.ReceiveMaximum = self.settings.receive_maximum
        if self.state_topic is not None:
            self._state_ts = time.time_ns() // 1_000_000
            self.client.will_set(
                self.state_topic, state_payload(False, self._state_ts), qos=1, retain=True
            )
        try:
            self.client.connect(
                self.settings.mqtt_host,
                self.settings.mqtt_port,
                keepalive=self.settings.keepalive_s,
                clean_start=False if self.mqtt5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=props,
            )
        except ssl.SSLCertVerificationError as exc:  # retrying cannot make it trusted
            raise BrokerRefusedError(
                f"the MQTT broker at {self.settings.mqtt_url} has a certificate this bridge "
                f"does not trust: {exc.verify_message} (tls_ca_file: "
                f"{self.settings.tls_ca_file or 'the system CAs'})"
            ) from None
        except ssl.SSLError as exc:
            raise BrokerRefusedError(
                f"the MQTT broker at {self.settings.mqtt_url} ended the TLS handshake: "
                f"{exc.reason or exc} (is it a TLS listener? does it want a client "
                "certificate, tls_cert_file/tls_key_file?)"
            ) from None

    def loop(self, timeout: float) -> bool:
        """One turn of the network loop; False when the connection is gone.

        paho's own `loop()` reads one packet per call, each after a select(). Here one select()
        is followed by up to `READ_BATCH` packets while they keep coming, then every queued packet
        (our PUBACKs) is written at once: the same work with far fewer system calls.
        """
        sock = self.client.socket()
        if sock is None:
            if self._fatal is not None:
                raise self._fatal
            return False
        client = self.client
        fd, woken = sock.fileno(), self.wakeup.fileno()
        writable = [fd] if client.want_write() else []
        readable, _, _ = select.select([fd, woken], writable, [], timeout)
        if woken in readable:
            self.wakeup.clear()  # the caller settles what Kafka has done after this turn
        rc = mqtt.MQTT_ERR_SUCCESS
        if fd in readable:
            for _ in range(READ_BATCH):
                before = self.delivered
                rc = client.loop_read()
                if rc != mqtt.MQTT_ERR_SUCCESS or self.delivered == before:
                    break
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = self.flush()
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()  # keepalive
        if self._fatal is not None:
            raise self._fatal
        return rc == mqtt.MQTT_ERR_SUCCESS and client.socket() is not None

    def flush(self) -> mqtt.MQTTErrorCode:
        """Write what is queued (acknowledgements) now."""
        if self.client.socket() is not None and self.client.want_write():
            return self.client.loop_write()
        return mqtt.MQTT_ERR_SUCCESS

    def ack(self, mid: int, qos: int) -> None:
        self.client.ack(mid, qos)

    def wake(self, *_: object) -> None:
        """From any thread: end the current `loop()` wait (a Kafka write is done)."""
        self.wakeup.wake()

    def close(self) -> None:
        """Release what the source holds beyond the connection (the wakeup's sockets)."""
        self.wakeup.close()

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        *,
        user_properties: dict[str, str] | None = None,
        expiry_s: int | None = None,
    ) -> None:
        """Send a message of our own (a Sparkplug rebirth request, the host STATE, a progress
        probe), with MQTT 5 user properties and a message expiry interval if given."""
        props = None
        if self.mqtt5 and (user_properties or expiry_s is not None):
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if user_properties:
                props.UserProperty = list(user_properties.items())
            if expiry_s is not None:
                props.MessageExpiryInterval = expiry_s
        self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)

    def disconnect(self) -> None:
        """Leave on purpose; the session (and every unacknowledged message) stays at the broker."""
        self._leaving = True
        try:
            if self.connected:
                if self.state_topic is not None:  # a clean leave: no will, so say it ourselves
                    self.publish(self.state_topic, state_payload(False, self._state_ts), 1, True)
                self.client.disconnect()
                for _ in range(10):  # write the DISCONNECT out
                    if (
                        self.client.socket() is None
                        or self.client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS
                    ):
                        break
        finally:
            self.connected = False
            self._leaving = False

    # --- paho callbacks (paho's thread is ours here: we drive loop() ourselves) ----------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # paho never sets TCP_NODELAY: PUBACKs would wait for Nagle's algorithm.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            if reason_code.value in FATAL_CONNACK:
                self._fatal = BrokerRefusedError(
                    f"the MQTT broker refused the connection as {self.settings.client_id!r}: "
                    f"{reason_code} (0x{reason_code.value:02X}); check username, password "
                    "and client id"
                )
            log.warning("MQTT connection refused: %s", reason_code)
            return
        self.connected = True
        # MQTT 5 takes subscription options; paho refuses them on a 3.1.1 client (a QoS only)
        subs: list[tuple[str, Any]] = [
            (f, SubscribeOptions(qos=1) if self.mqtt5 else 1) for f in self.filters
        ]
        _, mid = client.subscribe(subs)
        if mid is not None:
            self._pending_subs[mid] = list(self.filters)
        self.listener.on_mqtt_connected(bool(flags.session_present))

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        filters = self._pending_subs.pop(mid, [])
        denied = [(f, rc) for f, rc in zip(filters, reason_codes, strict=False) if rc.is_failure]
        for f, rc in [d for d in denied if d[0] in self.optional]:
            log.warning(
                "the broker refused the subscription to %r (%s): this bridge cannot measure "
                "its lag, and the workers time offline graces by their own clocks; grant it "
                "readwrite on mqtt-presence/probe/#",
                f,
                rc,
            )
        denied = [d for d in denied if d[0] not in self.optional]
        if denied:
            self._fatal = SubscriptionDeniedError(
                "; ".join(
                    f"the broker refused the subscription to {f!r}: {rc} (0x{rc.value:02X})"
                    for f, rc in denied
                )
                + ". Check the broker's ACL for this client."
            )
        else:
            log.info("subscribed to %s (QoS 1)", ", ".join(filters))
            if self.state_topic is not None:  # born as a host once we hear what it starts
                self.publish(self.state_topic, state_payload(True, self._state_ts), 1, True)
            self.subscribed.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was = self.connected
        self.connected = False
        if reason_code.value == SESSION_TAKEN_OVER:
            self._fatal = ClientIdConflictError(
                f"another client connected with our client id {self.settings.client_id!r} and "
                "took the session over (MQTT 5 reason 0x8E). Two bridges must not share a "
                "client id: give each its own (and use shared_group to split the load)."
            )
        if was and not self._leaving:
            self.listener.on_mqtt_disconnected(str(reason_code))
            self._count_loss()

    def _count_loss(self) -> None:
        now = time.monotonic()
        self._losses = [t for t in self._losses if now - t < PING_PONG_WINDOW_S] + [now]
        if len(self._losses) >= PING_PONG_LOSSES and self._fatal is None:
            self._fatal = ClientIdConflictError(
                f"the broker closed our session as {self.settings.client_id!r} "
                f"{len(self._losses)} times within {PING_PONG_WINDOW_S:.0f} s: most likely "
                "another client uses the same client id and each connection takes the other's "
                "session over (Mosquitto logs 'already connected, closing old connection', "
                "RabbitMQ 'disconnecting client ... with duplicate id'). "
                "Give every bridge its own client id. If not, check the broker's limits and log."
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        props = getattr(message, "properties", None)
        user = dict(getattr(props, "UserProperty", []) or []) if props is not None else {}
        defect = None
        try:
            topic = message.topic
        except UnicodeDecodeError as exc:  # MQTT forbids it; not every broker checks
            topic = message._topic.decode("utf-8", errors="replace")
            defect = f"the topic is not UTF-8 ({exc})"
        msg = MqttMessage(
            topic=topic,
            payload=bytes(message.payload),
            received_at=time.time_ns() // 1_000_000,
            qos=message.qos,
            retain=bool(message.retain),
            dup=bool(message.dup),
            user_properties=user,
            defect=defect,
        )
        self.delivered += 1
        self.listener.on_mqtt_message(msg, message.mid)


def state_payload(online: bool, timestamp: int) -> bytes:
    """A Sparkplug 3.0 host STATE payload (JSON, two keys)."""
    return json.dumps({"online": online, "timestamp": timestamp}, separators=(",", ":")).encode()
