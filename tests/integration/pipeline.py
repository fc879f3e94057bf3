"""The pipeline the end-to-end tests drive: workers of one app, a bridge, real devices, and a
numbered QoS 1 stream (what the broker acknowledged is what must reach Kafka)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt

from mqtt_presence.bridge.app import Bridge
from mqtt_presence.core import ConnectionEvent, StatusChange
from mqtt_presence.sim.mqtt_device import MqttDevice
from mqtt_presence.stack import StackInfo
from mqtt_presence.stack.ports import free_port
from mqtt_presence.worker_process import WorkerProcess

from .helpers import (
    bridge_settings,
    read_topic,
    running_bridge,
    topic_prefix,
    unique,
    wait_for,
    write_bridge_config,
)

GRACE_MS = 1_000
KEEPALIVE = 5  # s: the broker publishes a lost connection's will after 1.5 x this


class Pipeline:
    def __init__(self, stack: StackInfo, bridge: Bridge, port: int, topics: dict[str, str]) -> None:
        self.stack, self.bridge, self.port, self.topics = stack, bridge, port, topics

    def device(self, name: str, session: int, client_id: str | None = None) -> MqttDevice:
        return MqttDevice(
            name,
            self.stack.mqtt_host,
            self.stack.mqtt_port,
            session=session,
            topic=f"{self.topics['prefix']}/{name}/status",
            keepalive=KEEPALIVE,
            client_id=client_id,
            mqtt5=self.stack.broker.mqtt5,
        ).connect()

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return err.code, json.loads(body)
            except ValueError:
                return err.code, {"error": body.decode(errors="replace")}
        except (urllib.error.URLError, ConnectionError) as err:
            # A worker being killed or restarted drops its connections: no answer (yet).
            return 0, {"error": repr(err)}

    def status_of(self, device: str) -> dict[str, Any] | None:
        code, body = self.get(f"/devices/{urllib.parse.quote(device, safe='')}")
        return body if code == 200 else None

    def changes(
        self, device: str | None = None, count: int = 10**9, timeout: float = 5
    ) -> list[StatusChange]:
        records = read_topic(self.stack, self.topics["status"], count, timeout=timeout)
        out = [msgspec.json.decode(r.value, type=StatusChange) for r in records]
        return [c for c in out if device is None or c.device == device]

    def raw(self, device: str) -> list[ConnectionEvent]:
        records = read_topic(self.stack, self.topics["raw"], 10**9, timeout=3)
        events = [msgspec.json.decode(r.value, type=ConnectionEvent) for r in records]
        return [e for e in events if e.device == device]


@contextmanager
def running_pipeline(info: StackInfo, home: Path) -> Iterator[Pipeline]:
    """One worker and one bridge (in this process) on the stack `info` names, on topics of
    their own."""
    workers = Workers(info, home)
    try:
        port = workers.start()
        with running_bridge(workers.bridge_settings()) as bridge:
            yield Pipeline(info, bridge, port, workers.topics)
    finally:
        workers.stop_all()


class Workers:
    """Worker processes of one app (one consumer group) sharing one set of topics."""

    def __init__(
        self,
        stack: StackInfo,
        home: Path,
        grace_ms: int = GRACE_MS,
        partitions: int = 4,
        store: str = "memory",
        presence: dict[str, Any] | None = None,
    ) -> None:
        self.stack, self.home = stack, home
        tag = unique("w")
        self.topics = {
            "raw": f"raw-{tag}",
            "status": f"status-{tag}",
            "dlq": f"dlq-{tag}",
            "ticks": f"ticks-{tag}",
            "prefix": tag,
        }
        self.app_id, self.grace_ms, self.partitions = f"app-{tag}", grace_ms, partitions
        self.store = store
        self.presence = {"offline_grace_ms": grace_ms, **(presence or {})}
        self.procs: dict[int, WorkerProcess] = {}

    def start(self) -> int:
        """Start one more worker; returns its HTTP port once it says it is ready."""
        worker = WorkerProcess.start(
            self.stack.kafka_bootstrap,
            self.home,
            self.topics,
            self.app_id,
            partitions=self.partitions,
            store=self.store,
            presence=self.presence,
            session_timeout_s=6.0,
        ).wait_ready()
        self.procs[worker.port] = worker
        return worker.port

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        self.procs.pop(port).stop(sig)

    def stop_all(self) -> None:
        for port in list(self.procs):
            self.kill(port, signal.SIGTERM)

    def bridge_settings(self, **overrides: Any) -> Any:
        return bridge_settings(
            self.stack,
            raw_topic=self.topics["raw"],
            dlq_topic=self.topics["dlq"],
            partitions=self.partitions,
            topic_prefix=self.topics["prefix"],
            **overrides,
        )


class NumberedPublisher:
    """Publishes `total` numbered QoS 1 messages in a thread; `acked` is what the broker
    confirmed (PUBACK), which is what must reach Kafka."""

    def __init__(
        self, info: StackInfo, prefix: str, total: int, devices: int = 20, first: int = 0
    ) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=unique("numbered"),
            protocol=mqtt.MQTTv5 if info.broker.mqtt5 else mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.connect(info.mqtt_host, info.mqtt_port)
        self.client.loop_start()
        self.prefix, self.total, self.devices, self.first = prefix, total, devices, first
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for i in range(self.first, self.first + self.total):
            payload = json.dumps({"status": "online", "session": i, "ts": i})
            self.infos.append(
                self.client.publish(f"{self.prefix}/d{i % self.devices}/status", payload, qos=1)
            )
            if i % 50 == 49:
                time.sleep(0.01)  # a steady stream, not one burst

    def start(self) -> NumberedPublisher:
        self.thread.start()
        return self

    def acked_count(self) -> int:
        return sum(1 for info in list(self.infos) if info.is_published())

    def finish(self) -> set[int]:
        self.thread.join(60)
        for info in self.infos:
            info.wait_for_publish(timeout=30)
        self.client.disconnect()
        self.client.loop_stop()
        return {self.first + n for n, info in enumerate(self.infos) if info.is_published()}


def sessions_in_kafka(
    info: StackInfo, topic: str, expected: set[int], timeout: float
) -> Counter[int]:
    deadline = time.monotonic() + timeout
    seen: Counter[int] = Counter()
    while time.monotonic() < deadline:
        records = read_topic(info, topic, 10**9, timeout=3)
        seen = Counter(
            msgspec.json.decode(r.value, type=ConnectionEvent).session  # type: ignore[misc]
            for r in records
        )
        if expected <= set(seen):
            break
    return seen


def bridge_command(
    info: StackInfo, home: Path, **extra: object
) -> tuple[list[str], dict[str, str], int]:
    """`presence bridge` on a config file of its own (`extra`: more [bridge] keys): the command,
    its topics, its HTTP port."""
    settings = bridge_settings(info)
    port = free_port()
    config = write_bridge_config(
        home / "presence.toml",
        mqtt_url=info.mqtt_url,
        kafka_bootstrap=info.kafka_bootstrap,
        client_id=settings.client_id,
        raw_topic=settings.kafka.raw_topic,
        dlq_topic=settings.kafka.dlq_topic,
        partitions=4,
        reconnect_min_s=0.2,
        reconnect_max_s=2.0,
        state_dir=str(home / "state"),
        mqtt_version=settings.mqtt_version,
        topic=settings.profiles[0].topic,
        **extra,
    )
    cmd = [
        sys.executable,
        "-m",
        "mqtt_presence",
        "bridge",
        "--config",
        str(config),
        "--http-port",
        str(port),
    ]
    names = {
        "raw_topic": settings.kafka.raw_topic,
        "dlq_topic": settings.kafka.dlq_topic,
        "prefix": topic_prefix(settings),
    }
    return cmd, names, port


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    def healthy() -> bool:
        assert proc.poll() is None, "the bridge exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    wait_for(healthy, timeout, "the bridge's health endpoint to say healthy")
    time.sleep(0.3)  # the SUBACK


# Field report of an operator's probe: one payload with the bytes \xff\xfe inside a JSON string
# killed the bridge; the broker redelivered it after each restart (MQTT 5.0 section 4.4), so no
# device got a status until someone removed the message. Any device, or anyone who can publish to
# an anonymous broker, can send these.
POISON = {
    "not_utf8_in_a_string": b'{"status":"online","session":1,"note":"\xff\xfe"}',
    "not_utf8_at_all": b"\xff\xfe\xfd",
    "session_beyond_int64": b'{"status":"online","session":1180591620717411303424}',
    "negative_session": b'{"status":"online","session":-1}',
    "nul_in_session": b'{"status":"online","session":"boot\\u00007"}',
    "time_beyond_int64": b'{"status":"online","session":1,"ts":1180591620717411303424}',
    "negative_time": b'{"status":"online","session":1,"ts":-5}',
    "deep_nesting": b'{"status":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    "not_json": b"online",
    "oversize": b'{"status":"online","pad":"' + b"x" * 70_000 + b'"}',
}
