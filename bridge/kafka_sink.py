"""The Kafka side of the bridge (kafka-python): idempotent, acks=all, topics declared up front."""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka.partitioner.default import DefaultPartitioner

from mqtt_presence.bridge.config import BridgeSettings
from mqtt_presence.kafka_topics import (
    check_access,
    client_options,
    declared_topics,
    ensure_topics,
)

log = logging.getLogger(__name__)
PARTITION_CACHE = 200_000  # device ids; cleared when full


class CachingPartitioner(DefaultPartitioner):  # type: ignore[misc]
    """Kafka's default partitioning (murmur2 of the key, as the Java client and Faust do),
    remembered per key: kafka-python computes murmur2 in pure Python, and the same devices come
    back again and again. The cache is keyed by the partition count, so adding partitions is safe.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple[str, bytes, int], int] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: Any,
        cluster: Any,
    ) -> int:
        if serialized_key is None:
            return int(
                super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            )
        count = len(cluster.partitions_for_topic(topic) or ())
        cache_key = (topic, serialized_key, count)
        found = self._cache.get(cache_key)
        if found is None:
            if len(self._cache) >= PARTITION_CACHE:
                self._cache.clear()
            found = self._cache[cache_key] = int(
                super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            )
        return found


class KafkaSink:
    """Writes records to Kafka; the caller watches each write's future."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        # A refused certificate or password ends the bridge with the reason (KafkaAccessError),
        # instead of a retry storm that only says "Unable to bootstrap".
        check_access(settings.kafka)
        # Raises NoBrokersAvailable when Kafka is not there: the caller retries with backoff.
        self.producer = KafkaProducer(
            **client_options(settings.kafka),
            client_id=f"{settings.client_id}-producer",
            acks="all",
            enable_idempotence=True,  # retries never duplicate or reorder within a partition
            linger_ms=settings.linger_ms,
            batch_size=256 * 1024,
            compression_type=None,
            delivery_timeout_ms=settings.delivery_timeout_ms,
            request_timeout_ms=min(
                10_000, (settings.delivery_timeout_ms - settings.linger_ms) // 2
            ),
            max_block_ms=5_000,  # never stall the MQTT loop for long when the buffer is full
            partitioner=CachingPartitioner(),
        )
        # The first write of this producer that failed, whatever it carried: in kafka-python's
        # idempotent producer a batch that expires after it was sent resets the producer's
        # sequence state for every partition (its sender's `reset_producer_id`), so a producer
        # that failed any write is replaced, not only one that failed a device's.
        self.failure: BaseException | None = None

    def ensure_topics(self) -> None:
        """Create the raw and dead-letter topics if they do not exist (auto-create is off), and
        check the partitions of those that do."""
        declared = declared_topics(self.settings.kafka)
        ensure_topics(
            self.settings.kafka,
            f"{self.settings.client_id}-admin",
            [declared["raw"], declared["dlq"]],
        )

    def send(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, bytes]],
        *,
        partition: int | None = None,
    ) -> Any:
        """Start a write (to `partition`, else the key's); returns kafka-python's future
        (`is_done`, `exception`). A failure is also kept in `failure`."""
        write = self.producer.send(
            topic, key=key, value=value, headers=headers, partition=partition
        )
        write.add_errback(self._failed)
        return write

    def _failed(self, exc: BaseException) -> None:
        """On kafka-python's I/O thread."""
        if self.failure is None:
            self.failure = exc

    def flush(self, timeout_s: float) -> None:
        self.producer.flush(timeout=timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self.producer.close(timeout=timeout_s)
        except KafkaTimeoutError:
            # kafka-python's close() flushes first and, when that times out, raises without
            # stopping its I/O thread (the Java client's close(0) just drops the records). Stop
            # it, so an abandoned producer leaves nothing running. Its records were never
            # acknowledged to the MQTT broker, which delivers them again.
            sender = getattr(self.producer, "_sender", None)
            if sender is not None:
                sender.force_close()
            log.info("Kafka producer abandoned with unsent records (not acknowledged upstream)")
