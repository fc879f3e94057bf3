"""What `presence doctor` looks at: the I/O half. Each probe has a short timeout and reports what
it saw, or the error that stopped it, as an observation of `findings`; none raises."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqtt_presence.doctor.findings import (
    PROBE_MARK,
    BrokerStats,
    Connack,
    EmqxAnswers,
    HttpAnswer,
    KafkaLogin,
    Reach,
    RoundTrip,
    Suback,
    Tail,
    TopicInfo,
    Topics,
    decode_dead_letter,
    decode_status,
)
from mqtt_presence.settings import KafkaSettings

T = TypeVar("T")


class ProbeTimeout(Exception):
    pass


def within(seconds: float, work: Callable[[], T]) -> T:
    """`work()`'s result, or ProbeTimeout after `seconds` (the work goes on in a daemon thread:
    a call without a timeout of its own, like getaddrinfo, cannot hang the doctor)."""
    box: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            box.append(work())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="doctor-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if failure:
        raise failure[0]
    if not box:
        raise ProbeTimeout(f"no answer within {seconds:g} s")
    return box[0]


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, socket.gaierror):
        return str(exc.strerror or exc)
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc) or type(exc).__name__
    return text


def reach(host: str, port: int, tls: ssl.SSLContext | None, timeout_s: float) -> Reach:
    """DNS, then a TCP connection to the first address, then the TLS handshake if `tls`."""
    try:
        infos = within(timeout_s, lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except Exception as exc:
        return Reach(host, port, dns_error=_why(exc), tls_wanted=tls is not None)
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    family, _, _, _, sockaddr = infos[0]
    start = time.monotonic()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        sock.connect(sockaddr)
    except Exception as exc:
        sock.close()
        return Reach(host, port, addresses, tcp_error=_why(exc), tls_wanted=tls is not None)
    ms = (time.monotonic() - start) * 1000
    with sock:
        if tls is None:
            return Reach(host, port, addresses, tcp_ms=ms)
        try:
            with tls.wrap_socket(sock, server_hostname=host) as wrapped:
                version = f"{wrapped.version()}, {wrapped.cipher()[0]}"  # type: ignore[index]
        except ssl.SSLCertVerificationError as exc:
            return Reach(
                host,
                port,
                addresses,
                tcp_ms=ms,
                tls_wanted=True,
                tls_error=_why(exc),
                tls_untrusted=True,
            )
        except Exception as exc:
            return Reach(host, port, addresses, tcp_ms=ms, tls_wanted=True, tls_error=_why(exc))
    return Reach(host, port, addresses, tcp_ms=ms, tls_wanted=True, tls_version=version)


# --- MQTT -----------------------------------------------------------------------------------


def mqtt_tls_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file and key_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def probe_topic(filters: Sequence[str], device: str) -> str | None:
    """A topic that the first filter outside `$...` matches, with `device` at each wildcard."""
    for topic_filter in filters:
        if topic_filter.startswith("$"):
            continue
        return "/".join(
            device if level in ("+", "#") else level for level in topic_filter.split("/")
        )
    return None


class _Session:
    """One paho client driven by hand (no thread of paho's own), with what it was told."""

    def __init__(
        self,
        client_id: str,
        user: str | None,
        password: str | None,
        tls: ssl.SSLContext | None,
        timeout_s: float,
    ) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.connect_timeout = timeout_s
        if user is not None:
            self.client.username_pw_set(user, password)
        if tls is not None:
            self.client.tls_set_context(tls)
        self.connack: int | None = None
        self.closed: str | None = None
        self.subacks: dict[int, list[int]] = {}
        self.pubacks: dict[int, int] = {}
        self.messages: list[tuple[str, bytes, float]] = []
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.on_message = self._on_message

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.connack = int(rc.value)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.closed = str(rc)

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
        self.subacks[mid] = [int(code.value) for code in codes]

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        self.pubacks[mid] = int(rc.value)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.append((message.topic, bytes(message.payload), time.monotonic()))

    def connect(self, host: str, port: int) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0  # nothing stays at the broker after the doctor
        self.client.connect(host, port, keepalive=30, clean_start=True, properties=props)

    def pump(self, until: Callable[[], bool], deadline: float, *others: _Session) -> bool:
        while not until():
            if time.monotonic() >= deadline:
                return False
            for session in (self, *others):
                if session.client.socket() is not None:
                    session.client.loop(timeout=0.02)
            if self.client.socket() is None and self.closed is not None and not until():
                return until()
        return True

    def close(self) -> None:
        try:
            if self.client.is_connected():
                self.client.disconnect()
                self.client.loop(timeout=0.05)
        except Exception:  # noqa: S110 - leaving; nothing to report
            pass
        finally:  # also when the CONNECT was refused or never answered
            sock = self.client.socket()
            if sock is not None:
                sock.close()


def probe_mqtt(
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    tls: ssl.SSLContext | None,
    filters: Sequence[str],
    timeout_s: float,
) -> tuple[Connack, Suback | None, RoundTrip | None, BrokerStats | None]:
    """CONNECT as the bridge's user (with a client id of the doctor's own: the bridge's would
    take its session over), SUBSCRIBE to the bridge's filters at QoS 1 (no retained messages),
    publish a QoS 1 probe from a second client on a topic they match and time its way back,
    then read the broker's `$SYS/broker/#`."""
    run = uuid.uuid4().hex[:12]
    device = f"{PROBE_MARK}{run}"
    sub = _Session(f"{device}-sub", user, password, tls, timeout_s)
    try:
        try:
            sub.connect(host, port)
        except Exception as exc:
            return Connack(None, user, _why(exc)), None, None, None
        if not sub.pump(lambda: sub.connack is not None, time.monotonic() + timeout_s):
            why = sub.closed or f"none within {timeout_s:g} s"
            return Connack(None, user, f"connection closed ({why})"), None, None, None
        connack = Connack(sub.connack, user)
        if sub.connack is None or sub.connack >= 0x80:
            return connack, None, None, None
        suback = _subscribe(sub, filters, timeout_s)
        trip = None
        if suback.codes and all(code < 0x80 for _, code in suback.codes):
            topic = probe_topic(filters, device)
            if topic is not None:
                trip = _round_trip(host, port, user, password, tls, sub, topic, device, timeout_s)
        if suback.codes:  # the fleet's traffic is not ours to read any longer than that
            sub.client.unsubscribe(list(filters))
        stats = _sys_tree(sub, min(timeout_s, 2.0))
        return connack, suback, trip, stats
    finally:
        sub.close()


def _subscribe(sub: _Session, filters: Sequence[str], timeout_s: float) -> Suback:
    options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
    try:
        _, mid = sub.client.subscribe([(f, options) for f in filters])
    except Exception as exc:
        return Suback(error=_why(exc))
    if mid is None or not sub.pump(lambda: mid in sub.subacks, time.monotonic() + timeout_s):
        return Suback(error=sub.closed or f"none within {timeout_s:g} s")
    return Suback(codes=tuple(zip(filters, sub.subacks[mid], strict=False)))


def _round_trip(
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    tls: ssl.SSLContext | None,
    sub: _Session,
    topic: str,
    device: str,
    timeout_s: float,
) -> RoundTrip:
    pub = _Session(f"{device}-pub", user, password, tls, timeout_s)
    # Not a lifecycle message: the bridge dead-letters it (bad_payload) and step 6 leaves it out.
    payload = f"presence doctor probe {device}: not a lifecycle message".encode()
    try:
        try:
            pub.connect(host, port)
        except Exception as exc:
            return RoundTrip(topic, error=_why(exc))
        deadline = time.monotonic() + timeout_s
        if not pub.pump(lambda: pub.connack is not None, deadline) or (pub.connack or 0) >= 0x80:
            return RoundTrip(topic, error=f"the probe's publisher got no session ({pub.connack})")
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.MessageExpiryInterval = 60  # never waits long in an offline session's queue
        start = time.monotonic()
        info = pub.client.publish(topic, payload, qos=1, retain=False, properties=props)

        def back() -> bool:
            return any(t == topic and p == payload for t, p, _ in sub.messages)

        deadline = start + timeout_s
        pub.pump(lambda: info.mid in pub.pubacks, deadline, sub)
        puback = pub.pubacks.get(info.mid)
        if puback is not None and puback >= 0x80:
            return RoundTrip(topic, puback=puback, waited_s=time.monotonic() - start)
        received = sub.pump(back, deadline, pub)
        waited = time.monotonic() - start
        if not received:
            return RoundTrip(topic, puback=puback, waited_s=waited)
        at = next(when for t, p, when in sub.messages if t == topic and p == payload)
        return RoundTrip(
            topic, puback=puback, received=True, ms=(at - start) * 1000, waited_s=waited
        )
    finally:
        pub.close()


SYS_PREFIX = "$SYS/broker/"


def _sys_tree(sub: _Session, wait_s: float) -> BrokerStats:
    """Mosquitto publishes $SYS/broker/# retained: they come at once on subscription."""
    sub.messages.clear()
    start = time.monotonic()
    try:
        _, mid = sub.client.subscribe(SYS_PREFIX + "#", qos=0)
    except Exception as exc:
        return BrokerStats(error=_why(exc))
    deadline = start + wait_s
    if mid is None or not sub.pump(lambda: mid in sub.subacks, deadline):
        return BrokerStats(waited_s=wait_s, error="no SUBACK")
    code = sub.subacks[mid][0] if sub.subacks[mid] else 0x80
    if code >= 0x80:
        return BrokerStats(waited_s=wait_s, error=f"SUBACK 0x{code:02X}")

    def settled() -> bool:  # a burst of retained messages, then quiet for a moment
        sys_msgs = [m for m in sub.messages if m[0].startswith(SYS_PREFIX)]
        return bool(sys_msgs) and time.monotonic() - sys_msgs[-1][2] > 0.3

    sub.pump(settled, deadline)
    values = {
        t.removeprefix(SYS_PREFIX): p.decode(errors="replace")
        for t, p, _ in sub.messages
        if t.startswith(SYS_PREFIX)
    }
    return BrokerStats(values=values, waited_s=time.monotonic() - start)


# --- Kafka ----------------------------------------------------------------------------------


def probe_kafka(
    kafka: KafkaSettings, names: Sequence[str], timeout_s: float
) -> tuple[KafkaLogin, Topics | None]:
    """`check_access` (a refused certificate or password, named), then the cluster and the
    topics as the brokers describe them."""
    from kafka import KafkaAdminClient  # noqa: PLC0415 - kafka-python loads when it runs
    from kafka.admin import ConfigResource, ConfigResourceType  # noqa: PLC0415

    from mqtt_presence.kafka_topics import (  # noqa: PLC0415
        KafkaAccessError,
        check_access,
        client_options,
    )

    base = KafkaLogin(kafka.security_protocol, kafka.sasl_username)
    try:
        within(timeout_s * 4, lambda: check_access(kafka, timeout_s))
    except KafkaAccessError as exc:
        return KafkaLogin(base.protocol, base.user, access_error=str(exc)), None
    except Exception as exc:
        return KafkaLogin(base.protocol, base.user, access_error=_why(exc)), None
    ms = int(timeout_s * 1000)

    def admin_work() -> tuple[KafkaLogin, Topics | None]:
        admin = KafkaAdminClient(
            **client_options(kafka),
            client_id=f"{PROBE_MARK}admin",
            bootstrap_timeout_ms=ms,
            request_timeout_ms=ms,
        )
        try:
            cluster = admin.describe_cluster()
            login = KafkaLogin(
                base.protocol,
                base.user,
                cluster_id=cluster.get("cluster_id"),
                brokers=len(cluster.get("brokers", [])),
            )
            try:
                described = admin.describe_topics(list(names))
                found: dict[str, TopicInfo | None] = {}
                for topic in described:
                    name = topic.get("name", topic.get("topic"))
                    parts = topic.get("partitions") or []
                    if not parts:
                        found[name] = None
                        continue
                    found[name] = TopicInfo(
                        name=name,
                        partitions=len(parts),
                        replication_factor=max(len(p.get("replica_nodes", [])) for p in parts),
                        offline_partitions=sum(1 for p in parts if p.get("leader_id", -1) < 0),
                        under_replicated=sum(
                            1
                            for p in parts
                            if len(p.get("isr_nodes", [])) < len(p.get("replica_nodes", []))
                        ),
                    )
                existing = [n for n, info in found.items() if info is not None]
                if existing:
                    configs = admin.describe_configs(
                        [ConfigResource(ConfigResourceType.TOPIC, n) for n in existing]
                    )
                    for name, values in configs.get("topic", {}).items():
                        info = found.get(name)
                        policy = values.get("cleanup.policy", {}).get("value")
                        if info is not None:
                            found[name] = TopicInfo(**{**info.__dict__, "cleanup_policy": policy})
                return login, Topics(brokers=login.brokers, found=found)
            except Exception as exc:
                return login, Topics(brokers=login.brokers, found={}, error=_why(exc))
        finally:
            admin.close()

    try:
        return within(timeout_s * 3, admin_work)
    except Exception as exc:
        return KafkaLogin(base.protocol, base.user, cluster_error=_why(exc)), None


def probe_tail(kafka: KafkaSettings, topic: str, last: int, kind: str, timeout_s: float) -> Tail:
    """The last `last` records of `topic` (the newest of each partition's last `last`), decoded
    as dead letters (`kind` dlq) or status changes (status)."""
    try:
        return within(timeout_s * 3, lambda: _read_tail(kafka, topic, last, kind, timeout_s))
    except Exception as exc:
        return Tail(topic, last, error=_why(exc))


def _read_tail(kafka: KafkaSettings, topic: str, last: int, kind: str, timeout_s: float) -> Tail:
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    from mqtt_presence.kafka_topics import client_options  # noqa: PLC0415

    ms = int(timeout_s * 1000)
    consumer = KafkaConsumer(
        **client_options(kafka),
        client_id=f"{PROBE_MARK}tail",
        enable_auto_commit=False,
        request_timeout_ms=max(ms, 1000),
        bootstrap_timeout_ms=ms,
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return Tail(topic, last, error="no such topic")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(starts[tp], ends[tp] - last))
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s * 2
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        records = records[-last:]
    finally:
        consumer.close()
    if kind == "dlq":
        return Tail(
            topic,
            last,
            dead_letters=tuple(decode_dead_letter(r.value, list(r.headers or [])) for r in records),
        )
    statuses = tuple(s for r in records if (s := decode_status(r.value)) is not None)
    return Tail(topic, last, statuses=statuses)


# --- HTTP -----------------------------------------------------------------------------------


def http_get(
    url: str, token: str | None, timeout_s: float, basic: tuple[str, str] | None = None
) -> HttpAnswer:
    """GET `url` with a bearer `token` or `basic` (user, password) authentication."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if basic is not None:
        pair = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode("ascii")
        headers = {"Authorization": f"Basic {pair}"}
    if not url.startswith(("http://", "https://")):
        return HttpAnswer(url, error="not an http:// or https:// address")
    try:
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - scheme checked
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310
            return HttpAnswer(url, status=resp.status, body=resp.read(1_000_000))
    except urllib.error.HTTPError as exc:
        return HttpAnswer(url, status=exc.code, body=exc.read(100_000))
    except urllib.error.URLError as exc:
        return HttpAnswer(
            url, error=_why(exc.reason if isinstance(exc.reason, BaseException) else exc)
        )
    except Exception as exc:
        return HttpAnswer(url, error=_why(exc))


def probe_emqx(api: str, key: str | None, secret: str | None, timeout_s: float) -> EmqxAnswers:
    """EMQX 5's REST API (API key and secret as HTTP basic authentication)."""
    base = api.rstrip("/")
    basic = (key, secret or "") if key else None
    return EmqxAnswers(
        *(
            http_get(f"{base}/api/v5/{path}", None, timeout_s, basic)
            for path in ("configs/flapping_detect", "banned?limit=100", "configs/listeners")
        )
    )
