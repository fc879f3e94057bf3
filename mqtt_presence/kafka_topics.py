"""Declaring Kafka topics up front (the brokers run with auto-create off): one place for the
bridge and the workers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from mqtt_presence.errors import PresenceError
from mqtt_presence.settings import KafkaSettings

log = logging.getLogger(__name__)


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
    bootstrap: str,
    client_id: str,
    specs: Sequence[TopicSpec],
    others: Sequence[TopicSpec] = (),
) -> None:
    """Create the topics of `specs` that do not exist yet; existing ones, and those of `others`
    that exist (created by someone else, e.g. Faust's changelog), are checked (`check_layout`)."""
    # 5 s to reach a broker, not kafka-python's 30: the callers retry with backoff and say so.
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id=client_id, bootstrap_timeout_ms=5_000
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


def read_from_beginning(bootstrap: str, topic: str, idle_ms: int = 2_000) -> list[Any]:
    """Every record of `topic` from its start, until none came for `idle_ms` (no group, no
    commits: a reader that changes nothing)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=idle_ms,
    )
    try:
        return list(consumer)
    finally:
        consumer.close()
