"""A real Prometheus (Debian's) scrapes a running bridge and a running worker, with the alerting
rules of docker/prometheus/alerts.yml loaded: presence metrics come back through its HTTP API,
every rule evaluates without error, and every dashboard query runs.

Prometheus' HTTP API: https://prometheus.io/docs/prometheus/latest/querying/api/ (instant
queries, `/api/v1/targets`, `/api/v1/rules`) and its management API `/-/ready`
(https://prometheus.io/docs/prometheus/latest/management_api/).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqtt_presence.bridge.app import Bridge
from mqtt_presence.sim.mqtt_device import status_payload
from mqtt_presence.stack import StackInfo
from mqtt_presence.stack.ports import free_port
from mqtt_presence.worker_process import WorkerProcess
from tests.monitoring import ALERTS, as_promql, dashboard_exprs, prometheus_binary, rules

from .helpers import Publisher, bridge_settings, running_bridge, unique, wait_for

DEVICES = 3


@dataclass
class Prometheus:
    url: str
    log: Path

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:  # a bad query: 400 with the error in the body
            return json.loads(err.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", f"{expr}: {answer}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False


@dataclass
class Scraped:
    prometheus: Prometheus
    bridge: Bridge
    worker: WorkerProcess
    topics: dict[str, str]


@pytest.fixture(scope="module")
def scraped(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    home = tmp_path_factory.mktemp("monitoring")
    tag = unique("mon")
    topics = {
        "raw": f"raw-{tag}",
        "status": f"status-{tag}",
        "dlq": f"dlq-{tag}",
        "ticks": f"ticks-{tag}",
        "prefix": tag,
    }
    worker = WorkerProcess.start(
        stack.kafka_bootstrap, home, topics, f"app-{tag}", partitions=4
    ).wait_ready()
    settings = bridge_settings(
        stack,
        raw_topic=topics["raw"],
        dlq_topic=topics["dlq"],
        topic_prefix=tag,
        partitions=4,
        http_port=0,
    )
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        with running_bridge(settings) as bridge:
            assert bridge.http_port is not None
            # A throwaway Prometheus: its own config and data under the test's folder, on a
            # free loopback port, scraping both every second and evaluating the rules as often.
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": "presence-bridge",
                        "static_configs": [{"targets": [f"127.0.0.1:{bridge.http_port}"]}],
                    },
                    {
                        "job_name": "presence-worker",
                        "static_configs": [{"targets": [f"127.0.0.1:{worker.port}"]}],
                    },
                ],
            }
            (home / "prometheus.yml").write_text(yaml.safe_dump(config))
            port = free_port()
            log = home / "prometheus.log"
            with log.open("wb") as out:
                prometheus = subprocess.Popen(
                    [
                        str(prometheus_binary("prometheus")),
                        f"--config.file={home / 'prometheus.yml'}",
                        f"--storage.tsdb.path={home / 'prometheus-data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            server = Prometheus(f"http://127.0.0.1:{port}", log)

            def ready() -> bool:
                assert prometheus is not None
                assert prometheus.poll() is None, log.read_text()[-3000:]
                return server.ready()

            wait_for(ready, 30, "Prometheus to be ready")
            publisher = Publisher(stack)
            for n in range(DEVICES):
                publisher.publish(f"{tag}/dev-{n}/status", status_payload("online", 1))
            publisher.close()
            yield Scraped(server, bridge, worker, topics)
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(30)
        worker.stop()


def test_prometheus_scrapes_the_bridge_and_the_worker(scraped: Scraped) -> None:
    p = scraped.prometheus

    def both_up() -> bool:
        up = {r["metric"]["job"]: r["value"][1] for r in p.query("up")}
        return up == {"presence-bridge": "1", "presence-worker": "1"}

    wait_for(both_up, 20, "both targets up")
    wait_for(
        lambda: (p.value("presence_bridge_records_produced_total") or 0) >= DEVICES,
        20,
        "the bridge's records in Prometheus",
    )
    assert p.value('presence_bridge_connected{broker="mqtt"}') == 1
    wait_for(
        lambda: (p.value('presence_worker_status_changes_total{status="online"}') or 0) >= DEVICES,
        30,
        "the worker's status changes in Prometheus",
    )
    assert p.value('presence_worker_status_changes_by_reason_total{reason="birth"}') == DEVICES
    wait_for(
        lambda: p.value('sum(presence_worker_devices{status="online"})') == DEVICES,
        20,
        "the worker's device counts in Prometheus",
    )
    assert p.value("max(presence_worker_recovering)") == 0
    lagging = {r["metric"]["topic"] for r in p.query("presence_worker_faust_consumer_lag")}
    assert scraped.topics["raw"] in lagging


def test_the_alerting_rules_evaluate_on_real_data(scraped: Scraped) -> None:
    p = scraped.prometheus
    names = {rule["alert"] for rule in rules()}

    def all_evaluated() -> bool:
        groups = p.get("/api/v1/rules")["data"]["groups"]
        loaded = [rule for group in groups for rule in group["rules"]]
        return {rule["name"] for rule in loaded} == names and all(
            rule["health"] == "ok" and not rule["lastEvaluation"].startswith("0001")
            for rule in loaded
        )

    wait_for(all_evaluated, 30, "every rule evaluated, healthy")
    # A healthy pipeline: nothing fires, and the disconnection rule's own expression, evaluated
    # through the API, selects the connected bridge's series and finds none at 0.
    firing = [a for a in p.get("/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"]
    assert firing == []
    disconnected = next(r for r in rules() if r["alert"] == "PresenceBridgeDisconnected")
    assert p.query(disconnected["expr"]) == []
    assert p.query('presence_bridge_connected{broker="mqtt"} == 1')
    # and the offline-share rule's current share, from the worker's device counts: none offline
    share = 'sum(presence_worker_devices{status="offline"}) / sum(presence_worker_devices)'
    assert share in " ".join(
        next(r for r in rules() if r["alert"] == "PresenceFleetOfflineShareJump")["expr"].split()
    )
    assert p.value(share) == 0


def test_every_dashboard_query_runs(scraped: Scraped) -> None:
    p = scraped.prometheus
    for expr in dashboard_exprs():
        p.query(as_promql(expr))  # asserts success: Prometheus parsed and evaluated it
    assert p.query('sum by (status) (presence_worker_devices{job="presence-worker"})')
