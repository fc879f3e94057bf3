"""The rooms of the package and the arrows between them (README, *Architecture*): a room imports
only the rooms it is drawn to import, so the pure core never learns of Kafka and the two parts
never import each other."""

from __future__ import annotations

import os
from pathlib import Path

import mqtt_presence
from tests.unit.imports import imported_modules

ROOT = Path(mqtt_presence.__file__).parent
LEAVES = {"core", "errors", "settings", "kafka_topics", "outages", "quiet"}
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "errors": set(),
    "settings": {"core", "errors"},
    "kafka_topics": {"errors", "settings", "core"},  # core: the raw topic's record types
    "outages": set(),
    "quiet": set(),
    "bridge": {"bridge"} | LEAVES,
    "streams": {"streams"} | LEAVES,
    "sim": {"sim", "core"},
    "stack": {"stack", "errors"},
    "sink": {"sink"} | LEAVES,
}  # the rest (cli, demo and the helpers they start processes with) may import any room


def room_of(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


def imported_rooms(path: Path) -> set[str]:
    return {n.split(".")[1] for n in imported_modules(path) if n.startswith("mqtt_presence.")}


def test_every_room_imports_only_what_the_architecture_draws() -> None:
    sources = [
        Path(folder, name)
        for folder, _, names in os.walk(ROOT, followlinks=True)  # bridge/, streams/ are links
        for name in names
        if name.endswith(".py")
    ]
    assert {room_of(p) for p in sources} >= set(ALLOWED)
    crossings = [
        f"{p.relative_to(ROOT)} imports mqtt_presence.{room}"
        for p in sources
        if room_of(p) in ALLOWED
        for room in sorted(imported_rooms(p) - ALLOWED[room_of(p)])
    ]
    assert crossings == []


def test_the_deployable_parts_are_the_top_level_folders() -> None:
    # `bridge/` and `streams/` stay where operators and readers look for them.
    for part in ("bridge", "streams"):
        link = ROOT / part
        assert link.is_symlink(), f"mqtt_presence/{part} should link to the top-level {part}/"
        assert link.resolve() == (ROOT.parent / part).resolve()
