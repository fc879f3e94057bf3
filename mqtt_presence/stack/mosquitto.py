"""Eclipse Mosquitto for the local stack: Debian's package, a config we generate, loopback only."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from mqtt_presence.stack.errors import BrokerStartError, ToolMissingError
from mqtt_presence.stack.logs import tail
from mqtt_presence.stack.ports import HOST
from mqtt_presence.stack.processes import spawn
from mqtt_presence.stack.tls import Issued

Progress = Callable[[str], None]
SBIN = Path("/usr/sbin/mosquitto")
APT_PACKAGES = ("mosquitto", "mosquitto-clients")


def find_binary() -> Path | None:
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    return SBIN if SBIN.exists() else None


def ensure_installed(progress: Progress = lambda _msg: None) -> Path:
    """The mosquitto binary, installing Debian's package when it is missing."""
    binary = find_binary()
    if binary is not None:
        return binary
    apt = shutil.which("apt-get")
    if apt is None:
        raise ToolMissingError(
            "mosquitto is not installed and there is no apt-get to install it; "
            "install Eclipse Mosquitto 2.x and put it on PATH"
        )
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise ToolMissingError(
                "mosquitto is not installed; as root run: "
                f"apt-get install -y {' '.join(APT_PACKAGES)}"
            )
        prefix = [sudo, "-n"]
    progress(f"installing {', '.join(APT_PACKAGES)} with apt-get (first run only)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        [apt, "update", "-q"],
        [apt, "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES],
    ):
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise ToolMissingError(
                f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n"
                + "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            )
    binary = find_binary()
    if binary is None:
        raise ToolMissingError("apt-get installed mosquitto but its binary was not found")
    return binary


def version(binary: Path) -> str:
    proc = subprocess.run([str(binary), "-h"], capture_output=True, text=True, check=False)
    first = (proc.stdout or proc.stderr).splitlines()[:1]
    return first[0].replace("mosquitto version", "").strip() if first else "unknown"


# How often Mosquitto writes its in-memory database (sessions, queued messages, retained ones)
# to disk: after this many changes (on_changes) or seconds. Measured by
# bench/mosquitto_persistence.py (kill -9 right after the last PUBACK): every second lost every
# message of a short burst (2,000 of 2,000) and 9,756 of 100,000; every 100 changes lost 2, at
# the same publish rate up to a backlog of 20,000 and 0.31 of it at 100,000 (each save writes the
# whole database). Every 1,000 changes lost a trickle of 300 entirely (never saved).
AUTOSAVE_INTERVAL = 100
AUTOSAVE_ON_CHANGES = True


@dataclass(frozen=True)
class Secured:
    """A secured broker: TLS with a password on `port` (users in `password_file`, what each may
    do in `acl_file`), and TLS with a required client certificate on `mtls_port`, where the
    certificate's common name is the user name."""

    ca: Path
    server: Issued
    mtls_port: int
    password_file: Path
    acl_file: Path


def listeners(port: int, secured: Secured | None) -> list[str]:
    if secured is None:
        return [f"listener {port} {HOST}", "allow_anonymous true"]
    tls = [
        f"cafile {secured.ca}",
        f"certfile {secured.server.cert}",
        f"keyfile {secured.server.key}",
        "tls_version tlsv1.2",  # the oldest version accepted
    ]
    return [
        "allow_anonymous false",
        f"password_file {secured.password_file}",
        f"acl_file {secured.acl_file}",
        f"listener {port} {HOST}",
        *tls,
        f"listener {secured.mtls_port} {HOST}",
        *tls,
        "require_certificate true",
        "use_identity_as_username true",
    ]


def write_users(secured: Secured, users: dict[str, str], acl: str) -> None:
    """The password file (hashed by mosquitto_passwd, the broker's own tool) and the ACL."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    secured.password_file.unlink(missing_ok=True)
    secured.password_file.touch(mode=0o600)
    for user, password in users.items():
        proc = subprocess.run(
            [tool, "-b", str(secured.password_file), user, password],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BrokerStartError(f"mosquitto_passwd failed for user {user}: {proc.stderr}")
    secured.acl_file.write_text(acl)
    os.chmod(secured.acl_file, 0o600)


def config_text(
    home: Path,
    port: int,
    extra: str = "",
    autosave_interval: int = AUTOSAVE_INTERVAL,
    autosave_on_changes: bool = AUTOSAVE_ON_CHANGES,
    secured: Secured | None = None,
) -> str:
    """The broker config; every value that differs from Mosquitto's default says why."""
    data = home / "mosquitto-data"
    return "\n".join(
        [
            "# Generated by `presence stack up`; edits are overwritten.",
            "per_listener_settings false",
            # Run as the user who started the stack: as root, mosquitto would otherwise switch to
            # the `mosquitto` user and could not write its log and database in the stack's home.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            *listeners(port, secured),
            # Persistent sessions (the bridge's Clean Start = 0) survive a broker restart.
            "persistence true",
            f"persistence_location {data}/",
            # Write the in-memory database after every 100 changes, not every 30 minutes:
            # every message acknowledged to a device is on disk but the last few (see above).
            f"autosave_interval {autosave_interval}",
            f"autosave_on_changes {'true' if autosave_on_changes else 'false'}",
            # Default 1000: a persistent session that is offline longer than a burst of 1000
            # lifecycle messages silently loses the rest. A reconnect storm of 100k births must
            # fit. 0 = no limit
            # by count; max_queued_bytes caps the memory instead (256 MiB).
            "max_queued_messages 0",
            "max_queued_bytes 268435456",
            # Default 20: outgoing QoS 1 messages in flight per client. The bridge acknowledges only
            # after Kafka did, so a small window caps its rate at 20 / Kafka round trip.
            "max_inflight_messages 1000",
            # Lower latency for small lifecycle messages (no Nagle delay on the broker's side).
            "set_tcp_nodelay true",
            "log_dest file " + str(home / "mosquitto.log"),
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            extra,
            "",
        ]
    )


def prepare(
    home: Path, port: int, extra: str = "", secured: Secured | None = None, **autosave: Any
) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "mosquitto-data").mkdir(exist_ok=True)
    config = home / "mosquitto.conf"
    config.write_text(config_text(home, port, extra, secured=secured, **autosave))
    return config


@dataclass(frozen=True)
class Login:
    """How a client proves itself to a secured broker: the CA to check it, a user."""

    ca: Path
    username: str
    password: str

    def apply(self, client: mqtt.Client) -> None:
        client.tls_set(ca_certs=str(self.ca))
        client.username_pw_set(self.username, self.password)


def start(binary: Path, home: Path, config: Path) -> subprocess.Popen[bytes]:
    return spawn([str(binary), "-c", str(config)], home / "mosquitto.stdout", cwd=home)


def wait_ready(
    port: int,
    alive: Callable[[], bool],
    log: Path,
    timeout: float = 20.0,
    login: Login | None = None,
) -> None:
    """Wait until a real MQTT CONNECT is accepted (CONNACK 0)."""

    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if not alive():
            raise BrokerStartError(
                f"mosquitto exited during start-up; last lines of {log}:\n{tail(log)}"
            )
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="presence-stack-probe", protocol=mqtt.MQTTv5
        )
        if login is not None:
            login.apply(client)
        try:
            client.connect(HOST, port, keepalive=5)
            for _ in range(20):  # read the CONNACK: a listening socket alone is not "ready"
                client.loop(timeout=0.1)
                if client.is_connected():
                    client.disconnect()
                    return
            last = "no CONNACK"
        except OSError as exc:
            last = repr(exc)
            time.sleep(0.1)
    raise BrokerStartError(
        f"mosquitto on {HOST}:{port} was not ready after {timeout:.0f} s "
        f"({last}); last lines of {log}:\n{tail(log)}"
    )
