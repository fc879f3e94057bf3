"""`presence replay`: same input and config, same output byte for byte; explain says why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec

from mqtt_presence.core import PresenceConfig, StatusChange
from mqtt_presence.sim.simulator import SCENARIOS, simulate
from mqtt_presence.streams.replay import ReplayReport, replay


def dump(tmp_path: Path) -> Path:
    sim = simulate(SCENARIOS["stale-will"], 30, seed=5)
    path = tmp_path / "raw.jsonl"
    path.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in sim.events))
    return path


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mqtt_presence", "replay", *args],
        input=stdin,
        capture_output=True,
        check=False,
    )


def test_replay_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    path = dump(tmp_path)
    first, second = run_cli(str(path)), run_cli("-", stdin=path.read_bytes())
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    changes = [msgspec.json.decode(line, type=StatusChange) for line in first.stdout.splitlines()]
    assert changes
    per_device: dict[str, list[int]] = {}
    for c in changes:
        per_device.setdefault(c.device, []).append(c.version)
    assert all(v == list(range(1, len(v) + 1)) for v in per_device.values())


def test_config_changes_the_outcome(tmp_path: Path) -> None:
    path = dump(tmp_path)
    config = tmp_path / "presence.toml"
    config.write_text("[presence]\noffline_grace_ms = 600000\n")
    default, patient = run_cli(str(path)), run_cli(str(path), "--config", str(config))
    assert patient.returncode == 0, patient.stderr
    assert len(patient.stdout.splitlines()) < len(default.stdout.splitlines())


def test_explain_tells_each_decision_for_one_device(tmp_path: Path) -> None:
    path = dump(tmp_path)
    device = json.loads(path.read_text().splitlines()[0])["device"]
    result = run_cli(str(path), "--explain", device)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    inputs = [line for line in lines if line["input"] != "tick"]
    raw_of_device = [line for line in path.read_text().splitlines() if f'"{device}"' in line]
    assert len(inputs) == len(raw_of_device)
    assert all(line["decisions"] for line in lines)
    decisions = " ".join(d for line in lines for d in line["decisions"])
    assert "opens session" in decisions


def test_bad_lines_are_reported_and_skipped_not_fatal() -> None:
    good = b'{"device":"d","kind":"birth","received_at":1,"session":1}\n'
    report = ReplayReport()
    out = list(
        replay([good, b"{nope\n", b'{"device":"d"}\n', good], PresenceConfig(), report=report)
    )
    assert len(out) == 1
    assert [b.split(":")[0] for b in report.bad_lines] == ["line 2", "line 3"]
    result = run_cli("-", stdin=good + b"garbage\n")
    assert result.returncode == 1
    assert b"line 2: not a raw event" in result.stderr


def test_a_dump_with_the_bridges_progress_records_replays_without_bad_lines() -> None:
    # presence.raw carries them beside the device events (a dump with kcat takes both)
    good = b'{"device":"d","kind":"birth","received_at":1,"session":1}\n'
    progress = b'{"bridge":"presence-bridge","watermark":1700000000000}\n'
    report = ReplayReport()
    out = list(replay([good, progress, good], PresenceConfig(), report=report))
    assert len(out) == 1
    assert report.bad_lines == []
    assert (report.events, report.progress) == (2, 1)


def test_a_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[presence]\noffline_grace_ms = 'soon'\n")
    result = run_cli("-", "--config", str(config), stdin=b"")
    assert result.returncode == 1
    assert b"offline_grace_ms" in result.stderr


def test_bad_bytes_typos_versions_and_ids_are_reported_by_line_and_the_rest_is_replayed() -> None:
    # An operator's hand-written dumps: each of these used to end replay with a traceback, or
    # to be read as something else without a word.
    good = b'{"device":"d","kind":"birth","received_at":1,"session":1}\n'
    lines = [
        b"\xef\xbb\xbf" + good,  # a BOM from an editor: noted, the line is read
        b'{"device":"\xff","kind":"birth","received_at":2}\n',  # not UTF-8
        b'{"device":"e","kind":"birth","received_at":3,"sesion":1}\n',  # a typo
        b'{"device":"e","kind":"birth","received_at":4,"schema_version":2}\n',
        b'{"device":"","kind":"birth","received_at":5}\n',  # empty id
        b'{"device":"a\\u0007b","kind":"birth","received_at":6}\n',  # a control character
        b'{"device":"f","kind":"will","received_at":7,"session":1}\n',
    ]
    report = ReplayReport()
    out = list(replay(lines, PresenceConfig(), report=report))
    assert [b.split(":")[0] for b in report.bad_lines] == [
        "line 2",
        "line 3",
        "line 4",
        "line 5",
        "line 6",
    ]
    assert "sesion" in report.bad_lines[1]
    assert "schema_version 2" in report.bad_lines[2]
    assert report.warnings == ["line 1: starts with a UTF-8 byte order mark; ignored"]
    assert report.events == 2
    assert len(out) == 1  # d online; f's will is pending (grace) at the end of the dump
    assert report.pending == [("f", 7 + PresenceConfig().offline_grace_ms)]
    result = run_cli("-", stdin=b"".join(lines))
    assert result.returncode == 1
    assert b"change still pending at the end" in result.stderr


def test_explaining_a_device_that_is_not_in_the_dump_says_so(tmp_path: Path) -> None:
    result = run_cli(str(dump(tmp_path)), "--explain", "nobody")
    assert result.returncode == 1
    assert b"'nobody' does not appear in the dump" in result.stderr
