"""The README's first command: the demo runs the whole pipeline and leaves nothing behind."""

from __future__ import annotations

import os
import re
import shutil
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


DEMO = [sys.executable, "-m", "mqtt_presence", "demo"]
LOUD = re.compile(r"\b(ERROR|WARNING|CRITICAL|Traceback)\b")


class Terminal:
    """A real terminal: a tmux server of its own, one window of `width` x `height`."""

    def __init__(self, name: str, width: int = 160, height: int = 60) -> None:
        tmux = shutil.which("tmux")
        assert tmux, "tmux is missing: .ci/run installs it (apt-get install tmux)"
        self.base = [tmux, "-L", name]
        self.size = (width, height)

    def run(self, command: str) -> None:
        width, height = self.size
        # COLUMNS=80 reaches the pane's processes under pytest, and rich obeys COLUMNS first:
        # the terminal's own size is what a person's program would see.
        command = f"env -u COLUMNS -u LINES {command}"
        subprocess.run(
            [*self.base, "new-session", "-d", "-x", str(width), "-y", str(height), command],
            check=True,
        )

    def screen(self) -> str:
        """What a person sees now, wrapped lines joined, with the scrollback."""
        out = subprocess.run(
            [*self.base, "capture-pane", "-p", "-J", "-S", "-500"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, check=False)


DECISIONS = ("stale will ignored", "reboot hidden", "offline after grace", "repeat dropped")
REPLAY = re.compile(r"presence replay (\S+) --config (\S+) --explain (\S+)")


def test_the_demo_screen_tells_why_as_it_happens(stack: StackInfo, tmp_path: Path) -> None:
    # Issue: the live view was one table of counts; what makes the product different (a stale will
    # ignored, a repeat dropped, a flapper damped, and the naive consumer getting each wrong) was
    # not on screen. Read here as a person would: a real terminal, its screen captured.
    before = _worker_processes()
    term = Terminal(f"presence-demo-{os.getpid()}")
    command = (
        f"{sys.executable} -m mqtt_presence demo --home {stack.home} --duration 20 "
        "--devices 40; echo DEMO-EXIT=$?; sleep 600"
    )
    frames: list[str] = []
    try:
        term.run(command)
        deadline = time.monotonic() + 240
        while "DEMO-EXIT=" not in (frames[-1] if frames else ""):
            assert time.monotonic() < deadline, frames[-1] if frames else "no screen"
            time.sleep(0.5)
            frames.append(term.screen())
    finally:
        term.close()
    final = frames[-1]
    assert "DEMO-EXIT=0" in final, final
    running = [f for f in frames if "accuracy against the ground truth" not in f]
    live = [f for f in running if "why: the core's decisions as they happen" in f]
    assert live, running[-1]
    # while the fleet lives, the feed names decisions, beside what the naive consumer did
    seen = {d for f in live for d in DECISIONS if d in f}
    assert {"stale will ignored", "offline after grace"} <= seen, live[-1]
    assert any("OFFLINE, wrong: device is up" in f for f in live), live[-1]
    assert any("per scenario: mqtt-presence against the naive consumer" in f for f in live)
    assert "power cycles (stale wills)" in live[-1]
    # the end: accuracy, the verdict in one line, and how to explain any device
    assert "offlines while the device was up" in final
    verdict = next(line for line in final.splitlines() if line.startswith("verdict:"))
    assert re.search(r"mqtt-presence sent \d+ updates and shows 0 device\(s\) wrong", verdict)
    assert not LOUD.search(final), final
    found = REPLAY.search(final)
    assert found, final
    dump, config, device = found.groups()
    explained = subprocess.run(
        [
            sys.executable,
            "-m",
            "mqtt_presence",
            "replay",
            dump,
            "--config",
            config,
            "--explain",
            device,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert explained.returncode == 0, explained.stderr
    assert "stale will dropped" in explained.stdout  # the device it suggests shows the why
    shutil.rmtree(Path(dump).parent)
    assert _worker_processes() <= before  # its worker is gone
    # it used the test session's stack, which was up before: it stays up
    assert all(LocalStack(Path(stack.home)).health(stack).values())


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


def test_the_cmdb_storm_demo_shows_what_the_sink_spares_the_database(stack: StackInfo) -> None:
    """`presence demo --cmdb-storm`: report A's flapping agents, written into a real PostgreSQL
    once per raw message (what report A's CMDB did, until its MongoDB load forced the agent off)
    and once through presence.status by the sink. The sink must cost the database fewer
    statements and rows, and the demo must leave no database behind."""
    before = set(Path("/tmp").glob("presence-pg-*"))
    done = subprocess.run(
        [
            *DEMO,
            "--cmdb-storm",
            *("--home", str(stack.home), "--duration", "20", "--devices", "200"),
            *("--flapping", "0.2"),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {
        m.group(1): [float(x.replace(",", "")) for x in m.group(2, 3, 4)]
        for m in re.finditer(
            r"^(every raw message \(naive\)|presence.status \(sink\))\s+([\d,]+)\s+([\d,]+)\s+"
            r"([\d,]+)",
            done.stdout,
            re.MULTILINE,
        )
    }
    naive, sink = rows["every raw message (naive)"], rows["presence.status (sink)"]
    assert naive[0] > sink[0] > 0  # messages each consumer read
    assert naive[1] > 2 * sink[1]  # statements
    assert naive[2] > sink[2]  # rows written
    assert "naive / sink: statements x" in done.stdout
    assert set(Path("/tmp").glob("presence-pg-*")) == before
    assert LocalStack(Path(stack.home)).running()  # it was up before: the demo leaves it up
