"""The workers' settings: typed, frozen, loaded once (pydantic-settings, like the bridge's).

Sources, strongest first: command-line flags, environment (`PRESENCE_WORKER_*`), the `[worker]`
table of the config file, then defaults (the local stack). Kafka's address, the topics and their
partitions come from the shared `[kafka]` table (`PRESENCE_KAFKA_*`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from mqtt_presence.settings import (
    FileTableSettings,
    KafkaSettings,
    refuse_moved_kafka_keys,
    secret_from_file,
    split_kafka,
)


class WorkerSettings(FileTableSettings):
    TABLE = "worker"
    model_config = SettingsConfigDict(
        env_prefix="PRESENCE_WORKER_",
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,  # an error must not print a token it was given
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)  # the shared [kafka] table
    app_id: str = Field("mqtt-presence", description="consumer group and internal topic prefix")
    store: Literal["rocksdb", "memory"] = "rocksdb"
    data_dir: Path = Path("~/.local/state/mqtt-presence/worker").expanduser()
    web_bind: str = Field(
        "127.0.0.1",
        description="address the HTTP API listens on (0.0.0.0: every interface; it has no "
        "authentication, so only where the network is yours)",
    )
    http_token: SecretStr | None = Field(
        default=None,
        description="when set, /devices and /fleet want `Authorization: Bearer <token>` (every "
        "worker of a group the same); /ready and /metrics stay open for probes and scrapers",
    )
    http_token_file: Path | None = Field(
        default=None, description="read http_token from this file (a mounted secret)"
    )
    web_host: str = Field("127.0.0.1", description="host name in this worker's own URL")
    web_port: int = Field(6066, ge=0, le=65535)
    canonical_url: str | None = Field(
        None, description="how other workers reach this one (default http://web_host:web_port)"
    )
    tick_interval_s: float = Field(1.0, gt=0, description="how often time passes for the core")
    reannounce_on_recovery: bool = Field(
        True,
        description="after a restart or rebalance, send each inherited device's last "
        "change again (same version): no change is lost between changelog and status",
    )
    reannounce_per_s: float = Field(
        5_000.0,
        gt=0,
        description="the pace of that re-announcement, in records a second (in the "
        "background: a partition of a million devices takes 200 s at the default)",
    )
    recovery_stall_s: float = Field(
        30.0,
        ge=5.0,
        description="a table recovery that reads nothing for this long ends the process (exit "
        "75) so that its supervisor restarts it: Faust's recovery can hang after a rebalance",
    )
    kafka_stall_s: float = Field(
        5.0, gt=0, description="a write unacknowledged this long is reported as a Kafka outage"
    )
    max_clock_skew_s: float = Field(
        300.0,
        gt=0,
        description="a raw event received (by the bridge's clock) further ahead of this "
        "worker's clock than this is dead-lettered: one bad clock must not freeze a device",
    )
    bridge_silence_s: float = Field(
        15.0,
        gt=0,
        description="a bridge whose progress records stopped this long no longer holds offline "
        "graces back (see the bridge's progress_interval_s)",
    )
    session_timeout_s: float = Field(
        10.0, ge=6.0, description="a worker that stops answering loses its partitions after this"
    )

    @property
    def heartbeat_interval_s(self) -> float:
        return self.session_timeout_s / 4

    @model_validator(mode="before")
    @classmethod
    def _token_from_file(cls, data: Any) -> Any:
        return secret_from_file(data, "http_token", "http_token_file")


def load_worker_settings(file_data: dict[str, Any], **overrides: Any) -> WorkerSettings:
    """Settings from the config file's [worker] and [kafka] tables, the environment and
    `overrides` (Kafka's among them, e.g. `kafka_bootstrap`, `partitions`, go to [kafka])."""
    refuse_moved_kafka_keys(file_data, WorkerSettings.TABLE)
    own, kafka = split_kafka(overrides)
    return WorkerSettings.load(file_data, kafka=KafkaSettings.load(file_data, **kafka), **own)
