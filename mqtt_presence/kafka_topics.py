"""Kafka's clients and topics for every part: how to connect (address and security, from the
[kafka] table), and declaring topics up front (the brokers run with auto-create off)."""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from mqtt_presence.core.records import is_progress
from mqtt_presence.errors import PresenceError
from mqtt_presence.settings import KafkaSettings

log = logging.getLogger(__name__)
# kafka-python's admin client logs its whole configuration at DEBUG, the SASL password in it:
# its lines below INFO are never made, whatever the level of the root logger (`-v`, a test).
logging.getLogger("kafka.admin.client").setLevel(logging.INFO)


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of a connection to Kafka (None for PLAINTEXT and SASL_PLAINTEXT): the
    brokers' certificates verified against `ssl_cafile` (or the system's CAs), host names
    checked unless switched off, a client certificate when one is given. One context for
    kafka-python and for Faust's aiokafka, so both verify the same way."""
    if not kafka.uses_tls:
        return None
    context = ssl.create_default_context(
        cafile=str(kafka.ssl_cafile.expanduser()) if kafka.ssl_cafile else None
    )
    context.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_certfile and kafka.ssl_keyfile:
        context.load_cert_chain(
            str(kafka.ssl_certfile.expanduser()), str(kafka.ssl_keyfile.expanduser())
        )
    return context


def client_options(kafka: KafkaSettings | str) -> dict[str, Any]:
    """kafka-python's connection options (producer, consumer, admin) for the [kafka] table, or
    for a bare bootstrap address (tests and benchmarks on the plaintext local stack)."""
    if isinstance(kafka, str):
        return {"bootstrap_servers": kafka}
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "security_protocol": kafka.security_protocol,
    }
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        assert kafka.sasl_password is not None  # the settings refuse SASL without one
        options |= {
            "sasl_mechanism": kafka.sasl_mechanism,
            "sasl_plain_username": kafka.sasl_username,
            "sasl_plain_password": kafka.sasl_password.get_secret_value(),
        }
    return options


class KafkaAccessError(PresenceError):
    """Kafka refuses this client for good (a certificate, a password): retrying cannot help."""


class _Captured(logging.Handler):
    """kafka-python's reasons for a failed connection: it logs them and then raises a timeout
    that does not say whether the broker was down or said no."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def check_access(kafka: KafkaSettings, timeout_s: float = 5.0) -> None:
    """Raise KafkaAccessError, with the reason in the operator's words, when Kafka refuses this
    client: a broker certificate that is not trusted (unknown CA, expired, another host name),
    a client certificate the broker refuses, a wrong SASL user or password. Does nothing for a
    plaintext connection or a Kafka that cannot be reached (that is retried, not refused)."""
    if kafka.security_protocol == "PLAINTEXT":
        return
    host, _, port = kafka.bootstrap.split(",")[0].strip().rpartition(":")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    except OSError:
        return  # unreachable: the caller retries
    with sock:
        context = ssl_context(kafka)
        if context is not None:
            _check_tls(context, sock, host, kafka)
    if kafka.security_protocol.startswith("SASL"):
        # A refused login can also show as a dropped connection (the broker delays its answer
        # to a failed authentication): ask again before calling it unreachable.
        for _ in range(SASL_CHECKS):
            if _sasl_accepted(kafka, timeout_s):
                return


SASL_CHECKS = 3


def _sasl_accepted(kafka: KafkaSettings, timeout_s: float) -> bool:
    """True when a client logs in; raises KafkaAccessError when Kafka says the login is
    wrong; False when neither could be told (try again)."""
    captured = _Captured()
    logger = logging.getLogger("kafka")
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.WARNING)
    logger.propagate = False  # its lines are the evidence here, not news for the log
    logger.addHandler(captured)
    try:
        admin = KafkaAdminClient(
            **client_options(kafka), bootstrap_timeout_ms=int(timeout_s * 1000)
        )
        admin.close()
        return True
    except KafkaError:
        refusals = [m for m in captured.messages if "SaslAuthenticationFailed" in m]
        if refusals:
            said = refusals[0].split("SaslAuthenticationFailedError:")[-1].split(" (backoff")[0]
            said = said.strip().rstrip(")'\"")
            raise KafkaAccessError(
                f"Kafka at {kafka.bootstrap} refused user {kafka.sasl_username!r} with "
                f"{kafka.sasl_mechanism}: {said} (check sasl_username, sasl_password and "
                "sasl_mechanism)"
            ) from None
        return False
    finally:
        logger.removeHandler(captured)
        logger.setLevel(level)
        logger.propagate = propagate


def _check_tls(
    context: ssl.SSLContext, sock: socket.socket, host: str, kafka: KafkaSettings
) -> None:
    where = f"Kafka at {kafka.bootstrap}"
    try:
        tls = context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise KafkaAccessError(
            f"{where} has a certificate this client does not trust: {exc.verify_message} "
            f"(ssl_cafile: {kafka.ssl_cafile or 'the system CAs'}"
            + ("; ssl_check_hostname" if "hostname" in str(exc.verify_message).lower() else "")
            + ")"
        ) from None
    except ssl.SSLError as exc:
        raise KafkaAccessError(
            f"{where} ended the TLS handshake: {exc.reason or exc} (is it a TLS listener? does "
            f"it want a client certificate, ssl_certfile/ssl_keyfile?)"
        ) from None
    except OSError:
        return
    with tls:  # TLS 1.3: a client certificate the broker refuses is an alert after the handshake
        tls.settimeout(0.5)
        try:
            tls.recv(1)
        except ssl.SSLError as exc:
            raise KafkaAccessError(
                f"{where} refused this client's certificate ({exc.reason or exc}); "
                f"ssl_certfile: {kafka.ssl_certfile or 'none given'}"
            ) from None
        except OSError:
            pass  # a timeout: the broker waits for a request, the handshake was accepted


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)


def declared_topics(kafka: KafkaSettings) -> dict[str, TopicSpec]:
    """Every topic of the pipeline as the [kafka] table declares it, by role (raw, ticks, status,
    dlq): the bridge creates the ones it writes, a worker all of them, from this one place."""
    k = kafka
    return {
        "raw": TopicSpec(k.raw_topic, k.partitions, k.replication_factor),
        "ticks": TopicSpec(  # ticks are worthless after a while
            k.ticks_topic, k.partitions, k.replication_factor, {"retention.ms": "3600000"}
        ),
        "status": TopicSpec(  # the last record per device is its current status
            k.status_topic, k.partitions, k.replication_factor, {"cleanup.policy": "compact"}
        ),
        "dlq": TopicSpec(k.dlq_topic, k.partitions, k.replication_factor),
    }


class TopicLayoutError(PresenceError):
    """A topic exists with another partition count than the configuration says: records would go
    to other partitions than the workers expect (co-partitioning, tick routing)."""


def check_layout(found: dict[str, int], specs: Sequence[TopicSpec]) -> None:
    """Stop, naming the topic and both counts, when an existing topic's partition count is not
    the configured one. Keys hash to a partition by count: a raw topic with another count than
    the ticks and the table's changelog breaks routing and co-partitioning without an error."""
    wrong = [
        f"{spec.name} has {found[spec.name]} partitions, the configuration says {spec.partitions}"
        for spec in specs
        if spec.name in found and found[spec.name] != spec.partitions
    ]
    if wrong:
        raise TopicLayoutError(
            "; ".join(wrong) + ". Set `partitions` to the topics' count (a worker's topics "
            "must all have the same), or recreate the topics (their data is lost)"
        )


def ensure_topics(
    kafka: KafkaSettings | str,
    client_id: str,
    specs: Sequence[TopicSpec],
    others: Sequence[TopicSpec] = (),
) -> None:
    """Create the topics of `specs` that do not exist yet; existing ones, and those of `others`
    that exist (created by someone else, e.g. Faust's changelog), are checked (`check_layout`)."""
    # 5 s to reach a broker, not kafka-python's 30: the callers retry with backoff and say so.
    admin = KafkaAdminClient(
        **client_options(kafka), client_id=client_id, bootstrap_timeout_ms=5_000
    )
    try:
        for spec in specs:
            topic = NewTopic(
                spec.name,
                spec.partitions,
                spec.replication_factor,
                topic_configs=dict(spec.configs),
            )
            try:
                admin.create_topics([topic])
                log.info("created Kafka topic %s (%d partitions)", spec.name, spec.partitions)
            except TopicAlreadyExistsError:
                pass
        described = admin.describe_topics([spec.name for spec in [*specs, *others]])
    finally:
        admin.close()
    # kafka-python 3 names the field as the Metadata protocol does ("name"); 2.x said "topic"
    found = {
        t.get("name", t.get("topic")): len(t["partitions"]) for t in described if t["partitions"]
    }
    check_layout(found, [*specs, *others])


def read_from_beginning(
    kafka: KafkaSettings | str, topic: str, idle_ms: int = 2_000, timeout_s: float = 120.0
) -> list[Any]:
    """See `_read_from_beginning`; read again from the start with a new client (up to 5 times,
    a second apart) when a node refuses the connection or a request goes unanswered (a node of a
    cluster just killed or restarted: a ListOffsets request to the new leader of a partition
    has been seen to wait out kafka-python's 30 s in CI right after a controller kill)."""
    retrying = Retrying(
        retry=retry_if_exception_type((KafkaConnectionError, KafkaTimeoutError)),
        stop=stop_after_attempt(5),
        wait=wait_fixed(1),
        before_sleep=lambda state: log.info(
            "reading %s again: %s", topic, state.outcome and state.outcome.exception()
        ),
        reraise=True,
    )
    return retrying(_read_from_beginning, kafka, topic, idle_ms, timeout_s)


def _read_from_beginning(
    kafka: KafkaSettings | str, topic: str, idle_ms: int, timeout_s: float
) -> list[Any]:
    """Every record of `topic` from its start up to its end when called (no group, no commits:
    a reader that changes nothing), in each partition's order; the bridges' progress records
    of presence.raw (not device events) left out. It stops early if nothing came for
    `idle_ms` or after `timeout_s` (a topic that is written all the time never goes idle:
    progress records come every second)."""
    consumer = KafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in _partitions(consumer, topic)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        started = idle_since = time.monotonic()
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            batch = consumer.poll(timeout_ms=200)
            now = time.monotonic()
            if batch:
                idle_since = now
            elif now - idle_since > idle_ms / 1000 or now - started > timeout_s:
                break
            for records in batch.values():
                out.extend(r for r in records if not is_progress(r.headers))
        return out
    finally:
        consumer.close(autocommit=False)


def _partitions(consumer: KafkaConsumer, topic: str, attempts: int = 10) -> set[int]:
    """The topic's partitions, asking again (up to `attempts` times, half a second apart) when
    the node asked refuses the connection: a node of a cluster just killed or restarted."""
    for attempt in range(attempts):
        try:
            return set(consumer.partitions_for_topic(topic) or ())
        except KafkaConnectionError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    return set()


def group_caught_up(kafka: KafkaSettings | str, group: str, topic: str) -> bool:
    """Consumer group `group` has committed the end of every partition of `topic`."""
    consumer = KafkaConsumer(**client_options(kafka), group_id=group)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(tps)
        return bool(tps) and all((consumer.committed(tp) or 0) >= ends[tp] for tp in tps)
    finally:
        consumer.close(autocommit=False)


def committed_offsets(kafka: KafkaSettings | str, group: str, topic: str) -> dict[int, int]:
    """The offsets consumer group `group` has committed in `topic`, by partition (partitions
    it never committed are left out). Reads only: the group is not joined."""
    consumer = KafkaConsumer(**client_options(kafka), group_id=group, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in _partitions(consumer, topic)]
        offsets = {tp.partition: consumer.committed(tp) for tp in tps}
        return {p: offset for p, offset in offsets.items() if offset is not None}
    finally:
        consumer.close(autocommit=False)


def records_between(
    kafka: KafkaSettings | str, topic: str, partition: int, start: int, end: int
) -> int:
    """How many records of `topic`'s `partition` a consumer gets with offsets in [start, end):
    none where the offsets are a gap (transaction markers, deleted by retention)."""
    tp = TopicPartition(topic, partition)
    consumer = KafkaConsumer(
        **client_options(kafka), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        consumer.assign([tp])
        # none past the end: asked from 18 to 40 of a partition of 20, the loop below waited
        # its whole 30 s for offsets that do not exist
        end = min(end, consumer.end_offsets([tp])[tp])
        consumer.seek(tp, start)
        found = 0
        deadline = time.monotonic() + 30
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=1000).get(tp, []):
                found += start <= record.offset < end
        return found
    finally:
        consumer.close(autocommit=False)
