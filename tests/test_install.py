"""Installing the project says nothing alarming (issue: a newcomer's `pip install -e .` printed a
long setuptools warning), and a wheel carries every file the parts read at run time."""

from __future__ import annotations

import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALARMING = re.compile(r"warning|deprecat|!!|\berror\b", re.IGNORECASE)


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )


def test_an_editable_install_into_a_fresh_virtualenv_prints_no_warning(tmp_path: Path) -> None:
    # The pip of the project's own virtualenv (`make install` upgrades it: a newer pip shows the
    # build backend's notices), installing into a fresh one.
    venv.create(tmp_path / "venv", with_pip=False)
    python = tmp_path / "venv" / "bin" / "python"
    result = _pip(
        Path(sys.executable), "--python", str(python), "install", "--no-deps", "-e", str(ROOT)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    loud = [line for line in (result.stdout + result.stderr).splitlines() if ALARMING.search(line)]
    assert loud == [], "\n".join(loud)
    # what it installed is the checkout: one import root, the parts through it
    check = subprocess.run(
        [
            str(python),
            "-c",
            "import mqtt_presence.bridge, mqtt_presence.streams; print(mqtt_presence.__file__)",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert check.stdout.strip() == str(ROOT / "mqtt_presence" / "__init__.py"), check.stderr


def test_the_wheel_carries_the_parts_schemas_and_stack_files(tmp_path: Path) -> None:
    result = _pip(Path(sys.executable), "wheel", "--no-deps", "-w", str(tmp_path), str(ROOT))
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("mqtt_presence-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "mqtt_presence/bridge/app.py",
        "mqtt_presence/streams/app.py",
        "mqtt_presence/core/schemas/presence.raw.v1.json",
        "mqtt_presence/core/schemas/presence.status.v1.json",
        "mqtt_presence/stack/pom.xml",
        "mqtt_presence/stack/log4j2.properties",
    ):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "bench/", "bridge/", "streams/")) for n in names)
