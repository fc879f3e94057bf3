"""The sink's settings: the `[sink]` table, `PRESENCE_SINK_*`, flags; Kafka's from `[kafka]`.

The DSN is a secret (it may hold a password): `dsn`, `PRESENCE_SINK_DSN` or `dsn_file` (a
mounted secret). It is kept as a `SecretStr`, and what the sink logs of it is `where`: host,
port and database only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from mqtt_presence.settings import (
    ConfigError,
    FileTableSettings,
    KafkaSettings,
    refuse_moved_kafka_keys,
    secret_from_file,
    split_kafka,
)

_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,54}"  # room for "_history" within PostgreSQL's 63 bytes
TABLE_NAME = re.compile(rf"^(?:{_NAME}\.)?{_NAME}$")


class SinkSettings(FileTableSettings):
    TABLE = "sink"
    model_config = SettingsConfigDict(
        env_prefix="PRESENCE_SINK_",
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,  # an error must not print the DSN's password
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)  # the shared [kafka] table
    dsn: SecretStr | None = Field(
        default=None, description="libpq connection string or URI of the database"
    )
    dsn_file: Path | None = Field(default=None, description="read the DSN from this file")
    group_id: str = Field("presence-sink", min_length=1, description="Kafka consumer group")
    table: str = Field("devices", description="the table of current status ([schema.]name)")
    history: bool = Field(False, description="also keep every version in <table>_history")
    batch_size: int = Field(2_000, ge=1, le=100_000, description="records per transaction, at most")
    linger_ms: int = Field(
        200, ge=0, le=60_000, description="wait this long for a batch to fill (0: write at once)"
    )
    progress_interval_s: float = Field(10.0, gt=0, description="how often progress is logged")
    connect_timeout_s: int = Field(10, ge=1, description="to reach the database")
    session_timeout_s: float = Field(
        10.0, ge=6.0, description="a sink that stops answering loses its partitions after this"
    )

    @model_validator(mode="before")
    @classmethod
    def _dsn_from_file(cls, data: Any) -> Any:
        return secret_from_file(data, "dsn", "dsn_file")

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        if not TABLE_NAME.match(value):
            raise ValueError(
                f"table {value!r}: a plain name or schema.name (letters, digits, _; up to 55 "
                "characters each, so that <table>_history fits)"
            )
        return value

    @model_validator(mode="after")
    def _has_dsn(self) -> SinkSettings:
        if self.dsn is None or not self.dsn.get_secret_value().strip():
            raise ValueError(
                "no database: pass --dsn, set PRESENCE_SINK_DSN, or give --dsn-file "
                "(or dsn or dsn_file in the sink table of the config file)"
            )
        return self


def load_sink_settings(file_data: dict[str, Any], **overrides: Any) -> SinkSettings:
    """Settings from the config file's [sink] and [kafka] tables, the environment and
    `overrides` (Kafka's among them, e.g. `kafka_bootstrap`, go to [kafka])."""
    refuse_moved_kafka_keys(file_data, SinkSettings.TABLE)
    own, kafka = split_kafka(overrides)
    return SinkSettings.load(file_data, kafka=KafkaSettings.load(file_data, **kafka), **own)


__all__ = ["ConfigError", "SinkSettings", "load_sink_settings"]
