"""Faust's own ceiling on this machine: an agent that only iterates a topic (and, with
`--table-writes`, also writes one table key per event), with the worker's settings.

    python -m bench.faust_floor BOOTSTRAP TOPIC N [--table-writes]

Prints one line, `events/s <rate>`, once N events went through, and exits. Started by
worker_throughput.py in a process of its own, so that its figure comes from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterable
from typing import Any

import faust
from faust.sensors.monitor import Monitor


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("events", type=int)
    parser.add_argument("--table-writes", action="store_true")
    args = parser.parse_args()
    app = faust.App(
        f"floor-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="faust-floor-"),  # not `<app id>-data` in the cwd
        web_enabled=False,
        topic_partitions=8,
        producer_linger=0.01,
        processing_guarantee="at_least_once",
    )
    app.monitor = Monitor()  # the worker's monitor
    source = app.topic(
        args.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    table = app.Table("floor", default=None, key_type=bytes, value_type=bytes, partitions=8)
    seen = 0
    started = 0.0

    @app.agent(source, concurrency=1)
    async def count(stream: AsyncIterable[Any]) -> None:
        nonlocal seen, started
        async for event in stream.events():  # type: ignore[attr-defined]
            if not started:
                started = time.perf_counter()
            if args.table_writes:
                table[event.key] = event.value
            seen += 1
            if seen == args.events:
                rate = (seen - 1) / (time.perf_counter() - started)
                print(f"events/s {rate:.0f}", flush=True)
                await asyncio.sleep(0.5)
                os._exit(0)  # a measurement, not a service: no graceful stop to wait for

    del count
    worker = faust.Worker(app, loglevel="WARN", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
