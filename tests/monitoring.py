"""What the monitoring tests share: Debian's Prometheus (promtool and the server, installed with
apt-get on first use, as the local stack installs Mosquitto), the files in docker/, and the
metric names a PromQL expression selects."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"
ALERTS = DOCKER / "prometheus" / "alerts.yml"
ALERTS_TEST = DOCKER / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
GRAFANA = DOCKER / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "mqtt-presence.json"

APT_PACKAGE = "prometheus"  # Debian's: /usr/bin/prometheus and /usr/bin/promtool


def prometheus_binary(name: str) -> Path:
    """`promtool` or `prometheus`, installed with apt-get (Debian's `prometheus`) if missing."""
    found = shutil.which(name)
    if found is None:
        apt = shutil.which("apt-get")
        if apt is None:
            raise RuntimeError(f"{name} is missing and there is no apt-get to install it")
        prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            [apt, "update", "-q"],
            [apt, "install", "-y", "-q", "--no-install-recommends", APT_PACKAGE],
        ):
            done = subprocess.run(
                [*prefix, *cmd], check=False, capture_output=True, text=True, env=env
            )
            assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}"
        found = shutil.which(name)
        assert found is not None, f"apt-get installed {APT_PACKAGE} but {name} is not on PATH"
    return Path(found)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = prometheus_binary("promtool")
    command = [str(binary), *map(str, args)]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)


def rules() -> list[dict[str, Any]]:
    loaded: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p["targets"]]


# Grafana's own variables in a query ($__rate_interval, ...), given a value Prometheus accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def as_promql(expr: str) -> str:
    """A dashboard query as Prometheus itself would get it from Grafana."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


# PromQL words that look like names but select nothing.
KEYWORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring"}
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"


def selected(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every series selector in a PromQL expression."""
    text = as_promql(expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries: [5m], [1h:1m]
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found: list[tuple[str, set[str]]] = []
    pattern = rf'(?<![\w.])({NAME})?\s*(\{{(?:[^}}"]|"(?:[^"\\]|\\.)*")*\}})?(\s*\()?'
    for match in re.finditer(pattern, text):
        name, braces, call = match.group(1), match.group(2), match.group(3)
        if name is None and braces is None:
            continue
        if name is not None and (call or name in KEYWORDS):
            continue  # a function or an aggregation, or an operator word
        labels = set(re.findall(rf"({NAME})\s*(?:=~|!~|!=|=)", braces or ""))
        names = re.findall(r'__name__\s*=\s*"([^"]*)"', braces or "")
        found.append((name or (names[0] if names else ""), labels - {"__name__"}))
    return found


def grouped(expr: str) -> set[str]:
    """Label names an expression groups or matches on: by (...), without (...), on (...), ..."""
    clauses = re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", as_promql(expr)
    )
    return {label.strip() for clause in clauses for label in clause.split(",") if label.strip()}
