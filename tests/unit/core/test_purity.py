"""The core stays pure: no faust, paho or kafka, not even indirectly."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mqtt_presence.core

FORBIDDEN = ("faust", "mode", "paho", "kafka", "aiokafka", "asyncio", "socket", "time", "random")
CORE = Path(mqtt_presence.core.__file__).parent


def test_no_module_of_the_core_imports_io_or_frameworks() -> None:
    offenders = []
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
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
