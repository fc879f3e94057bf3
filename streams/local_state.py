"""Local table state that belongs to another Kafka is rebuilt, not trusted.

A worker keeps its table in RocksDB under `data_dir`, with the changelog offset it has read up
to. That data outlives Kafka's when a local stack is purged and made again, when a worker is
pointed at another cluster, or when the changelog topic is deleted and created anew. Faust then
finds a persisted offset past the end of the changelog and stops table recovery with
`ConsistencyError` ("persisted offset ... is higher than the last offset in that topic"): the
worker dies at every start until someone deletes the folder by hand.

So the worker writes, beside its table data, which Kafka it belongs to: the cluster id and the
changelog topic's id (Kafka's topic ids, KIP-516, change when a topic is created anew). At
start, local data without that note, or with another cluster or topic id, is removed with one
log line, and Faust rebuilds the table from the changelog, which holds every device's state. The
cost is a longer recovery, never a wrong state: the changelog, not the local copy, is the truth.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from kafka import KafkaAdminClient

from mqtt_presence.kafka_topics import client_options
from mqtt_presence.settings import KafkaSettings

log = logging.getLogger("presence.worker")
NOTE = "kafka-identity.json"


@dataclass(frozen=True)
class KafkaIdentity:
    cluster_id: str
    changelog_topic: str
    changelog_topic_id: str | None  # None until the topic exists (Faust creates it)


def read_identity(kafka: KafkaSettings | str, changelog_topic: str) -> KafkaIdentity:
    admin = KafkaAdminClient(
        **client_options(kafka), client_id="presence-local-state", bootstrap_timeout_ms=5_000
    )
    try:
        cluster_id = str(admin.describe_cluster()["cluster_id"])
        topics = admin.describe_topics([changelog_topic])
    finally:
        admin.close()
    topic_id = next(
        (
            str(t["topic_id"])
            for t in topics
            if t.get("name") == changelog_topic and not t.get("error_code")
        ),
        None,
    )
    return KafkaIdentity(cluster_id, changelog_topic, topic_id)


def stale_because(tabledir: Path, now: KafkaIdentity) -> str | None:
    """Why the table data in `tabledir` does not belong to `now`'s Kafka, or None if it does
    (or there is none). Pure but for reading the folder."""
    if not tabledir.exists() or not any(tabledir.iterdir()):
        return None
    note = tabledir / NOTE
    try:
        was = KafkaIdentity(**json.loads(note.read_text()))
    except FileNotFoundError:
        return "it does not say which Kafka it belongs to"
    except (ValueError, TypeError) as exc:
        return f"its note {note} is unreadable ({exc})"
    if was.cluster_id != now.cluster_id:
        return f"it belongs to Kafka cluster {was.cluster_id}, this is {now.cluster_id}"
    if was.changelog_topic != now.changelog_topic:
        return f"it was read from {was.changelog_topic}, this worker's is {now.changelog_topic}"
    if was.changelog_topic_id is not None and was.changelog_topic_id != now.changelog_topic_id:
        return (
            f"the changelog {now.changelog_topic} was created anew "
            f"(topic id {was.changelog_topic_id}, now {now.changelog_topic_id})"
        )
    return None


def prepare_table_dir(tabledir: Path, now: KafkaIdentity) -> bool:
    """Remove table data that belongs to another Kafka; note this one. True if removed."""
    reason = stale_because(tabledir, now)
    if reason is not None:
        log.warning(
            "local table data in %s is not this Kafka's: %s; removing it, the table is rebuilt "
            "from the changelog",
            tabledir,
            reason,
        )
        shutil.rmtree(tabledir)
    tabledir.mkdir(parents=True, exist_ok=True)
    (tabledir / NOTE).write_text(json.dumps(asdict(now)) + "\n")
    return reason is not None
