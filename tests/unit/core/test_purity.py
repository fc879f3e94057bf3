"""The core stays pure: no faust, paho or kafka, not even indirectly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mqtt_presence.core
from tests.unit.imports import imported_modules

FORBIDDEN = ("faust", "mode", "paho", "kafka", "aiokafka", "asyncio", "socket", "time", "random")
CORE = Path(mqtt_presence.core.__file__).parent


def test_no_module_of_the_core_imports_io_or_frameworks() -> None:
    offenders = []
    for path in sorted(CORE.glob("*.py")):
        names = imported_modules(path)
        offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_importing_the_core_loads_no_framework() -> None:
    code = (
        "import sys, mqtt_presence.core; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('faust', 'paho', 'kafka', 'aiokafka', 'mode')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
