"""What the benchmark scripts share: a local stack of their own, and percentiles."""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
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
