"""Loading configuration files: one TOML file, one table per part ([presence], [bridge], ...).

TOML because it is in the standard library (tomllib) and reads well for operators. Each part
validates its own table: the core's with msgspec (its types are msgspec structs), so a wrong key or
type is reported with its path, e.g. `Expected int, got str - at $.damping.half_life_ms`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec

from streams.presence import PresenceConfig


class ConfigError(Exception):
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
