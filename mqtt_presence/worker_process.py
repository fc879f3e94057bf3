"""A `presence worker` in a process of its own, configured by a generated TOML file: what the demo,
the benchmarks and the tests start (one place, one config format)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mqtt_presence.errors import PresenceError
from mqtt_presence.settings import render_config
from mqtt_presence.stack.ports import free_port


class WorkerStartError(PresenceError):
    """The worker process exited or did not get ready; the message has its log's tail."""


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(
        cls,
        kafka_bootstrap: str,
        home: Path,
        topics: dict[str, str],
        app_id: str,
        *,
        partitions: int = 8,
        store: str = "memory",
        presence: dict[str, Any] | None = None,
        tick_interval_s: float = 0.5,
        session_timeout_s: float | None = None,
        data_dir: Path | None = None,
        kafka: dict[str, Any] | None = None,
        worker_settings: dict[str, Any] | None = None,
    ) -> WorkerProcess:
        """Start a worker on `topics` (raw, status, dlq, ticks), with `presence` as its [presence]
        table (the core's settings), `kafka` as more of its [kafka] table (security) and
        `worker_settings` as more of its [worker] table; see `wait_ready`."""
        port = free_port()
        worker = {
            "app_id": app_id,
            "raw_topic": topics["raw"],
            "status_topic": topics["status"],
            "dlq_topic": topics["dlq"],
            "ticks_topic": topics["ticks"],
            "partitions": partitions,
            "store": store,
            "data_dir": str(data_dir or home / f"data-{port}"),
            "web_port": port,
            "tick_interval_s": tick_interval_s,
        }
        if session_timeout_s is not None:
            worker["session_timeout_s"] = session_timeout_s
        worker |= worker_settings or {}
        tables: dict[str, dict[str, Any]] = {"worker": worker}
        if kafka:
            tables["kafka"] = {**kafka, "bootstrap": kafka_bootstrap}
        if presence:
            tables["presence"] = dict(presence)
        config = home / f"worker-{port}.toml"
        config.write_text(render_config(tables))
        log = home / f"worker-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mqtt_presence",
                    "worker",
                    "--config",
                    str(config),
                    "--kafka-bootstrap",
                    kafka_bootstrap,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=home,
            )
        return cls(proc, port, log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise WorkerStartError(
                f"the worker exited; last lines of {self.log}:\n"
                + "\n".join(self.log.read_text().splitlines()[-30:])
            )
        try:
            with urllib.request.urlopen(f"{self.url}/ready", timeout=1) as resp:  # noqa: S310
                return bool(json.loads(resp.read())["ready"])
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout: float = 90.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise WorkerStartError(f"the worker did not get ready in {timeout:.0f} s; see {self.log}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(30)
