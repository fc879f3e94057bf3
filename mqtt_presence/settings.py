"""Loading configuration files: one TOML file, one table per part ([kafka], [presence], [bridge],
[worker]).

TOML because it is in the standard library (tomllib) and reads well for operators. Each part
validates its own table: the core's with msgspec (its types are msgspec structs), so a wrong key or
type is reported with its path, e.g. `Expected int, got str - at $.damping.half_life_ms`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import msgspec
import tomli_w
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from mqtt_presence.core import PresenceConfig
from mqtt_presence.core.config import ClassMatch, DeviceClass
from mqtt_presence.errors import PresenceError


class ConfigError(PresenceError):
    """A configuration file could not be read or does not validate."""


def load_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def presence_config(data: dict[str, Any], source: str = "config") -> PresenceConfig:
    """The core's tuning from the [presence] table (defaults for what it leaves out), with its
    device classes: each `[[presence.classes]]` table has a `name`, a `match` table and any
    [presence] setting, which overrides the base one for its devices (a `damping` table only
    in the keys it gives)."""
    table = dict(data.get("presence", {}))
    entries = table.pop("classes", [])
    try:
        base = msgspec.convert(table, PresenceConfig)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"{source}: [presence] {exc}") from exc
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: presence.classes must be an array of tables ([[...]])")
    classes = [
        _device_class(table, entry, f"{source}: [[presence.classes]] #{i}")
        for i, entry in enumerate(entries, start=1)
    ]
    try:
        return PresenceConfig(**msgspec.structs.asdict(base) | {"classes": tuple(classes)})
    except ValueError as exc:
        raise ConfigError(f"{source}: [presence] {exc}") from exc


def _device_class(base: dict[str, Any], entry: Any, where: str) -> DeviceClass:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a table")
    own = dict(entry)
    name, match = own.pop("name", None), own.pop("match", None)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where} needs a name")
    where = f"{where} ({name!r})"
    if not isinstance(match, dict):
        raise ConfigError(f"{where} needs a match table: device (a glob), profile and/or topic")
    merged = {**base, **own}
    if isinstance(base.get("damping"), dict) and isinstance(own.get("damping"), dict):
        merged["damping"] = {**base["damping"], **own["damping"]}
    try:
        return DeviceClass(
            name=name,
            match=msgspec.convert(match, ClassMatch),
            config=msgspec.convert(merged, PresenceConfig),
        )
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def secret_from_file(data: Any, key: str, file_key: str) -> Any:
    """`<key>_file` names a file holding the secret (how Kubernetes and Docker mount secrets):
    read it into `key`, without its final newline. Giving both is refused: which one wins would
    be a guess."""
    if not isinstance(data, dict) or data.get(file_key) in (None, ""):
        return data
    if data.get(key) not in (None, ""):
        raise ValueError(f"give {key} or {file_key}, not both")
    path = Path(str(data[file_key])).expanduser()
    try:
        secret = path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{file_key} {path}: {exc.strerror}") from exc
    if not secret:
        raise ValueError(f"{file_key} {path} is empty")
    return {**data, key: secret}


class FileTableSettings(BaseSettings):
    """Typed settings whose file source is one table of the TOML config file.

    Sources, strongest first: keyword overrides (the command line), the environment (the
    subclass's `env_prefix`), the table named `TABLE`, then the defaults.
    """

    TABLE: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file_table = InitSettingsSource(settings_cls, init_kwargs=_file_tables.get(cls, {}))
        return init_settings, env_settings, file_table

    @classmethod
    def load(cls, file_data: dict[str, Any], **overrides: Any) -> Self:
        """Settings from `file_data[TABLE]`, the environment and the non-None `overrides`."""
        _file_tables[cls] = dict(file_data.get(cls.TABLE, {}))
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:  # one family of errors: the CLI prints it as one line
            raise ConfigError(f"bad {cls.TABLE} configuration: {exc}") from exc
        finally:
            _file_tables.pop(cls, None)


_file_tables: dict[type[BaseSettings], dict[str, Any]] = {}


class KafkaSettings(FileTableSettings):
    """Where Kafka is and the topics every part uses, declared once (the `[kafka]` table,
    `PRESENCE_KAFKA_*`): the bridge writes raw and dead letters, the workers read raw and ticks
    and write status and dead letters, and all of them must agree on names and partitions."""

    TABLE = "kafka"
    model_config = SettingsConfigDict(
        env_prefix="PRESENCE_KAFKA_",
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,  # an error must not print a password it was given
    )

    bootstrap: str = Field(default="127.0.0.1:9092", description="host:port[,host:port...]")
    raw_topic: str = "presence.raw"
    status_topic: str = "presence.status"
    dlq_topic: str = "presence.dlq"
    ticks_topic: str = "presence.ticks"
    partitions: int = Field(
        default=8, ge=1, description="of every topic; equal, so the worker's inputs co-partition"
    )
    replication_factor: int = Field(default=1, ge=1)
    # Security, as Kafka's clients name it (security.protocol, sasl.mechanism, ssl.*): the same
    # settings reach the bridge's producer, the workers (Faust), topic administration and every
    # reader, so a managed Kafka needs them once.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = Field(
        default=None, description="read the SASL password from this file (a mounted secret)"
    )
    ssl_cafile: Path | None = Field(
        default=None, description="CA bundle (PEM) that signed the brokers"
    )
    ssl_certfile: Path | None = Field(
        default=None, description="client certificate (PEM), for mTLS"
    )
    ssl_keyfile: Path | None = Field(default=None, description="its private key (PEM)")
    ssl_check_hostname: bool = True

    @model_validator(mode="before")
    @classmethod
    def _password_from_file(cls, data: Any) -> Any:
        return secret_from_file(data, "sasl_password", "sasl_password_file")

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and "
                "sasl_password (or sasl_password_file)"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (a client certificate)")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not path.expanduser().is_file():
                raise ValueError(f"{name} {path} is not a readable file")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")


# What a part's own table or the command line may still name, and where it lives now.
KAFKA_KEYS = {
    "kafka_bootstrap": "bootstrap",
    **{k: k for k in KafkaSettings.model_fields if k != "bootstrap"},
}


def split_kafka(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Overrides for a part (`--kafka-bootstrap`, `raw_topic=...`) split into the part's own and
    the `[kafka]` ones."""
    own = {k: v for k, v in overrides.items() if k not in KAFKA_KEYS}
    kafka = {KAFKA_KEYS[k]: v for k, v in overrides.items() if k in KAFKA_KEYS}
    return own, kafka


def refuse_moved_kafka_keys(file_data: dict[str, Any], table: str) -> None:
    """A `[bridge]` or `[worker]` table that still names a Kafka key gets the way to fix it."""
    given = file_data.get(table, {})
    moved = [k for k in KAFKA_KEYS if isinstance(given, dict) and k in given]
    if moved:
        raise ConfigError(
            f"[{table}] {', '.join(moved)}: Kafka's address, the topics and their partitions "
            f"are declared once, in the [kafka] table ("
            + ", ".join(f"{KAFKA_KEYS[k]} = ..." for k in moved)
            + ")"
        )


def render_config(tables: dict[str, dict[str, Any]]) -> str:
    """A config file's text from its tables, a part's Kafka keys moved to [kafka]: what the
    demo, the benchmarks and the tests write for the processes they start (tomli-w writes it:
    nested tables, arrays of tables such as [[presence.classes]], and TOML's quoting)."""
    kafka: dict[str, Any] = {}
    out: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        own, moved = split_kafka(table) if name != "kafka" else ({}, table)
        kafka.update(moved)
        if own:
            out[name] = own
    return tomli_w.dumps({"kafka": kafka, **out} if kafka else out)
