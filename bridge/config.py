"""The bridge's settings: typed, frozen, loaded once.

pydantic-settings gives typed values, `SecretStr` passwords and environment variables for free.
Sources, strongest first: command-line flags, environment (`PRESENCE_BRIDGE_*`, nested with `__`),
the `[bridge]` table of the config file (Kafka's address and topics: the shared `[kafka]` table),
then defaults (the local stack, the README's device convention).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from mqtt_presence.bridge.profiles import ProfileSettings
from mqtt_presence.bridge.profiles.json_status import JsonProfileSettings
from mqtt_presence.settings import (
    FileTableSettings,
    KafkaSettings,
    refuse_moved_kafka_keys,
    secret_from_file,
    split_kafka,
)


class BridgeSettings(FileTableSettings):
    TABLE = "bridge"
    model_config = SettingsConfigDict(
        env_prefix="PRESENCE_BRIDGE_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,  # an error must not print a password it was given
    )

    # MQTT
    mqtt_url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://host:port or mqtts://")
    client_id: str = "presence-bridge"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(
        default=None, description="read the MQTT password from this file (a mounted secret)"
    )
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    mqtt_version: Literal["5", "3.1.1"] = Field(
        "5",
        description="MQTT 5, or 3.1.1 for brokers without it (RabbitMQ before 3.13): then the "
        "session lasts until the broker's own expiry, and progress probes carry no expiry",
    )
    keepalive_s: int = Field(30, ge=5)
    session_expiry_s: int = Field(
        7 * 24 * 3600, gt=0, description="how long the broker keeps our session offline"
    )
    receive_maximum: int = Field(
        1000, ge=1, le=65535, description="QoS 1 messages in flight to us (the ack window)"
    )
    shared_group: str | None = Field(None, description="subscribe as $share/<group>/<filter>")
    sparkplug_host_id: str | None = Field(
        None,
        description="publish Sparkplug 3.0 host STATE as this primary host id (spBv1.0/STATE/<id>)",
    )
    sparkplug_rebirth_interval_s: float = Field(
        30.0, ge=0, description="ask an unknown Sparkplug edge node to rebirth at most this often"
    )
    profiles: list[ProfileSettings] = Field(default_factory=lambda: [JsonProfileSettings()])  # type: ignore[arg-type]
    max_payload_bytes: int = Field(64 * 1024, gt=0)
    coalesce_activity_s: float = Field(
        1.0,
        ge=0,
        description="at most one activity record per device per this many seconds (0: all); "
        "keep it below the core's offline grace period",
    )
    progress_interval_s: float = Field(
        0.0,
        ge=0,
        description="how often the bridge probes its own queue at the broker and writes how far "
        "it got to every raw partition, so that workers end an offline grace only once every "
        "bridge has passed it; 1 s with several bridges sharing a subscription (0, the default: "
        "off; graces are timed by the workers' clocks alone)",
    )
    # Kafka (where it is and the topics: the shared [kafka] table)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    linger_ms: int = Field(20, ge=0)
    delivery_timeout_ms: int = Field(30_000, ge=1_000)
    # Operations
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(None, description="metrics and health; None: off, 0: any")
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    kafka_stall_s: float = Field(
        5.0, gt=0, description="a Kafka write unacknowledged this long is reported as an outage"
    )
    state_dir: Path | None = Field(
        Path("~/.local/state/mqtt-presence/bridge"),
        description="where the bridge remembers a message that ended its process (None: off)",
    )

    @model_validator(mode="before")
    @classmethod
    def _password_from_file(cls, data: Any) -> Any:
        return secret_from_file(data, "password", "password_file")

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_the_url(cls, data: Any) -> Any:
        """`mqtt://user:password@host` works as operators expect: the credentials are used
        (as `username` / `password`) and the URL kept without them, so that no log or metric
        that shows the URL ever shows a password."""
        if not isinstance(data, dict) or not isinstance(data.get("mqtt_url"), str):
            return data
        parsed = urlparse(data["mqtt_url"])
        if parsed.username is None and parsed.password is None:
            return data
        data = dict(data)
        for key, value in (("username", parsed.username), ("password", parsed.password)):
            if value is None:
                continue
            given = data.get(key)
            given = given.get_secret_value() if isinstance(given, SecretStr) else given
            if given is not None and given != unquote(value):
                raise ValueError(f"mqtt_url and {key} give two different {key}s; give one")
            data[key] = unquote(value)
        netloc = parsed.hostname or ""
        if parsed.port is not None:
            netloc += f":{parsed.port}"
        data["mqtt_url"] = parsed._replace(netloc=netloc).geturl()
        return data

    @model_validator(mode="after")
    def _sparkplug_needs_every_message(self) -> BridgeSettings:
        if self.shared_group and any(p.kind == "sparkplug" for p in self.profiles):
            raise ValueError(
                "a Sparkplug host needs every message of an edge node, in order (its devices, "
                "its death, its rebirths); a shared subscription splits them among bridges: "
                "run the sparkplug profile in a bridge without shared_group"
            )
        host = self.sparkplug_host_id
        if host is not None and (not host.strip() or any(c in host for c in "+#/")):
            raise ValueError("sparkplug_host_id must be a topic level without +, # or /")
        return self

    @field_validator("mqtt_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parsed.hostname:
            raise ValueError(f"{value!r} is not mqtt://host:port or mqtts://host:port")
        return value

    @property
    def crash_memory_file(self) -> Path | None:
        """One file per client id: two bridges on one machine never share it."""
        if self.state_dir is None:
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.client_id)
        return self.state_dir.expanduser() / f"{safe}.inflight"

    @property
    def mqtt_host(self) -> str:
        return urlparse(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        parsed = urlparse(self.mqtt_url)
        return parsed.port or (8883 if self.mqtt_tls else 1883)

    @property
    def mqtt_tls(self) -> bool:
        return urlparse(self.mqtt_url).scheme in ("mqtts", "ssl")


def load_bridge_settings(file_data: dict[str, Any], **overrides: Any) -> BridgeSettings:
    """Settings from the config file's [bridge] and [kafka] tables, the environment and
    `overrides` (Kafka's among them, e.g. `kafka_bootstrap`, `raw_topic`, go to [kafka])."""
    refuse_moved_kafka_keys(file_data, BridgeSettings.TABLE)
    own, kafka = split_kafka(overrides)
    return BridgeSettings.load(file_data, kafka=KafkaSettings.load(file_data, **kafka), **own)
