"""The README's first command: the demo runs the whole pipeline and leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mqtt_presence.stack import LocalStack, StackInfo


def _worker_processes() -> set[str]:
    out = subprocess.run(
        ["pgrep", "-f", "mqtt_presence worker"], capture_output=True, text=True, check=False
    )
    return set(out.stdout.split())


def test_demo_runs_the_pipeline_and_reports_accuracy(stack: StackInfo) -> None:
    before = _worker_processes()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mqtt_presence",
            "demo",
            "--home",
            stack.home,
            "--duration",
            "15",
            "--devices",
            "30",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout
    assert "accuracy against the ground truth" in text
    assert "offlines while the device was up" in text
    assert _worker_processes() <= before  # its worker is gone
    # it used the test session's stack, which was up before: it stays up
    assert all(LocalStack(Path(stack.home)).health(stack).values())


DEMO = [sys.executable, "-m", "mqtt_presence", "demo"]
LOUD = re.compile(r"\b(ERROR|WARNING|CRITICAL|Traceback)\b")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_demo_stopped_by_a_signal_stops_everything_it_started(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # Closing the terminal (SIGHUP) or `kill` (SIGTERM) used to leave the local Kafka (a 400 MB
    # JVM) and Mosquitto running. Its own stack here, so that it is the demo's to stop.
    home = tmp_path / "stack"
    out = tmp_path / "demo.out"
    before = _worker_processes()
    with out.open("wb") as log:
        demo = subprocess.Popen(
            [*DEMO, "--home", str(home), "--duration", "120", "--devices", "10"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "160"},
        )
    try:
        deadline = time.monotonic() + 180
        while b"starting a streams worker" not in out.read_bytes():
            assert demo.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(0.2)
        stack = LocalStack(home)
        info = stack.info()
        assert info is not None
        assert stack.running()
        started = out.read_text()
        time.sleep(3)  # the worker is on its way up: the signal lands mid-start
        demo.send_signal(sig)
        demo.wait(120)
    finally:
        if demo.poll() is None:
            demo.kill()
        LocalStack(home).down(purge=True)  # whatever happens, leave nothing for other tests
    assert not stack.running(), out.read_text()[-3000:]
    assert not any(stack.health(info).values())
    assert _worker_processes() <= before
    assert "stack stopped" in out.read_text()
    # a healthy start of the local stack says nothing alarming (the probes wait quietly)
    assert not LOUD.search(started), started
