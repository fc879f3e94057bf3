"""The MQTT brokers a local stack can run, behind one small interface.

Mosquitto is the default (Debian's package). HiveMQ Community Edition (Maven Central, on the
JDK Kafka already uses) and RabbitMQ with its MQTT plugin (Debian's package) are there so that
the pipeline is tried against the brokers platform teams run, not only against one: when a stale
will arrives, whether a takeover publishes a will, and how QoS 1 is redelivered are broker
behaviour. Each broker runs from the stack's home folder, on 127.0.0.1, with its sessions and
retained messages kept on disk, and is stopped by the pid the stack recorded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Protocol

import paho.mqtt.client as mqtt

from mqtt_presence.stack.errors import BrokerStartError, ToolMissingError
from mqtt_presence.stack.logs import tail
from mqtt_presence.stack.ports import HOST
from mqtt_presence.stack.processes import stop_pid

Progress = Callable[[str], None]


class Login(Protocol):
    """How a client proves itself to a secured broker (`mosquitto.Login`)."""

    def apply(self, client: mqtt.Client) -> None: ...


class MqttBroker(ABC):
    """One kind of broker: how to install it, start it in a home folder and know it is up."""

    name: ClassVar[str]  # as `presence stack up --broker` names it
    title: ClassVar[str]  # as people write it
    marker: ClassVar[str]  # a word of its process's command line (to stop exactly that pid)
    data_dirs: ClassVar[tuple[str, ...]]  # what `stack down --purge` removes from the home
    log_name: ClassVar[str]  # its log file in the home
    mqtt5: ClassVar[bool]  # speaks MQTT 5 (else 3.1.1 only)

    @abstractmethod
    def install(self, progress: Progress) -> None:
        """Make it runnable (from apt or Maven on first use); raise ToolMissingError if not."""

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def start(self, home: Path, port: int) -> subprocess.Popen[bytes]:
        """Write its configuration and start it, listening on 127.0.0.1:`port` only."""

    def wait_ready(
        self, home: Path, port: int, alive: Callable[[], bool], timeout: float = 60.0
    ) -> None:
        wait_for_connack(self.title, port, alive, home / self.log_name, timeout, mqtt5=self.mqtt5)

    def run(self, home: Path, port: int) -> int:
        """Start it and wait for a real CONNACK; the pid to record. One that never gets ready
        is stopped again before the error is raised."""
        proc = self.start(home, port)
        try:
            self.wait_ready(home, port, lambda: proc.poll() is None)
            return self.running_pid(home, proc)
        except BaseException:
            stop_pid(proc.pid, self.marker, timeout=10)
            raise

    def running_pid(self, home: Path, proc: subprocess.Popen[bytes]) -> int:
        """The pid to record, signal and stop, once it is ready (the process itself, unless
        what was started is a wrapper of it)."""
        return proc.pid


def apt_install(packages: tuple[str, ...], what: str, progress: Progress) -> None:
    """Install Debian packages (as root, or with sudo -n), without starting their system-wide
    services' side effects being ours to care about: the stack runs its own instances."""
    apt = shutil.which("apt-get")
    if apt is None:
        raise ToolMissingError(
            f"{packages[0]} is not installed and there is no apt-get to install it; "
            f"install {what} and put it on PATH"
        )
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise ToolMissingError(
                f"{packages[0]} is not installed; as root run: "
                f"apt-get install -y {' '.join(packages)}"
            )
        prefix = [sudo, "-n"]
    progress(f"installing {', '.join(packages)} with apt-get (first run only)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        [apt, "update", "-q"],
        [apt, "install", "-y", "-q", "--no-install-recommends", *packages],
    ):
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise ToolMissingError(
                f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n"
                + "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            )


def wait_for_connack(
    title: str,
    port: int,
    alive: Callable[[], bool],
    log: Path,
    timeout: float = 60.0,
    login: Login | None = None,
    mqtt5: bool = True,
) -> None:
    """Wait until a real MQTT CONNECT is accepted (CONNACK 0): a listening socket alone is not
    "ready" (HiveMQ and RabbitMQ open theirs before they accept sessions)."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if not alive():
            raise BrokerStartError(
                f"{title} exited during start-up; last lines of {log}:\n{tail(log)}"
            )
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="presence-stack-probe",
            protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311,
        )
        if login is not None:
            login.apply(client)
        try:
            client.connect(HOST, port, keepalive=5)
            for _ in range(20):
                client.loop(timeout=0.1)
                if client.is_connected():
                    client.disconnect()
                    return
            last = "no CONNACK"
        except OSError as exc:
            last = repr(exc)
            time.sleep(0.2)
    raise BrokerStartError(
        f"{title} on {HOST}:{port} was not ready after {timeout:.0f} s "
        f"({last}); last lines of {log}:\n{tail(log)}"
    )
