"""A throwaway PostgreSQL for the tests and benchmarks of the sink: Debian's package, a cluster
made with `initdb` in a temporary folder, `pg_ctl` on 127.0.0.1 and a free port.

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user the
Debian package creates (or `nobody`), and its commands run through `runuser`. The superuser
`presence` has a random password (scram-sha-256 over TCP), so a wrong one is refused as on a
real server; `dsn` carries it.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mqtt_presence.stack.errors import BrokerStartError, ToolMissingError
from mqtt_presence.stack.ports import HOST, free_port

Progress = Callable[[str], None]
APT_PACKAGES = ("postgresql",)  # the server and its contrib modules (pg_stat_statements)
SUPERUSER = "presence"


def find_bindir() -> Path | None:
    """The newest installed server's bin folder (Debian keeps them per major version)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def ensure_installed(progress: Progress = lambda _msg: None) -> Path:
    """The server's bin folder, installing Debian's package when it is missing."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise ToolMissingError(
            f"PostgreSQL is not installed; as root run: apt-get install -y {' '.join(APT_PACKAGES)}"
        )
    progress(f"installing {', '.join(APT_PACKAGES)} with apt-get (first run only)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        [apt, "update", "-q"],
        [apt, "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise ToolMissingError(
                f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n"
                + "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            )
    bindir = find_bindir()
    if bindir is None:
        raise ToolMissingError("apt-get installed postgresql but initdb was not found")
    return bindir


def run_as() -> str | None:
    """The user the cluster runs as when we are root (PostgreSQL refuses root), else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise ToolMissingError("running as root and there is no postgres or nobody user to run as")


@dataclass
class LocalPostgres:
    """One throwaway cluster: `start()`, `dsn`, `stop()` (server only, data kept: an outage)
    and `start()` again, `destroy()` (server and data)."""

    home: Path
    bindir: Path
    port: int
    password: str
    user: str | None
    settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        progress: Progress = lambda _msg: None,
        durable: bool = True,
        settings: dict[str, str] | None = None,
    ) -> LocalPostgres:
        """initdb a new cluster in a folder of its own under the system's temp folder (pytest's
        folders are private to root, and the cluster's user must reach its folder).
        `durable=False` turns fsync off: faster, for tests that never crash the server."""
        bindir = ensure_installed(progress)
        user = run_as()
        home = Path(tempfile.mkdtemp(prefix="presence-pg-"))
        server = cls(home, bindir, free_port(), secrets.token_urlsafe(16), user)
        server.settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(home),
            "shared_preload_libraries": "pg_stat_statements",
            "max_connections": "50",
            **({} if durable else {"fsync": "off", "synchronous_commit": "off"}),
            **(settings or {}),
        }
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(home, entry.pw_uid, entry.pw_gid)
        pwfile = home / "pwfile"
        pwfile.write_text(server.password + "\n")
        if user is not None:
            os.chown(pwfile, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        progress(f"initdb a throwaway PostgreSQL cluster in {home}")
        server._run(
            "initdb",
            "-D",
            str(server.datadir),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--locale=C",
        )
        pwfile.unlink()
        return server

    @property
    def datadir(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    def dsn(self, dbname: str = "postgres", password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"host={HOST} port={self.port} dbname={dbname} user={SUPERUSER} password={secret}"

    def _command(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / tool), *args]
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def _run(self, tool: str, *args: str) -> str:
        proc = subprocess.run(
            self._command(tool, *args), capture_output=True, text=True, check=False, cwd=self.home
        )
        if proc.returncode != 0:
            log_tail = self.log.read_text().splitlines()[-15:] if self.log.exists() else []
            raise BrokerStartError(
                f"{tool} failed (exit {proc.returncode}):\n"
                + "\n".join((proc.stdout + proc.stderr).splitlines()[-15:] + log_tail)
            )
        return proc.stdout

    def start(self) -> LocalPostgres:
        options = " ".join(f"-c {key}={value}" for key, value in self.settings.items())
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.log),
            "-o",
            f"-p {self.port} {options}",
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate`: as a crash would), keeping its data."""
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def pid(self) -> int | None:
        """The postmaster's process id, while it runs."""
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.home, ignore_errors=True)

    def version(self) -> str:
        return self._run("postgres", "--version").strip()
