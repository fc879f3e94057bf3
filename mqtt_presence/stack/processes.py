"""Starting brokers that outlive the command, and stopping exactly those, by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

# Children started by this process: kept so that they are reaped when they stop (and so that
# Python does not warn that a still-running child was garbage-collected).
_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    cmd: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `cmd` in a session of its own (a Ctrl-C of the CLI does not reach it), output to
    `log`."""
    with log.open("ab") as out:  # the child has its own descriptor; ours closes here
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
            env=env,
        )
    _children[proc.pid] = proc
    return proc


def _reap(pid: int) -> None:
    proc = _children.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            del _children[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_running(pid: int, marker: str) -> bool:
    """True if `pid` is a live (not zombie) process whose command line contains `marker`."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and marker in cmdline


def stop_pid(pid: int, marker: str, timeout: float = 30.0) -> bool:
    """SIGTERM, wait, then SIGKILL; only if the pid still runs the expected program."""
    return bool(stop_pids([(pid, marker)], timeout))


def stop_pids(targets: Sequence[tuple[int, str]], timeout: float = 30.0) -> list[int]:
    """`stop_pid` for several processes at once: all are sent SIGTERM before any is waited for
    (the nodes of a Kafka cluster stopped one after another leave the last ones without a
    controller quorum, and each of those waits out its whole timeout). Returns the pids that
    were running and are stopped."""
    running = [(pid, marker) for pid, marker in targets if pid_running(pid, marker)]
    for pid, _ in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = list(running)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [(pid, marker) for pid, marker in left if pid_running(pid, marker)]
    for pid, marker in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while pid_running(pid, marker):
            time.sleep(0.05)
    return [pid for pid, _ in running]
