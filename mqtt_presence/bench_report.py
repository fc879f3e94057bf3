"""Benchmark results machines can read: one JSON document per run (the version and the library and
broker versions, the machine, the settings, every figure as a number with its unit), a timestamped
copy kept in a folder, and the difference to an earlier run.

`presence bench accuracy` and each script in `bench/` print these with `--json`; `--save DIR` and
`--compare FILE` work the same way for all of them.
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec

import mqtt_presence

LIBRARIES = ("paho-mqtt", "kafka-python", "faust-streaming", "aiokafka", "msgspec")


class Machine(msgspec.Struct, frozen=True, kw_only=True):
    cores: int
    memory_gib: float
    python: str
    platform: str


def machine() -> Machine:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return Machine(
        cores=os.cpu_count() or 1,
        memory_gib=round(pages / 2**30, 1),
        python=platform.python_version(),
        platform=platform.platform(),
    )


def versions(**brokers: str) -> dict[str, str]:
    """mqtt-presence's version, the libraries' it runs on, and any broker's given."""
    found = {"mqtt-presence": mqtt_presence.__version__}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {**found, **brokers}


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Figure(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    value: float
    unit: str  # "events/s", "ms", "ratio", "bytes", "messages", ...
    target: str | None = None  # what the figure should meet, e.g. ">= 0.5" (for a ratio)


class BenchReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a `bench/` script prints with `--json` (its JSON Schema: `--json-schema`)."""

    schema_version: int = 1
    command: str  # e.g. "python -m bench.core_speed"
    measured_at: str  # UTC, ISO 8601
    versions: dict[str, str]
    machine: Machine
    settings: dict[str, Any]  # the script's options as it ran
    figures: dict[str, Figure]  # name -> figure; names are stable across runs


def save(document: bytes, folder: Path, name: str, measured_at: str) -> Path:
    """Keep `document` as `<folder>/<name>-<UTC time>.json`."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = measured_at.replace(":", "").replace("+0000", "Z")
    path = folder / f"{name}-{stamp}.json"
    path.write_bytes(document + b"\n")
    return path


def changes(earlier: dict[str, float], now: dict[str, float]) -> list[str]:
    """One line per figure that changed, appeared or went: `name: before -> now (+x %)`."""
    lines = []
    for name in sorted(earlier.keys() | now.keys()):
        was, is_ = earlier.get(name), now.get(name)
        if was == is_:
            continue
        if was is None:
            lines.append(f"{name}: new, {is_:g}")
        elif is_ is None:
            lines.append(f"{name}: {was:g} then, not measured now")
        else:
            rel = f" ({(is_ - was) / was:+.1%})" if was else ""
            lines.append(f"{name}: {was:g} -> {is_:g}{rel}")
    return lines or ["no figure changed"]
