"""Loading configuration files: one TOML file, one table per part ([presence], [bridge], ...).

TOML because it is in the standard library (tomllib) and reads well for operators. Each part
validates its own table: the core's with msgspec (its types are msgspec structs), so a wrong key or
type is reported with its path, e.g. `Expected int, got str - at $.damping.half_life_ms`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, ClassVar, Self

import msgspec
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

from mqtt_presence.core import PresenceConfig
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
    """The core's tuning from the [presence] table (defaults for what it leaves out)."""
    table = data.get("presence", {})
    try:
        return msgspec.convert(table, PresenceConfig)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError(f"{source}: [presence] {exc}") from exc


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
        finally:
            _file_tables.pop(cls, None)


_file_tables: dict[type[BaseSettings], dict[str, Any]] = {}
