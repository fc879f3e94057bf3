"""The doctor's EMQX checks, on the answers EMQX documents (no EMQX runs on this machine: it is
not in PyPI, Debian or Maven Central, so these are the documented shapes, not a live broker).

References: EMQX "Flapping Detect" (`flapping_detect { enable, max_count = 15, window_time = 1m,
ban_time = 5m }`; EMQX 6.3: `by_clientid`, `by_username`, `by_peerhost`, each a rule or
`none`), "Rate Limiter Configuration" (listener `max_conn_rate`, `messages_rate`, `bytes_rate`,
their bursts; over the limit EMQX pauses receiving), the REST API's `/api/v5/banned` (`data`
entries with `as`, `who`, `by`, `until`; `meta.count`) and API keys as HTTP basic auth.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from mqtt_presence.doctor.findings import EmqxAnswers, HttpAnswer, judge_emqx
from mqtt_presence.doctor.probes import probe_emqx

FLAPPING_ON = {"enable": True, "max_count": 15, "window_time": "1m", "ban_time": "5m"}
FLAPPING_63 = {
    "by_clientid": {"window_time": "1m", "max_count": 15, "ban_time": "5m"},
    "by_username": "none",
    "by_peerhost": {"window_time": "30s", "max_count": 100, "ban_time": "1m"},
}
BANNED = {
    "data": [
        {
            "as": "clientid",
            "who": "agent-0042",
            "by": "flapping detect",
            "reason": "flapping is detected",
            "at": "2026-12-03T08:00:00+00:00",
            "until": "2026-12-03T08:05:00+00:00",
        }
    ],
    "meta": {"page": 1, "limit": 100, "count": 1},
}
LISTENERS = {
    "tcp": {
        "default": {
            "bind": "0.0.0.0:1883",
            "enable": True,
            "max_conn_rate": "1000/s",
            "messages_rate": "infinity",
            "bytes_rate": "1MB/s",
        }
    },
    "ssl": {"default": {"bind": "0.0.0.0:8883", "enable": True, "max_conn_rate": "infinity"}},
    "ws": {"default": {"bind": "0.0.0.0:8083", "enable": False, "messages_rate": "10/s"}},
}


def answer(body: Any, status: int = 200) -> HttpAnswer:
    return HttpAnswer("http://emqx:18083/x", status=status, body=json.dumps(body).encode())


def by_check(answers: EmqxAnswers) -> dict[str, Any]:
    return {f.check: f for f in judge_emqx(answers)}


def test_flapping_detection_bans_and_rate_limits_are_warned_with_their_figures() -> None:
    found = by_check(EmqxAnswers(answer(FLAPPING_ON), answer(BANNED), answer(LISTENERS)))
    assert found["emqx.flapping"].status == "warn"
    assert "15 connects within 1m banned for 5m" in found["emqx.flapping"].seen
    assert found["emqx.banned"].status == "warn"
    assert "clientid agent-0042 until 2026-12-03T08:05:00+00:00 (flapping detect)" in (
        found["emqx.banned"].seen
    )
    limits = found["emqx.rate_limits"]
    assert limits.status == "warn"
    # the enabled listener's finite limits only: not "infinity", not the disabled ws listener
    tcp = {"max_conn_rate": "1000/s", "bytes_rate": "1MB/s"}
    assert limits.data == {"listeners": {"tcp:default": tcp}}


def test_emqx_6_3_rules_by_dimension_are_read() -> None:
    found = by_check(EmqxAnswers(answer(FLAPPING_63), answer(BANNED), answer(LISTENERS)))
    seen = found["emqx.flapping"].seen
    assert "by client id: 15 connects within 1m" in seen
    assert "by IP address: 100 connects within 30s" in seen
    assert "user name" not in seen


def test_a_quiet_emqx_is_ok() -> None:
    off = {"enable": False, "max_count": 15, "window_time": "1m", "ban_time": "5m"}
    none = {"data": [], "meta": {"page": 1, "limit": 100, "count": 0}}
    open_listeners = {"tcp": {"default": {"bind": "0.0.0.0:1883", "max_conn_rate": "infinity"}}}
    found = judge_emqx(EmqxAnswers(answer(off), answer(none), answer(open_listeners)))
    assert [f.status for f in found] == ["ok", "ok", "ok"]


def test_a_refused_key_or_a_wrong_address_is_said_once_per_check() -> None:
    refused = HttpAnswer("http://emqx:18083/api/v5/banned", status=401, body=b"{}")
    away = HttpAnswer("http://emqx:18083/api/v5/x", error="connection refused")
    found = judge_emqx(EmqxAnswers(refused, refused, away))
    assert [f.status for f in found] == ["warn", "warn", "warn"]
    assert "API key" in (found[0].fix or "")
    assert "18083" in (found[2].fix or "")


def test_without_an_emqx_api_nothing_is_checked() -> None:
    assert judge_emqx(None) == []


@pytest.fixture
def emqx_api() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """An HTTP server answering EMQX's documented bodies, recording path and Authorization."""
    asked: list[tuple[str, str | None]] = []
    bodies = {
        "/api/v5/configs/flapping_detect": FLAPPING_ON,
        "/api/v5/banned?limit=100": BANNED,
        "/api/v5/configs/listeners": LISTENERS,
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append((self.path, self.headers.get("Authorization")))
            body = json.dumps(bodies.get(self.path, {})).encode()
            self.send_response(200 if self.path in bodies else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", asked
    finally:
        server.shutdown()


def test_the_probe_asks_the_documented_paths_with_the_key_as_basic_auth(
    emqx_api: tuple[str, list[tuple[str, str | None]]],
) -> None:
    url, asked = emqx_api
    answers = probe_emqx(url, "key-1", "secret-1", timeout_s=3)
    expected = "Basic " + base64.b64encode(b"key-1:secret-1").decode()
    assert sorted(asked) == sorted(
        [
            ("/api/v5/configs/flapping_detect", expected),
            ("/api/v5/banned?limit=100", expected),
            ("/api/v5/configs/listeners", expected),
        ]
    )
    assert {f.check: f.status for f in judge_emqx(answers)} == {
        "emqx.flapping": "warn",
        "emqx.banned": "warn",
        "emqx.rate_limits": "warn",
    }
