"""Java programs of the local stack (Kafka, HiveMQ CE) resolved from Maven Central.

Nothing is built or copied into this repository: Maven resolves the artifacts a bundled POM names
into its own local repository (~/.m2), and the class path it prints is cached by the POM's hash.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from mqtt_presence.stack.errors import StackError, ToolMissingError
from mqtt_presence.stack.logs import tail

Progress = Callable[[str], None]
JAVA_HINT = "install a JDK 17 or newer (Debian: apt-get install openjdk-17-jdk-headless)"


def resource(name: str) -> bytes:
    """A file bundled with the stack (a POM, a launcher, a logging config)."""
    return (resources.files("mqtt_presence.stack") / name).read_bytes()


def pom_property(pom_name: str, prop: str) -> str:
    """A property of a bundled POM (the version it asks Maven for)."""
    pom = resource(pom_name).decode()
    start = pom.index(f"<{prop}>") + len(prop) + 2
    return pom[start : pom.index("<", start)]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mqtt-presence"


def require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissingError(f"`{tool}` was not found on PATH: {hint}")
    return path


def require_java() -> str:
    return require("java", JAVA_HINT)


def resolve_classpath(
    pom: bytes, name: str, title: str, progress: Progress = lambda _msg: None
) -> list[Path]:
    """The runtime class path of what `pom` depends on, resolved once (`name` keys the cache,
    `title` is what the progress line calls it)."""
    digest = hashlib.sha256(pom).hexdigest()[:16]
    cached = cache_dir() / f"{name}-classpath-{digest}.txt"
    if cached.exists():
        jars = [Path(p) for p in cached.read_text().split(os.pathsep) if p]
        if jars and all(j.exists() for j in jars):
            return jars
    mvn = require("mvn", "install Apache Maven (Debian: apt-get install maven)")
    require_java()
    work = cache_dir() / f"{name}-pom-{digest}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_bytes(pom)
    out = work / "classpath.txt"
    log = work / "maven.log"
    progress(f"resolving {title} from Maven Central (first run only; log: {log})")
    with log.open("wb") as sink:
        proc = subprocess.run(
            [
                mvn,
                "-B",
                "-f",
                str(work / "pom.xml"),
                "dependency:build-classpath",
                f"-Dmdep.outputFile={out}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if proc.returncode != 0 or not out.exists():
        raise StackError(
            f"Maven could not resolve {title} (exit {proc.returncode}); last lines of {log}:\n"
            + tail(log)
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out, cached)
    return [Path(p) for p in out.read_text().split(os.pathsep) if p]
