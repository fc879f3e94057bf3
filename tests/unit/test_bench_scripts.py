"""Every benchmark script answers `--json` with one document a machine can read (versions, machine,
settings, each figure a number with its unit), valid against the schema `--json-schema` prints,
and keeps and compares results with `--save` and `--compare`. Run here on the one script that needs
no broker (the core's speed, on a small fleet); the others share the same `run_bench`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from mqtt_presence.bench_report import changes

ROOT = Path(__file__).resolve().parents[2]
# faust_floor is the process worker_throughput starts to measure Faust alone; its figures are in
# that script's document.
NOT_SCRIPTS = {"__init__", "common", "faust_floor"}
SCRIPTS = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in NOT_SCRIPTS)
SMALL = ["--devices", "200", "--memory-sizes", "500"]


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=120,
    )


def test_the_core_speed_json_is_one_document_valid_against_its_schema() -> None:
    result = run("core_speed", *SMALL, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is the document alone; the lines went to stderr
    assert "core speed, one core" in result.stderr
    schema = json.loads(run("core_speed", "--json-schema").stdout)
    jsonschema.Draft202012Validator(schema).validate(report)
    assert report["command"] == "python -m bench.core_speed"
    assert report["settings"]["devices"] == 200
    assert report["machine"]["cores"] >= 1
    assert {"mqtt-presence", "paho-mqtt", "kafka-python"} <= report["versions"].keys()
    figures = report["figures"]
    assert figures["transition.stale-will"]["unit"] == "events/s"
    assert figures["transition.stale-will"]["value"] > 0
    assert figures["bytes_per_device.500"]["unit"] == "bytes"


def test_a_saved_result_is_compared_figure_by_figure(tmp_path: Path) -> None:
    first = run("core_speed", *SMALL, "--save", str(tmp_path))
    assert first.returncode == 0, first.stderr
    (saved,) = tmp_path.glob("core_speed-*.json")
    assert f"saved {saved}" in first.stderr
    again = run("core_speed", *SMALL, "--compare", str(saved))
    assert again.returncode == 0, again.stderr
    assert f"against {saved}" in again.stderr
    assert "transition.stale-will: " in again.stderr  # a speed always moves a little


def test_a_compare_file_that_is_not_a_result_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.json"
    bogus.write_text('{"hello": 1}')
    result = run("core_speed", *SMALL, "--compare", str(bogus))
    assert result.returncode == 2
    assert "not an earlier --json result" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module", SCRIPTS)
def test_every_benchmark_script_offers_json_save_and_compare(module: str) -> None:
    result = run(module, "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--json", "--save", "--compare", "--json-schema"):
        assert option in result.stdout, f"bench.{module} lacks {option}"


def test_changes_name_each_figure_that_moved_appeared_or_went() -> None:
    assert changes({"a": 1.0, "b": 2.0}, {"a": 1.0, "b": 3.0, "c": 4.0}) == [
        "b: 2 -> 3 (+50.0%)",
        "c: new, 4",
    ]
    assert changes({"a": 1.0}, {}) == ["a: 1 then, not measured now"]
    assert changes({"a": 1.0}, {"a": 1.0}) == ["no figure changed"]
