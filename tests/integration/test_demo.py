"""The README's first command: the demo runs the whole pipeline and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
