"""The trace library (tests/traces/, see its README) through the real `presence replay` command.

Each trace is a hand-written dump of real device or broker behaviour with the statuses a careful
operator expects and the source that says so: the core is held to the world, not to our own
simulator's model of a device.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

TRACES = Path(__file__).parent / "traces"
DAY_MS = 86_400_000


def load(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


ALL = sorted(TRACES.glob("*.toml"))


def test_the_library_has_at_least_40_traces_each_with_a_source() -> None:
    assert len(ALL) >= 40
    for path in ALL:
        trace = load(path)
        assert trace["source"].strip(), path.name
        assert trace["expect"], path.name


def replay(trace: dict[str, Any], tmp_path: Path) -> list[str]:
    dump = tmp_path / "raw.jsonl"
    dump.write_text(trace["raw"])
    last = max(json.loads(line)["received_at"] for line in trace["raw"].splitlines() if line)
    args = [str(dump), "--until", str(last + DAY_MS)]
    if "presence" in trace:
        config = tmp_path / "presence.toml"
        lines = ["[presence]"]
        nested = {k: v for k, v in trace["presence"].items() if isinstance(v, dict)}
        lines += [f"{k} = {json.dumps(v)}" for k, v in trace["presence"].items() if k not in nested]
        for table, values in nested.items():
            lines += [f"[presence.{table}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
        config.write_text("\n".join(lines) + "\n")
        args += ["--config", str(config)]
    result = subprocess.run(
        [sys.executable, "-m", "mqtt_presence", "replay", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    changes = [json.loads(line) for line in result.stdout.splitlines()]
    return [
        c["status"] + (" flapping" if c["flapping"] else "") for c in changes if c["device"] == "d"
    ]


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_trace(path: Path, tmp_path: Path) -> None:
    trace = load(path)
    seen = replay(trace, tmp_path)
    assert seen == trace["expect"], f"{trace['story']}\nsource: {trace['source']}"
