"""What an MQTT broker really does around sessions and wills, asked with real paho clients.

Each probe returns what it saw; `test_brokers.py` pins the answers per broker (the README's
broker table is rendered from those pinned answers). The questions are the ones the field reports
turn on: when a stale will arrives, whether a takeover publishes a will, how a will delay and a
session interact, how QoS 1 is redelivered. Spec references are beside each probe (OASIS MQTT
Version 5.0, 2019; MQTT 3.1.1, 2014).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"


@dataclass
class Broker:
    """A running broker under test: its name, port, MQTT 5 or not, and how to restart it."""

    name: str
    port: int
    mqtt5: bool
    restart: Callable[[], None]


@dataclass
class Inbox:
    """What a subscriber received, with the time and the DUP flag of each message."""

    got: list[tuple[float, str, bytes, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append((time.monotonic(), msg.topic, bytes(msg.payload), bool(msg.dup)))

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [p for _, _, p, _ in self.got]

    def wait(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.payloads()) >= count:
                return True
            time.sleep(0.05)
        return len(self.payloads()) >= count


def tag() -> str:
    return uuid.uuid4().hex[:10]


def client(
    broker: Broker, client_id: str, *, clean: bool = True, manual_ack: bool = False
) -> mqtt.Client:
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if broker.mqtt5 else mqtt.MQTTv311,
        clean_session=None if broker.mqtt5 else clean,
        manual_ack=manual_ack,
    )
    c.reconnect_delay_set(3600, 3600)  # a probe's clients never come back on their own
    return c


def connect(
    broker: Broker,
    c: mqtt.Client,
    *,
    clean: bool = True,
    keepalive: int = 60,
    session_expiry: int = 0,
    loop: bool = True,
) -> None:
    """Connect and wait for the CONNACK (with `loop`, on paho's thread)."""
    props = None
    if broker.mqtt5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    if broker.mqtt5:
        c.connect(HOST, broker.port, keepalive, clean_start=clean, properties=props)
    else:
        c.connect(HOST, broker.port, keepalive)
    if loop:
        c.loop_start()
        assert connected.wait(10), f"{broker.name}: no CONNACK"
    else:
        deadline = time.monotonic() + 10
        while not connected.is_set():
            assert time.monotonic() < deadline, f"{broker.name}: no CONNACK"
            c.loop(0.1)


def subscriber(broker: Broker, topic: str) -> tuple[mqtt.Client, Inbox]:
    inbox = Inbox()
    c = client(broker, f"probe-sub-{tag()}")
    c.on_message = inbox.on_message
    connect(broker, c)
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe(topic, qos=1)
    assert done.wait(10), f"{broker.name}: no SUBACK for {topic}"
    return c, inbox


def will(c: mqtt.Client, topic: str, payload: bytes, delay_s: int | None = None) -> None:
    props = None
    if delay_s is not None:
        props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
        props.WillDelayInterval = delay_s
    c.will_set(topic, payload, qos=1, properties=props)


def drop(c: mqtt.Client) -> None:
    """The network goes away under the client: no DISCONNECT, the socket just closes."""
    c.loop_stop()
    sock = c.socket()
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def leave(*clients: mqtt.Client) -> None:
    for c in clients:
        c.disconnect()
        c.loop_stop()


def will_on_takeover(broker: Broker, clean_start: bool) -> tuple[bool, int | None]:
    """A device's old connection is still open when it connects again with the same client id.
    Returns (was the old connection's will published, the reason code of the DISCONNECT the old
    connection got, None if the broker just closed it). MQTT 5 §3.1.4-3: the server sends
    DISCONNECT 0x8E (Session taken over) to the existing client and closes it; §3.1.3.2.2 and
    §3.1.2.5: its will is published unless a will delay outlasts a reconnect that keeps the
    session. MQTT 3.1.1 §3.1.4-2: the server disconnects the existing client."""
    t = tag()
    watcher, inbox = subscriber(broker, f"probe/{t}/will")
    old, new = client(broker, f"dev-{t}"), client(broker, f"dev-{t}")
    reasons: list[int | None] = []
    old.on_disconnect = lambda c, u, f, rc, p: reasons.append(rc.value if broker.mqtt5 else None)
    will(old, f"probe/{t}/will", b"old will")
    connect(broker, old, clean=True, session_expiry=60)
    connect(broker, new, clean=clean_start, session_expiry=60)
    inbox.wait(1, 4.0)
    deadline = time.monotonic() + 3
    while not reasons and time.monotonic() < deadline:
        time.sleep(0.05)
    old.loop_stop()
    leave(new, watcher)
    return b"old will" in inbox.payloads(), (reasons[0] if reasons else None)


def will_after_silence(broker: Broker, keepalive: int = 2) -> float | None:
    """A half-open connection: the client stops sending anything (no PINGREQ), the socket stays
    open. Seconds from its last packet to its will, None if none within 10 keepalives. MQTT 5
    §3.1.2.10 (and 3.1.1 §3.1.2.10): the server closes a connection that is silent for one and a
    half times the keep alive."""
    t = tag()
    watcher, inbox = subscriber(broker, f"probe/{t}/will")
    c = client(broker, f"dev-{t}")
    will(c, f"probe/{t}/will", b"silent")
    connect(broker, c, keepalive=keepalive, loop=False)  # no loop thread: nothing more is sent
    silent_since = time.monotonic()
    inbox.wait(1, keepalive * 10)
    leave(watcher)
    sock = c.socket()
    if sock is not None:
        sock.close()
    got = inbox.got[:1]
    return round(got[0][0] - silent_since, 1) if got else None


def will_delay(broker: Broker, delay_s: int = 3) -> tuple[float | None, bool]:
    """MQTT 5 only (§3.1.3.2.2): a will with a will delay interval. Returns (seconds from the
    dropped connection to the will when the device does not come back, whether the will was
    published anyway when it reconnected within the delay with its session kept)."""
    t = tag()
    watcher, inbox = subscriber(broker, f"probe/{t}/+")
    gone = client(broker, f"dev-{t}-a")
    will(gone, f"probe/{t}/a", b"delayed", delay_s)
    connect(broker, gone, session_expiry=60)
    drop(gone)
    dropped = time.monotonic()
    back = client(broker, f"dev-{t}-b")
    will(back, f"probe/{t}/b", b"suppressed", delay_s)
    connect(broker, back, session_expiry=60)
    drop(back)
    time.sleep(1)
    again = client(broker, f"dev-{t}-b")
    connect(broker, again, clean=False, session_expiry=60)
    inbox.wait(1, delay_s + 5)
    time.sleep(1)
    leave(again, watcher)
    first = [when for when, topic, _, _ in inbox.got if topic.endswith("/a")]
    return (
        round(first[0] - dropped, 1) if first else None,
        b"suppressed" in inbox.payloads(),
    )


def retained_after_restart(broker: Broker) -> tuple[bool, bool]:
    """A retained birth, then the broker restarts: does a new subscriber get it with the exact
    topic, and with a wildcard filter? MQTT 5 §3.3.1.3: retained messages are kept and sent to
    every matching subscription; keeping them over a restart is the broker's persistence."""
    t = tag()
    c = client(broker, f"dev-{t}")
    connect(broker, c)
    info = c.publish(f"probe/{t}/status", b"online", qos=1, retain=True)
    info.wait_for_publish(10)
    leave(c)
    time.sleep(1)
    broker.restart()
    exact_c, exact = subscriber(broker, f"probe/{t}/status")
    wild_c, wild = subscriber(broker, f"probe/{t}/#")
    exact.wait(1, 3)
    wild.wait(1, 1)
    leave(exact_c, wild_c)
    return exact.payloads() == [b"online"], wild.payloads() == [b"online"]


@dataclass(frozen=True)
class SharedSpread:
    """What two members of one shared subscription received of one device's messages."""

    first: int  # of the device's messages, how many each member got (in the end)
    second: int
    sent: int
    duplicates: int  # messages a member got that one of them had got already
    stalled_at: int | None  # how many had come when delivery stopped for 10 s (None: it did not)
    released: bool  # after a stall: did the next message on the topic bring the rest?

    @property
    def received(self) -> int:
        return self.first + self.second


def shared_spread(broker: Broker, messages: int = 100) -> SharedSpread:
    """Two members of one shared subscription; one device publishes `messages` on its topic.
    How many each member gets. MQTT 5 §4.8.2: each message goes to one member; how the server
    chooses is up to it. When delivery stops part way (10 s without the rest), one more message
    is published on the topic: a broker that delivers queued messages when it next polls the
    shared queue hands over the rest then, a broker that lost them does not."""
    t = tag()
    a_c, a = subscriber(broker, f"$share/g{t}/probe/{t}/#")
    b_c, b = subscriber(broker, f"$share/g{t}/probe/{t}/#")
    pub = client(broker, f"dev-{t}")
    connect(broker, pub)
    sent = [pub.publish(f"probe/{t}/status", str(i).encode(), qos=1) for i in range(messages)]
    for info in sent:
        info.wait_for_publish(10)

    def originals() -> list[bytes]:
        return [p for p in a.payloads() + b.payloads() if p != b"nudge"]

    def wait_for_all(seconds: float) -> None:
        started = time.monotonic()
        while len(originals()) < messages and time.monotonic() < started + seconds:
            if time.monotonic() > started + 3 and not originals():
                break  # nothing at all: the broker does not deliver to this filter
            time.sleep(0.1)

    wait_for_all(10)
    stalled_at = None
    if 0 < len(originals()) < messages:
        stalled_at = len(originals())
        pub.publish(f"probe/{t}/status", b"nudge", qos=1).wait_for_publish(10)
        wait_for_all(10)
    time.sleep(0.5)
    leave(pub, a_c, b_c)
    got = originals()
    first = len([p for p in a.payloads() if p != b"nudge"])
    return SharedSpread(
        first=first,
        second=len(got) - first,
        sent=messages,
        duplicates=len(got) - len(set(got)),
        stalled_at=stalled_at,
        released=stalled_at is not None and len(set(got)) == messages,
    )


def redelivery_after_reconnect(broker: Broker) -> tuple[bool, bool]:
    """A persistent subscriber (the bridge) gets a QoS 1 message, does not acknowledge it and
    loses its connection; it reconnects with its session. Is the message sent again, and with the
    DUP flag? MQTT 5 §4.4: on a reconnect with Clean Start 0 the server MUST resend unacknowledged
    PUBLISH packets with DUP 1 (3.1.1 §4.4 likewise)."""
    t = tag()
    sid = f"bridge-{t}"
    first = Inbox()
    sub = client(broker, sid, clean=False, manual_ack=True)
    sub.on_message = first.on_message
    connect(broker, sub, clean=False, session_expiry=600)
    done = threading.Event()
    sub.on_subscribe = lambda *a: done.set()
    sub.subscribe(f"probe/{t}/#", qos=1)
    assert done.wait(10)
    pub = client(broker, f"dev-{t}")
    connect(broker, pub)
    pub.publish(f"probe/{t}/status", b"birth", qos=1).wait_for_publish(10)
    assert first.wait(1, 10), f"{broker.name}: the message never came"
    drop(sub)  # no PUBACK was sent (manual_ack)
    time.sleep(1)
    again = Inbox()
    sub2 = client(broker, sid, clean=False, manual_ack=True)
    sub2.on_message = again.on_message
    connect(broker, sub2, clean=False, session_expiry=600)
    again.wait(1, 5)
    sub2.unsubscribe(f"probe/{t}/#")
    leave(pub)
    sub2.disconnect()
    sub2.loop_stop()
    redelivered = [dup for _, _, p, dup in again.got if p == b"birth"]
    return bool(redelivered), bool(redelivered and redelivered[0])
