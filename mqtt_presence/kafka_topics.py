"""Declaring Kafka topics up front (the brokers run with auto-create off): one place for the
bridge and the workers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)


def ensure_topics(bootstrap: str, client_id: str, specs: list[TopicSpec]) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
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
    finally:
        admin.close()


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
