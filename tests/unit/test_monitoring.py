"""The Grafana dashboard and the Prometheus alerting rules in docker/: promtool checks the rules
and runs their unit tests (docker/prometheus/alerts_test.yml), and every metric they name is one
the bridge or a worker really exports, so a renamed metric fails here, not on a quiet dashboard.

promtool is Debian's (package `prometheus`, installed by .ci/run or on first use here). Its test
file format: https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARD,
    DOCKER,
    GRAFANA,
    PROMETHEUS_CONFIG,
    as_promql,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    grouped,
    promtool,
    rules,
    selected,
)
from tests.unit.test_readme_metrics import README, expected_table

# Series Prometheus makes itself for every scrape target: the only names not from our registries
# (https://prometheus.io/docs/concepts/jobs_instances/, "Automatically generated labels and time
# series").
PROMETHEUS_BUILTINS: dict[str, set[str]] = {"up": set()}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


def exported() -> dict[str, set[str]]:
    """Every metric name the bridge and a worker expose, as scraped (`_total` on counters), with
    its labels: from the same registries the README's metric table is generated from."""
    names: dict[str, set[str]] = {}
    for line in expected_table().splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        labels = set() if cells[2] == "-" else {label.strip() for label in cells[2].split(",")}
        names[cells[0].strip("`")] = labels
    return names


def unknown_metrics(expr: str) -> list[str]:
    known = {**exported(), **PROMETHEUS_BUILTINS}
    problems = []
    for name, labels in selected(expr):
        if name not in known:
            problems.append(f"{name!r} is not exported")
        elif labels - known[name] - TARGET_LABELS:
            problems.append(f"{name} has no label {sorted(labels - known[name] - TARGET_LABELS)}")
    used = set().union(*(known.get(name, set()) for name, _ in selected(expr)))
    if grouped(expr) - used - TARGET_LABELS:
        problems.append(f"groups by labels no metric has: {sorted(grouped(expr) - used)}")
    return problems


def result_labels(expr: str) -> set[str]:
    """The labels an expression's series keep: its `by (...)` labels if it aggregates by some,
    else its metrics' own and the target's."""
    if re.search(r"\bby\s*\(", expr):
        return grouped(expr)
    return set().union(*(exported().get(name, set()) for name, _ in selected(expr))) | TARGET_LABELS


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", ALERTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_checks_the_prometheus_config_and_its_rule_file() -> None:
    done = promtool("check", "config", PROMETHEUS_CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_unit_tests_pass() -> None:
    done = promtool("test", "rules", ALERTS_TEST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_rules_unit_tests_catch_a_changed_rule(tmp_path: Path) -> None:
    # The same tests against rules whose disconnection alert waits 5 minutes instead of 1: the
    # case expecting it firing after 1 minute must fail (promtool exits 1 on a failed test).
    changed = ALERTS.read_text().replace("        for: 1m\n", "        for: 5m\n", 1)
    assert changed != ALERTS.read_text()
    (tmp_path / "alerts.yml").write_text(changed)
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST.read_text())
    done = promtool("test", "rules", tmp_path / "alerts_test.yml")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PresenceBridgeDisconnected" in done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests: dict[str, Any] = yaml.safe_load(ALERTS_TEST.read_text())
    cases = [case for group in tests["tests"] for case in group.get("alert_rule_test", [])]
    for rule in rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']} never fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']} never quiet"


def test_every_rule_has_a_severity_and_a_summary() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_every_metric_in_the_rules_is_exported() -> None:
    for rule in rules():
        assert selected(rule["expr"]), rule["alert"]
        assert unknown_metrics(rule["expr"]) == [], rule["alert"]


def test_every_metric_on_the_dashboard_is_exported() -> None:
    for panel in dashboard_panels():
        for target in panel["targets"]:
            assert selected(target["expr"]), panel["title"]
            assert unknown_metrics(target["expr"]) == [], panel["title"]


def test_a_renamed_metric_or_label_is_caught() -> None:
    assert unknown_metrics("rate(presence_bridge_messages_received_total[5m])") == []
    assert unknown_metrics("rate(presence_bridge_messages_in_total[5m])") == [
        "'presence_bridge_messages_in_total' is not exported"
    ]
    assert unknown_metrics('presence_worker_devices{state="offline"}') == [
        "presence_worker_devices has no label ['state']"
    ]
    assert unknown_metrics("sum by (reason) (presence_worker_devices)") == [
        "groups by labels no metric has: ['reason']"
    ]
    # a label value that looks like a metric name selects nothing
    assert unknown_metrics('up{job=~"presence-bridge|presence_worker_gone"} == 0') == []


def test_the_dashboard_and_the_rules_cover_what_the_issue_asks() -> None:
    used = {name for expr in dashboard_exprs() for name, _ in selected(expr)}
    for metric in (
        "presence_bridge_messages_received_total",
        "presence_bridge_records_produced_total",
        "presence_bridge_dead_letters_total",
        "presence_bridge_connected",
        "presence_worker_faust_consumer_lag",
        "presence_worker_status_changes_by_reason_total",
        "presence_worker_devices",
        "presence_worker_recovering",
    ):
        assert metric in used, metric
    assert {rule["alert"] for rule in rules()} >= {
        "PresenceBridgeDisconnected",
        "PresenceBridgeKafkaWriteFailures",
        "PresenceConsumerLagGrowing",
        "PresenceDeadLetters",
        "PresenceWorkerRecovering",
        "PresenceWorkerRestarting",
        "PresenceFleetOfflineShareJump",
    }


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    # promtool has no query parser of its own to call; a rule file with each query as a
    # recording rule makes `check rules` parse them all, as Prometheus would.
    recorded = [
        {"record": f"dashboard:query_{i}", "expr": as_promql(expr)}
        for i, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    done = promtool("check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_is_well_formed_and_uses_the_provisioned_datasource() -> None:
    board = dashboard()
    assert board["uid"] == "mqtt-presence"
    assert board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert [d["type"] for d in datasources] == ["prometheus"]
    uid = datasources[0]["uid"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["description"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend <= result_labels(target["expr"]), f"{panel['title']}: {legend}"


def test_the_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "presence.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == path
    assert DASHBOARD.parent.name == "dashboards"


@pytest.mark.parametrize("alert", [rule["alert"] for rule in rules()])
def test_the_readme_says_what_each_alert_means(alert: str) -> None:
    section = README.read_text().split("### Dashboards and alerts", 1)
    assert len(section) == 2, "README has no 'Dashboards and alerts' section"
    assert f"`{alert}`" in section[1].split("\n## ", 1)[0]
