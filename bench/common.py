"""What the benchmark scripts share: a local stack of their own, a worker's event counter, and
percentiles."""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mqtt_presence.stack import LocalStack, StackInfo


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latency-rate", type=int, default=1_000, help="messages per second")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--home", type=Path, help="use (or start) the local stack here")


@contextmanager
def bench_stack(home_arg: Path | None) -> Iterator[tuple[StackInfo, Path]]:
    """The stack in `home_arg`, or a fresh one in a temporary folder, stopped and removed after."""
    home = home_arg or Path(tempfile.mkdtemp(prefix="presence-bench-"))
    stack = LocalStack(home / "stack" if home_arg is None else home)
    started = not stack.running()
    info = stack.up(progress=print)
    try:
        yield info, home
    finally:
        if started:
            stack.down()
        if home_arg is None:
            shutil.rmtree(home, ignore_errors=True)


def p50_p99(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def worker_events(port: int) -> float:
    """The `presence_worker_events_total` a worker's /metrics shows (0 while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("presence_worker_events_total "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def events_rate(
    ports: list[int], n: int, before: float = 0.0, timeout_s: float = 600
) -> tuple[float, float]:
    """events/s of the workers on `ports` working through `n` more events than `before`, from
    their first counted one; and how many they counted (less than `n` if time ran out)."""
    first_at = first = 0.0
    done = before
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = sum(worker_events(port) for port in ports)
        if done > before and not first_at:
            first_at, first = time.perf_counter(), done
        if done - before >= n:
            break
        time.sleep(0.2)
    if not first_at:
        raise SystemExit(f"the workers on {ports} processed no event in {timeout_s:.0f} s")
    return (done - first) / (time.perf_counter() - first_at), done - before
