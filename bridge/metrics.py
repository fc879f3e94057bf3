"""Prometheus metrics and the health endpoint of the bridge (no device ids as labels)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "presence_bridge_messages_received", "MQTT messages received", registry=r
        )
        self.coalesced = Counter(
            "presence_bridge_activity_coalesced",
            "activity messages acknowledged without a record (one was sent within the interval)",
            registry=r,
        )
        self.rebirth_requests = Counter(
            "presence_bridge_sparkplug_rebirth_requests",
            "NCMD rebirth requests sent to Sparkplug edge nodes whose NBIRTH was not seen",
            registry=r,
        )
        self.produced = Counter(
            "presence_bridge_records_produced",
            "messages whose records Kafka acknowledged (raw events and dead letters; a Sparkplug "
            "NDEATH and its devices' wills count once)",
            registry=r,
        )
        self.acknowledged = Counter(
            "presence_bridge_messages_acknowledged",
            "MQTT messages acknowledged (PUBACK) after Kafka had them",
            registry=r,
        )
        self.dead_letters = Counter(
            "presence_bridge_dead_letters",
            "messages sent to the dead-letter topic",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "presence_bridge_in_flight", "messages received, not yet acknowledged", registry=r
        )
        self.kafka_errors = Counter(
            "presence_bridge_kafka_errors", "failed Kafka writes", registry=r
        )
        self.reconnects = Counter(
            "presence_bridge_reconnects", "reconnections", ["broker"], registry=r
        )
        self.connected = Gauge(
            "presence_bridge_connected", "1 when connected", ["broker"], registry=r
        )
        self.outage = Gauge(
            "presence_bridge_outage",
            "1 while the broker is unreachable (Kafka: also while writes stall)",
            ["broker"],
            registry=r,
        )
        self.outages = Counter(
            "presence_bridge_outages", "outages that ended", ["broker"], registry=r
        )
        self.redelivered_unacked = Counter(
            "presence_bridge_unacked_dropped",
            "messages left unacknowledged at a disconnect (the broker redelivers them)",
            registry=r,
        )


Health = Callable[[], dict[str, bool]]


def serve(metrics: BridgeMetrics, health: Health, host: str, port: int) -> WSGIServer:
    """Serve /metrics and /health in a daemon thread; returns the server (its port is real)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [generate_latest(metrics.registry)]
        if path == "/health":
            state = health()
            ok = all(state.values())
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json")],
            )
            return [json.dumps({"healthy": ok, **state}).encode()]
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error": "not found; try /metrics or /health"}']

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server(host, port, app, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, name="bridge-http", daemon=True).start()
    return server
