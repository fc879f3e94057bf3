"""The faust-streaming app: `create_app(settings, config)`, no module-level app or globals."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import faust
from kafka.errors import RetriableError
from tenacity import Retrying, retry_if_exception_type, wait_exponential_jitter

from mqtt_presence.core import PresenceConfig
from mqtt_presence.kafka_topics import (
    TopicSpec,
    check_access,
    declared_topics,
    ensure_topics,
    ssl_context,
)
from mqtt_presence.quiet import quiet_libraries
from mqtt_presence.settings import KafkaSettings
from mqtt_presence.streams.config import WorkerSettings
from mqtt_presence.streams.topology import Topology, build_topology, changelog_topic
from mqtt_presence.streams.web import register_views


def declare_topics(settings: WorkerSettings) -> None:
    """The brokers run with auto-create off and Faust declares only its internal topics: create
    the ones the worker reads and writes (`presence.status` compacted) before it starts."""
    k = settings.kafka
    ensure_topics(
        k,
        f"{settings.app_id}-admin",
        list(declared_topics(k).values()),
        others=[TopicSpec(changelog_topic(settings.app_id), k.partitions, k.replication_factor)],
    )


def wait_for_kafka(
    settings: WorkerSettings, say: Callable[[str], None], max_wait_s: float = 30.0
) -> None:
    """Declare the topics, retrying with exponential backoff and jitter while Kafka cannot be
    reached (as the bridge does), with one line when it is not there and one when it is."""
    started = time.monotonic()
    for attempt in Retrying(
        wait=wait_exponential_jitter(initial=0.5, max=max_wait_s),
        retry=retry_if_exception_type((RetriableError, OSError)),  # not a refused config
        before_sleep=lambda state: (
            say(
                f"Kafka at {settings.kafka.bootstrap} is unreachable "
                f"({state.outcome.exception() if state.outcome else ''}); waiting for it"
            )
            if state.attempt_number == 1
            else None
        ),
        reraise=True,
    ):
        with attempt:
            check_access(settings.kafka)  # a refused password or certificate is not retried
            declare_topics(settings)
    if attempt.retry_state.attempt_number > 1:
        say(f"Kafka is back after {time.monotonic() - started:.1f} s")


def broker_credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """Faust's form of the [kafka] table's security (its aiokafka clients, its topic admin)."""
    context = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        assert kafka.sasl_password is not None  # the settings refuse SASL without one
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(settings: WorkerSettings, config: PresenceConfig) -> tuple[faust.App, Topology]:
    options: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka.bootstrap}",
        "broker_credentials": broker_credentials(settings.kafka),
        "store": "rocksdb://" if settings.store == "rocksdb" else "memory://",
        "datadir": str(settings.data_dir),
        "topic_partitions": settings.kafka.partitions,
        "topic_replication_factor": settings.kafka.replication_factor,
        "web_bind": settings.web_bind,  # Faust's default is every interface
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "canonical_url": settings.canonical_url
        or f"http://{settings.web_host}:{settings.web_port}",
        "web_in_thread": False,
        # At-least-once with idempotent output (faust's exactly_once has open bugs).
        "processing_guarantee": "at_least_once",
        "table_standby_replicas": 0,
        # The agent's records linger in its own output (`AgentOutput`, 10 ms) and reach the
        # producer as closed batches, sent at once; the few other records (ticks, dead letters)
        # need no lingering either.
        "producer_linger": 0.0,
        # A killed worker's partitions move on after this (Faust's default is 60 s).
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.heartbeat_interval_s,
    }
    app = faust.App(settings.app_id, **options)
    topology = build_topology(app, settings, config)
    register_views(app, topology)
    return app, topology


class PresenceWorker(faust.Worker):
    """Faust's worker, with the Kafka clients' repeated lines rate-limited once Faust has set
    up its logging (a Kafka outage made aiokafka write thousands of lines a minute)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        if level > logging.DEBUG:
            quiet_libraries()
