"""What `presence doctor` concludes from what its probes saw. Pure: observations in, findings out.

Each probe (see `probes`) reports an observation (an address resolved, a CONNACK reason code, a
topic described, a metrics page, ...) or the error that stopped it; each `judge_*` function here
turns observations into `Finding`s: a check's id, its status, what was seen and what to fix.
The steps follow field report A's order of diagnosis: the network first, then the broker (its
subscriptions, ACLs, limits), then Kafka and what the consumers do.

Statuses: `ok`; `warn` (works, but something deserves a look; the exit status stays 0); `fail`
(broken: exit status 1); `skip` (not tried, because a check it needs failed or it was not asked
for; the finding says which).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from prometheus_client.parser import text_string_to_metric_families

Status = Literal["ok", "warn", "fail", "skip"]
STEPS = {
    1: "reach MQTT and Kafka",
    2: "subscribe, and a QoS 1 round trip",
    3: "the MQTT broker's limits",
    4: "Kafka topics",
    5: "the bridge's and the workers' health",
    6: "dead letters and flapping devices",
}
# Every probe message's device id starts with this: the DLQ check leaves them out.
PROBE_MARK = "presence-doctor-"


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    step: int
    check: str  # a stable id for scripts: mqtt.tcp, kafka.topic.status, worker.lag, ...
    status: Status
    seen: str  # what was observed, in the operator's words
    fix: str | None = None  # what to do about it (warn and fail)
    data: dict[str, Any] = {}  # figures for scripts (round_trip_ms, lag, counts)


def exit_status(findings: Iterable[Finding]) -> int:
    """1 when a check failed, else 0 (warnings alone do not fail the doctor)."""
    return 1 if any(f.status == "fail" for f in findings) else 0


def to_json(findings: Sequence[Finding]) -> bytes:
    counts = Counter(f.status for f in findings)
    return msgspec.json.encode(
        {
            "healthy": exit_status(findings) == 0,
            "exit_status": exit_status(findings),
            "counts": {s: counts.get(s, 0) for s in ("ok", "warn", "fail", "skip")},
            "findings": list(findings),
        }
    )


def skipped(step: int, check: str, because: str) -> Finding:
    return Finding(step=step, check=check, status="skip", seen=f"not tried: {because}")


# --- step 1: reach -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """DNS, TCP and (when configured) TLS towards one endpoint, as far as they got."""

    host: str
    port: int
    addresses: tuple[str, ...] = ()
    dns_error: str | None = None
    tcp_ms: float | None = None
    tcp_error: str | None = None
    tls_wanted: bool = False
    tls_version: str | None = None
    tls_error: str | None = None
    tls_untrusted: bool = False  # the error is a certificate this client does not trust


def judge_reach(system: str, reach: Reach, what: str) -> list[Finding]:
    """`system`: mqtt or kafka (the checks' prefix); `what`: where the address comes from, for
    the fixes (`mqtt_url in [bridge]`)."""
    where = f"{reach.host}:{reach.port}"
    out: list[Finding] = []
    dns, tcp, tls = f"{system}.dns", f"{system}.tcp", f"{system}.tls"
    if reach.dns_error is not None:
        out.append(
            Finding(
                step=1,
                check=dns,
                status="fail",
                seen=f"{reach.host} does not resolve: {reach.dns_error}",
                fix=f"check the host name in {what}, and this machine's DNS (/etc/resolv.conf)",
            )
        )
        out.append(skipped(1, tcp, f"{reach.host} does not resolve"))
        if reach.tls_wanted:
            out.append(skipped(1, tls, f"{reach.host} does not resolve"))
        return out
    out.append(
        Finding(
            step=1,
            check=dns,
            status="ok",
            seen=f"{reach.host} resolves to {', '.join(reach.addresses) or reach.host}",
        )
    )
    if reach.tcp_error is not None:
        refused = "refused" in reach.tcp_error.lower()
        out.append(
            Finding(
                step=1,
                check=tcp,
                status="fail",
                seen=f"no TCP connection to {where}: {reach.tcp_error}",
                fix=(
                    f"nothing listens on port {reach.port} there: check the port in {what} "
                    "and that the broker runs"
                    if refused
                    else f"a firewall or a route drops the packets, or the host is down: check "
                    f"{what}, then the network between here and {reach.host}"
                ),
            )
        )
        if reach.tls_wanted:
            out.append(skipped(1, tls, f"no TCP connection to {where}"))
        return out
    ms = reach.tcp_ms or 0.0
    out.append(
        Finding(
            step=1,
            check=tcp,
            status="ok" if ms < 500 else "warn",
            seen=f"TCP connection to {where} in {ms:.1f} ms",
            fix=None if ms < 500 else "a slow network: look at the route and the host's load",
            data={"connect_ms": round(ms, 2)},
        )
    )
    if not reach.tls_wanted:
        return out
    if reach.tls_error is not None:
        out.append(
            Finding(
                step=1,
                check=tls,
                status="fail",
                seen=f"TLS handshake with {where} failed: {reach.tls_error}",
                fix=(
                    "the broker's certificate is not signed by the CA this client trusts, has "
                    "expired or names another host: check the CA file in the configuration"
                    if reach.tls_untrusted
                    else "is it a TLS listener? Does it want a client certificate?"
                ),
            )
        )
    else:
        out.append(
            Finding(
                step=1,
                check=tls,
                status="ok",
                seen=f"TLS handshake with {where}: {reach.tls_version}",
            )
        )
    return out


# MQTT 5.0, section 3.2.2.2 (CONNACK) and 3.9.3 (SUBACK): reason codes and what to do.
CONNACK_NAMES = {
    0x00: "Success",
    0x80: "Unspecified error",
    0x81: "Malformed Packet",
    0x82: "Protocol Error",
    0x83: "Implementation specific error",
    0x84: "Unsupported Protocol Version",
    0x85: "Client Identifier not valid",
    0x86: "Bad User Name or Password",
    0x87: "Not authorized",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x8A: "Banned",
    0x8C: "Bad authentication method",
    0x90: "Topic Name invalid",
    0x95: "Packet too large",
    0x97: "Quota exceeded",
    0x99: "Payload format invalid",
    0x9A: "Retain not supported",
    0x9B: "QoS not supported",
    0x9C: "Use another server",
    0x9D: "Server moved",
    0x9F: "Connection rate exceeded",
}
CONNACK_FIXES = {
    0x84: "the broker does not speak MQTT 5, which the bridge needs (Mosquitto 2, EMQX 4+)",
    0x85: "the broker refuses the client id: check its rules for client ids",
    0x86: "check username and password ([bridge] username, password or password_file, "
    "PRESENCE_BRIDGE_PASSWORD)",
    0x87: "the broker refuses this user (anonymous, when none is given and allow_anonymous is "
    "false): give the bridge's username and password or client certificate",
    0x88: "the broker is not serving clients: look at its log",
    0x89: "the broker is overloaded or at its connection limit (max_connections; EMQX's "
    "max_conn_rate): raise the limit or spread the clients",
    0x8A: "the broker bans this client (EMQX's flapping detection bans a client id that "
    "connects too often, report A): lift the ban and find out why it reconnects",
    0x8C: "the broker wants another authentication method",
    0x97: "a quota of the broker is used up: see its limits",
    0x9C: "the broker sends clients elsewhere: point mqtt_url at the server it names",
    0x9D: "the broker has moved: point mqtt_url at the server it names",
    0x9F: "the broker's connection rate limit (EMQX max_conn_rate): connect less often, or "
    "raise the limit",
}
SUBACK_NAMES = {
    0x00: "Granted QoS 0",
    0x01: "Granted QoS 1",
    0x02: "Granted QoS 2",
    0x80: "Unspecified error",
    0x83: "Implementation specific error",
    0x87: "Not authorized",
    0x8F: "Topic Filter invalid",
    0x91: "Packet Identifier in use",
    0x97: "Quota exceeded",
    0x9E: "Shared Subscriptions not supported",
    0xA1: "Subscription Identifiers not supported",
    0xA2: "Wildcard Subscriptions not supported",
}
SUBACK_FIXES = {
    0x80: "the broker gives no reason: look at its log and ACL for this user",
    0x83: "the broker refused it for a reason of its own: look at its log",
    0x87: "the broker's ACL does not let this user read the filter: grant read on it",
    0x8F: "the broker does not accept this filter: check the profile's topic",
    0x97: "a subscription quota of the broker is used up (EMQX max_subscriptions)",
    0x9E: "the broker has no shared subscriptions: drop shared_group",
    0xA2: "the broker has no wildcard subscriptions: name topics without + and #",
}


def code_name(code: int, names: Mapping[int, str]) -> str:
    return f"{names.get(code, 'reason')} (0x{code:02X})"


@dataclass(frozen=True)
class Connack:
    """The broker's answer to our CONNECT; `code` None when none came (`error` says why)."""

    code: int | None
    user: str | None
    error: str | None = None


def judge_connack(connack: Connack | None, url: str) -> list[Finding]:
    if connack is None:
        return [skipped(1, "mqtt.login", f"no connection to {url}")]
    who = f"user {connack.user!r}" if connack.user else "no user (anonymous)"
    if connack.code is None:
        return [
            Finding(
                step=1,
                check="mqtt.login",
                status="fail",
                seen=f"no CONNACK from {url} as {who}: {connack.error}",
                fix="is it an MQTT listener (and TLS where it wants TLS)? Look at the broker's "
                "log for this connection",
            )
        ]
    if connack.code >= 0x80:
        return [
            Finding(
                step=1,
                check="mqtt.login",
                status="fail",
                seen=f"the broker refused {who}: CONNACK {code_name(connack.code, CONNACK_NAMES)}",
                fix=CONNACK_FIXES.get(connack.code, "look at the broker's log"),
                data={"connack": connack.code},
            )
        ]
    return [
        Finding(
            step=1,
            check="mqtt.login",
            status="ok",
            seen=f"MQTT 5 session accepted for {who}: CONNACK Success (0x00)",
            data={"connack": 0},
        )
    ]


@dataclass(frozen=True)
class KafkaLogin:
    """`check_access`'s verdict (TLS trust and SASL login), and the cluster as described."""

    protocol: str
    user: str | None
    access_error: str | None = None
    cluster_id: str | None = None
    brokers: int = 0
    cluster_error: str | None = None


def judge_kafka_login(login: KafkaLogin | None, bootstrap: str) -> list[Finding]:
    if login is None:
        return [
            skipped(1, "kafka.login", f"no connection to {bootstrap}"),
            skipped(1, "kafka.cluster", f"no connection to {bootstrap}"),
        ]
    out: list[Finding] = []
    if login.access_error is not None:
        out.append(
            Finding(
                step=1,
                check="kafka.login",
                status="fail",
                seen=login.access_error,
                fix="fix the [kafka] security settings this names",
            )
        )
        out.append(skipped(1, "kafka.cluster", "Kafka refuses this client"))
        return out
    if login.protocol == "PLAINTEXT":
        seen = "PLAINTEXT: no TLS and no login configured"
    elif login.protocol.startswith("SASL"):
        seen = f"{login.protocol}: user {login.user!r} accepted"
    else:
        seen = f"{login.protocol}: certificates accepted both ways"
    out.append(Finding(step=1, check="kafka.login", status="ok", seen=seen))
    if login.cluster_error is not None:
        out.append(
            Finding(
                step=1,
                check="kafka.cluster",
                status="fail",
                seen=f"Kafka at {bootstrap} did not describe its cluster: {login.cluster_error}",
                fix="the address answers but no Kafka does there: check bootstrap in [kafka], "
                "security_protocol, and the brokers' advertised.listeners (clients connect to "
                "the addresses the brokers advertise)",
            )
        )
    else:
        out.append(
            Finding(
                step=1,
                check="kafka.cluster",
                status="ok",
                seen=f"{login.brokers} broker(s), cluster id {login.cluster_id}",
                data={"brokers": login.brokers},
            )
        )
    return out


# --- step 2: subscribe and round trip ----------------------------------------------------------


@dataclass(frozen=True)
class Suback:
    """The SUBACK's reason code for each of the bridge's filters (empty: none came)."""

    codes: tuple[tuple[str, int], ...] = ()
    error: str | None = None


def judge_suback(suback: Suback | None, user: str | None) -> list[Finding]:
    if suback is None:
        return [skipped(2, "mqtt.subscribe", "no MQTT session")]
    who = f"user {user!r}" if user else "anonymous"
    if suback.error is not None or not suback.codes:
        return [
            Finding(
                step=2,
                check="mqtt.subscribe",
                status="fail",
                seen=f"no SUBACK for the bridge's filters as {who}: {suback.error or 'none came'}",
                fix="look at the broker's log for this client",
            )
        ]
    refused = [(f, c) for f, c in suback.codes if c >= 0x80]
    low = [(f, c) for f, c in suback.codes if c == 0x00]
    listed = ", ".join(f"{f!r}: {code_name(c, SUBACK_NAMES)}" for f, c in suback.codes)
    if refused:
        fixes = sorted({SUBACK_FIXES.get(c, "look at the broker's log") for _, c in refused})
        return [
            Finding(
                step=2,
                check="mqtt.subscribe",
                status="fail",
                seen=f"the broker refused {len(refused)} of {len(suback.codes)} filter(s) as "
                f"{who}: {listed}",
                fix="; ".join(fixes),
                data={"suback": dict(suback.codes)},
            )
        ]
    if low:
        return [
            Finding(
                step=2,
                check="mqtt.subscribe",
                status="warn",
                seen=f"granted at QoS 0 only: {listed}",
                fix="the bridge asks QoS 1 so that the broker redelivers what it did not "
                "acknowledge; at QoS 0 a bridge restart loses messages: allow QoS 1 "
                "(max_qos, EMQX's zone settings)",
                data={"suback": dict(suback.codes)},
            )
        ]
    return [
        Finding(
            step=2,
            check="mqtt.subscribe",
            status="ok",
            seen=f"as {who}: {listed}",
            data={"suback": dict(suback.codes)},
        )
    ]


@dataclass(frozen=True)
class RoundTrip:
    """A QoS 1 probe published on `topic` by a second client: its PUBACK's reason code, and
    whether (and how fast) the subscriber got it back."""

    topic: str
    puback: int | None = None
    received: bool = False
    ms: float | None = None
    waited_s: float = 0.0
    error: str | None = None


PUBACK_NAMES = {
    0x00: "Success",
    0x10: "No matching subscribers",
    0x80: "Unspecified error",
    0x83: "Implementation specific error",
    0x87: "Not authorized",
    0x90: "Topic Name invalid",
    0x91: "Packet identifier in use",
    0x97: "Quota exceeded",
    0x99: "Payload format invalid",
}
SLOW_ROUND_TRIP_MS = 1000.0


def judge_round_trip(trip: RoundTrip | None, user: str | None, why_not: str) -> list[Finding]:
    check = "mqtt.round_trip"
    if trip is None:
        return [skipped(2, check, why_not)]
    who = f"user {user!r}" if user else "anonymous"
    if trip.error is not None and trip.puback is None:
        return [
            Finding(
                step=2,
                check=check,
                status="fail",
                seen=f"the probe on {trip.topic!r} could not be published: {trip.error}",
                fix="look at the broker's log for the probe's client",
            )
        ]
    if trip.puback is not None and trip.puback >= 0x80:
        return [
            Finding(
                step=2,
                check=check,
                status="warn",
                seen=f"the broker refused the probe on {trip.topic!r} from {who}: PUBACK "
                f"{code_name(trip.puback, PUBACK_NAMES)}; reads were not tested",
                fix="the bridge's user may not write device topics (often right); the "
                "subscription was granted, but a broker's ACL can still filter what it delivers",
                data={"puback": trip.puback},
            )
        ]
    if not trip.received and trip.puback is None:
        return [
            Finding(
                step=2,
                check=check,
                status="fail",
                seen=f"the probe on {trip.topic!r} got no PUBACK and did not come back within "
                f"{trip.waited_s:.1f} s",
                fix="the broker does not acknowledge a QoS 1 publish in time: its load, its "
                "limits (max_inflight_messages, EMQX's rate limits) and its log",
            )
        ]
    if not trip.received:
        return [
            Finding(
                step=2,
                check=check,
                status="fail",
                seen=f"the probe published on {trip.topic!r} (PUBACK "
                f"{code_name(trip.puback or 0, PUBACK_NAMES)}) never came back to the subscriber "
                f"within {trip.waited_s:.1f} s, although the broker granted the subscription",
                fix=f"the broker accepts the subscription but delivers nothing to {who}: its ACL "
                "lets this user subscribe but not read these topics (Mosquitto grants a "
                "SUBSCRIBE and filters the deliveries: the subscriber silently receives nothing, "
                "as in report A): grant `read` on the profiles' topics",
                data={"puback": trip.puback},
            )
        ]
    ms = trip.ms or 0.0
    slow = ms >= SLOW_ROUND_TRIP_MS
    return [
        Finding(
            step=2,
            check=check,
            status="warn" if slow else "ok",
            seen=f"QoS 1 probe on {trip.topic!r} back in {ms:.1f} ms",
            fix="the broker is slow to deliver: its load, its inflight and queue limits, the "
            "network"
            if slow
            else None,
            data={"round_trip_ms": round(ms, 2)},
        )
    ]


# --- step 3: the broker's limits ($SYS) --------------------------------------------------------


@dataclass(frozen=True)
class BrokerStats:
    """The broker's `$SYS/broker/...` values as read (topic without the prefix -> payload)."""

    values: dict[str, str] = field(default_factory=dict)
    waited_s: float = 0.0
    error: str | None = None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def judge_broker(stats: BrokerStats | None) -> list[Finding]:
    if stats is None:
        return [skipped(3, "mqtt.broker", "no MQTT session")]
    if stats.error is not None or not stats.values:
        return [
            Finding(
                step=3,
                check="mqtt.broker",
                status="warn",
                seen="no $SYS/broker/# values within "
                f"{stats.waited_s:.1f} s{': ' + stats.error if stats.error else ''}",
                fix="not a Mosquitto, $SYS switched off (sys_interval 0), or an ACL that does "
                "not let this user read $SYS/# (a `#` rule does not cover $SYS): the broker's "
                "limits could not be read",
            )
        ]
    v = stats.values
    out: list[Finding] = []
    parts = [v.get("version", "unknown version")]
    for key, label in (
        ("clients/connected", "clients connected"),
        ("clients/disconnected", "persistent sessions offline"),
        ("store/messages/count", "messages stored"),
        ("subscriptions/count", "subscriptions"),
        ("uptime", "up"),
    ):
        if key in v:
            parts.append(f"{label} {v[key]}")
    data = {k: v[k] for k in sorted(v) if k.count("/") <= 2}
    out.append(Finding(step=3, check="mqtt.broker", status="ok", seen=", ".join(parts), data=data))
    dropped = _number(v.get("publish/messages/dropped"))
    now = _number(v.get("load/publish/dropped/1min"))
    if dropped is None:
        out.append(
            Finding(
                step=3,
                check="mqtt.dropped",
                status="ok",
                seen="no drop lately: $SYS/broker/publish/messages/dropped did not change in "
                "the last minute (Mosquitto publishes a $SYS value when it changes, retained "
                "with a 60 s expiry)",
            )
        )
    elif dropped > 0 or (now or 0) > 0:
        out.append(
            Finding(
                step=3,
                check="mqtt.dropped",
                status="warn",
                seen=f"the broker is dropping messages: {dropped:.0f} since it started, the "
                "count changed within the last minute"
                + (f" (1-minute average {now:.2f}/min)" if now else ""),
                fix="messages for clients whose queue was full (max_queued_messages, "
                "max_queued_bytes: a persistent session offline too long, or a subscriber "
                "slower than its publishers; max_inflight_messages): raise the limits or find "
                "the slow client (report A's subscriber got 3,000 of 20,000)",
                data={"dropped": dropped},
            )
        )
    else:
        out.append(
            Finding(
                step=3,
                check="mqtt.dropped",
                status="ok",
                seen="no message dropped since the broker started",
                data={"dropped": 0},
            )
        )
    return out


# --- step 3: EMQX's limits, through its REST API (when `--emqx-api` is given) -----------------

EMQX_LIMITS = (
    "max_conn_rate",
    "max_conn_burst",
    "messages_rate",
    "messages_burst",
    "bytes_rate",
    "bytes_burst",
)


@dataclass(frozen=True)
class EmqxAnswers:
    """EMQX 5's answers to GET /api/v5/configs/flapping_detect, /api/v5/banned and
    /api/v5/configs/listeners."""

    flapping: HttpAnswer
    banned: HttpAnswer
    listeners: HttpAnswer


def _emqx_json(answer: HttpAnswer, check: str) -> tuple[Any, Finding | None]:
    if answer.status == 200:
        try:
            return json.loads(answer.body), None
        except ValueError:
            return None, Finding(
                step=3, check=check, status="warn", seen=f"{answer.url} did not answer JSON"
            )
    if answer.status in (401, 403):
        fix = "an API key and its secret (EMQX Dashboard, System, API Keys): --emqx-key and "
        fix += "--emqx-secret (or PRESENCE_DOCTOR_EMQX_SECRET)"
    else:
        fix = "the EMQX REST API's address, port 18083 by default: --emqx-api http://host:18083"
    seen = f"{answer.url}: " + (f"HTTP {answer.status}" if answer.status else str(answer.error))
    return None, Finding(step=3, check=check, status="warn", seen=seen, fix=fix)


def _flapping_rules(config: Any) -> dict[str, dict[str, Any]]:
    """The detection rules in force, by what they count: EMQX 5 has one (by client id) with
    `enable`; EMQX 6.3 has `by_clientid`, `by_username`, `by_peerhost`, each a rule or "none"."""
    if not isinstance(config, dict):
        return {}
    if "enable" in config:
        return {"client id": config} if config.get("enable") else {}
    names = {"by_clientid": "client id", "by_username": "user name", "by_peerhost": "IP address"}
    return {
        label: rule
        for key, label in names.items()
        if isinstance(rule := config.get(key), dict) and rule.get("enable", True)
    }


def judge_emqx(answers: EmqxAnswers | None) -> list[Finding]:
    """EMQX's own ways to lose or delay lifecycle messages: flapping detection bans a device
    that reconnects often (report A's agent, flapping on EMQX), bans in force, and listener
    rate limits that pause a client or the listener (births and wills arrive late)."""
    if answers is None:
        return []
    out: list[Finding] = []
    config, problem = _emqx_json(answers.flapping, "emqx.flapping")
    if problem is not None:
        out.append(problem)
    else:
        rules = _flapping_rules(config)
        if rules:
            said = "; ".join(
                f"by {label}: {r.get('max_count', 15)} connects within "
                f"{r.get('window_time', '1m')} banned for {r.get('ban_time', '5m')}"
                for label, r in rules.items()
            )
            out.append(
                Finding(
                    step=3,
                    check="emqx.flapping",
                    status="warn",
                    seen=f"EMQX's flapping detection is on ({said})",
                    fix="a device that reconnects that often is refused (CONNACK 0x8A, banned) "
                    "for the ban time and shows offline here meanwhile, and a reconnect storm "
                    "after a network outage can ban a whole site; presence damps flapping "
                    "itself without refusing anyone: raise max_count above what a storm makes "
                    "one device do, or turn the detection off for the fleet",
                    data={"rules": rules},
                )
            )
        else:
            out.append(
                Finding(step=3, check="emqx.flapping", status="ok", seen="flapping detection off")
            )
    banned, problem = _emqx_json(answers.banned, "emqx.banned")
    if problem is not None:
        out.append(problem)
    else:
        entries = banned.get("data", []) if isinstance(banned, dict) else []
        meta = banned.get("meta", {}) if isinstance(banned, dict) else {}
        count = int(meta.get("count", len(entries))) if isinstance(meta, dict) else len(entries)
        if count:
            shown = ", ".join(
                f"{e.get('as', '?')} {e.get('who', '?')} until {e.get('until', '?')}"
                + (f" ({e['by']})" if e.get("by") else "")
                for e in entries[:5]
                if isinstance(e, dict)
            )
            out.append(
                Finding(
                    step=3,
                    check="emqx.banned",
                    status="warn",
                    seen=f"{count} bans in force: {shown}" + (", ..." if count > 5 else ""),
                    fix="a banned device cannot connect and is offline here until its ban "
                    "ends; DELETE /api/v5/banned/{as}/{who} lifts one",
                    data={"count": count},
                )
            )
        else:
            out.append(Finding(step=3, check="emqx.banned", status="ok", seen="no ban in force"))
    listeners, problem = _emqx_json(answers.listeners, "emqx.rate_limits")
    if problem is not None:
        out.append(problem)
        return out
    limited: dict[str, dict[str, str]] = {}
    for kind, named in listeners.items() if isinstance(listeners, dict) else []:
        for name, conf in named.items() if isinstance(named, dict) else []:
            if not isinstance(conf, dict) or conf.get("enable") is False:
                continue
            limits = {k: str(conf[k]) for k in EMQX_LIMITS if conf.get(k) not in (None, "infinity")}
            if limits:
                limited[f"{kind}:{name}"] = limits
    if limited:
        out.append(
            Finding(
                step=3,
                check="emqx.rate_limits",
                status="warn",
                seen="rate limits on "
                + "; ".join(
                    f"{listener} " + ", ".join(f"{k} {v}" for k, v in limits.items())
                    for listener, limits in limited.items()
                ),
                fix="EMQX pauses a client over messages_rate or bytes_rate (it stops reading its "
                "socket) and the listener over max_conn_rate: after an outage, when the whole "
                "fleet reconnects at once, births and wills arrive late (and the bridge's own "
                "connection is one client too); size them for a reconnect storm",
                data={"listeners": limited},
            )
        )
    else:
        out.append(
            Finding(step=3, check="emqx.rate_limits", status="ok", seen="no listener rate limit")
        )
    return out


# --- step 4: Kafka topics ----------------------------------------------------------------------


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    replication_factor: int
    cleanup_policy: str | None = None  # None: not set on the topic (the broker's default)
    offline_partitions: int = 0  # without a leader
    under_replicated: int = 0  # fewer in-sync replicas than replicas


@dataclass(frozen=True)
class Topics:
    brokers: int
    found: dict[str, TopicInfo | None]  # by name; None: does not exist
    error: str | None = None


@dataclass(frozen=True)
class TopicPlan:
    """What the [kafka] table says (names by role: raw, ticks, status, dlq)."""

    names: dict[str, str]
    partitions: int
    replication_factor: int
    bootstrap: str
    changelog: str | None = None  # the workers' table changelog (co-partitioned with raw)


def judge_topics(topics: Topics | None, plan: TopicPlan) -> list[Finding]:
    if topics is None:
        return [skipped(4, "kafka.topics", "no connection to Kafka")]
    if topics.error is not None:
        return [
            Finding(
                step=4,
                check="kafka.topics",
                status="fail",
                seen=f"the topics could not be described: {topics.error}",
                fix="look at the broker's log; with an authorizer, the user needs Describe on "
                "the topics",
            )
        ]
    out: list[Finding] = []
    counts: dict[str, int] = {}
    for role, name in plan.names.items():
        info = topics.found.get(name)
        check = f"kafka.topic.{role}"
        if info is None:
            compact = " --config cleanup.policy=compact" if role == "status" else ""
            out.append(
                Finding(
                    step=4,
                    check=check,
                    status="fail",
                    seen=f"{role} topic {name} does not exist",
                    fix="start a worker (it creates every topic; the bridge creates raw and "
                    "dlq), or check the name in [kafka] against the running parts', or create "
                    f"it: kafka-topics.sh --bootstrap-server {plan.bootstrap} --create --topic "
                    f"{name} --partitions {plan.partitions} --replication-factor "
                    f"{plan.replication_factor}{compact}",
                )
            )
            continue
        counts[name] = info.partitions
        problems: list[tuple[Status, str, str]] = []
        if info.partitions != plan.partitions:
            problems.append(
                (
                    "fail",
                    f"{info.partitions} partitions, the configuration says {plan.partitions}",
                    "set `partitions` in [kafka] to the topics' count (the same for every "
                    "topic), or recreate the topic (its data is lost)",
                )
            )
        if role == "status" and "compact" not in (info.cleanup_policy or ""):
            problems.append(
                (
                    "fail",
                    f"not compacted (cleanup.policy {info.cleanup_policy or 'not set: delete'})",
                    "consumers that start from the beginning need every device's last "
                    "status, which deletion by age loses: kafka-configs.sh --bootstrap-server "
                    f"{plan.bootstrap} --alter --entity-type topics --entity-name {name} "
                    "--add-config cleanup.policy=compact",
                )
            )
        if info.offline_partitions:
            problems.append(
                (
                    "fail",
                    f"{info.offline_partitions} partition(s) without a leader",
                    "brokers holding its replicas are down: start them",
                )
            )
        if info.replication_factor > topics.brokers:
            problems.append(
                (
                    "fail",
                    f"replication factor {info.replication_factor} with {topics.brokers} broker(s)",
                    "start the missing brokers",
                )
            )
        elif info.under_replicated:
            problems.append(
                (
                    "warn",
                    f"{info.under_replicated} partition(s) under-replicated",
                    "a broker is down or slow to follow: look at the brokers",
                )
            )
        if info.replication_factor < plan.replication_factor:
            problems.append(
                (
                    "warn",
                    f"replication factor {info.replication_factor}, the configuration says "
                    f"{plan.replication_factor}",
                    "the topic was made before the setting: reassign its partitions "
                    "(kafka-reassign-partitions.sh) to add replicas",
                )
            )
        elif info.replication_factor == 1 and topics.brokers > 1:
            problems.append(
                (
                    "warn",
                    f"replication factor 1 on a cluster of {topics.brokers} brokers",
                    "one broker's loss loses the topic: set replication_factor in [kafka] "
                    "(3 is usual) and add replicas",
                )
            )
        base = (
            f"{name}: {info.partitions} partitions, replication factor "
            f"{info.replication_factor}"
            + (f", cleanup.policy {info.cleanup_policy}" if info.cleanup_policy else "")
        )
        data = {
            "topic": name,
            "partitions": info.partitions,
            "replication_factor": info.replication_factor,
        }
        if not problems:
            out.append(Finding(step=4, check=check, status="ok", seen=base, data=data))
            continue
        status: Status = "fail" if any(p[0] == "fail" for p in problems) else "warn"
        out.append(
            Finding(
                step=4,
                check=check,
                status=status,
                seen=base + ": " + "; ".join(p[1] for p in problems),
                fix="; ".join(p[2] for p in problems),
                data=data,
            )
        )
    # Co-partitioning: a worker's inputs (raw, ticks) and its table's changelog must agree.
    together = [plan.names[r] for r in ("raw", "ticks", "status") if r in plan.names]
    changelog = topics.found.get(plan.changelog) if plan.changelog else None
    if changelog is not None:
        counts[changelog.name] = changelog.partitions
        together.append(changelog.name)
    seen_counts = {n: counts[n] for n in together if n in counts}
    if len(seen_counts) < 2:
        out.append(skipped(4, "kafka.copartitioned", "fewer than two of the topics exist"))
    elif len(set(seen_counts.values())) == 1:
        out.append(
            Finding(
                step=4,
                check="kafka.copartitioned",
                status="ok",
                seen=f"{', '.join(seen_counts)}: "
                f"{next(iter(seen_counts.values()))} partitions each",
            )
        )
    else:
        out.append(
            Finding(
                step=4,
                check="kafka.copartitioned",
                status="fail",
                seen="not co-partitioned: "
                + ", ".join(f"{n} has {c}" for n, c in seen_counts.items()),
                fix="a device's raw events, ticks and table row must land on the same "
                "partition number: give every topic the same count (recreate the odd one; a "
                "changelog of another count: a new app_id)",
            )
        )
    return out


# --- step 5: the bridge's and the workers' health ----------------------------------------------


@dataclass(frozen=True)
class HttpAnswer:
    url: str
    status: int | None = None  # None: no answer (`error` says why)
    body: bytes = b""
    error: str | None = None


Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_metrics(text: str) -> Samples:
    """Prometheus text -> {sample name: [(labels, value), ...]} (counters keep `_total`)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def _total(samples: Samples, name: str) -> float:
    return sum(v for _, v in samples.get(name, []))


def _by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in samples.get(name, []):
        out[labels.get(label, "")] = out.get(labels.get(label, ""), 0.0) + value
    return out


def _unreachable(step: int, check: str, answer: HttpAnswer, what: str, fix: str) -> Finding:
    return Finding(
        step=step,
        check=check,
        status="fail",
        seen=f"{what} at {answer.url} does not answer: {answer.error}",
        fix=fix,
    )


def judge_bridge(health: HttpAnswer | None, metrics: HttpAnswer | None) -> list[Finding]:
    if health is None or metrics is None:
        return [
            skipped(
                5,
                "bridge.health",
                "no bridge address (give --bridge-url, or http_port in [bridge])",
            )
        ]
    out: list[Finding] = []
    if health.status is None:
        return [
            _unreachable(
                5,
                "bridge.health",
                health,
                "the bridge",
                "is the bridge running, with http_port set? Check --bridge-url",
            )
        ]
    try:
        state = json.loads(health.body)
    except ValueError:
        state = {}
    down = sorted(k for k, v in state.items() if k != "healthy" and v is False)
    if health.status == 200:
        out.append(
            Finding(
                step=5,
                check="bridge.health",
                status="ok",
                seen="healthy: " + ", ".join(f"{k} up" for k in sorted(state) if k != "healthy"),
            )
        )
    else:
        out.append(
            Finding(
                step=5,
                check="bridge.health",
                status="fail",
                seen=f"/health answers {health.status}: "
                + (
                    ", ".join(f"{k} down" for k in down)
                    or health.body[:200].decode(errors="replace")
                ),
                fix="the bridge cannot reach "
                + (" and ".join(down) or "its brokers")
                + ": see its log, and step 1 for the same addresses",
            )
        )
    if metrics.status != 200:
        out.append(
            Finding(
                step=5,
                check="bridge.metrics",
                status="fail",
                seen=f"/metrics at {metrics.url}: {metrics.error or metrics.status}",
                fix="check --bridge-url",
            )
        )
        return out
    try:
        samples = parse_metrics(metrics.body.decode())
    except ValueError as exc:
        return [
            *out,
            Finding(
                step=5,
                check="bridge.metrics",
                status="fail",
                seen=f"/metrics is not Prometheus text: {exc}",
                fix="is --bridge-url a bridge?",
            ),
        ]
    outages = {k: v for k, v in _by_label(samples, "presence_bridge_outage", "broker").items() if v}
    dead = _by_label(samples, "presence_bridge_dead_letters_total", "reason")
    dead = {k: v for k, v in dead.items() if v}
    errors = _total(samples, "presence_bridge_kafka_errors_total")
    received = _total(samples, "presence_bridge_messages_received_total")
    acked = _total(samples, "presence_bridge_messages_acknowledged_total")
    seen = (
        f"{received:.0f} messages received, {acked:.0f} acknowledged, "
        f"{_total(samples, 'presence_bridge_in_flight'):.0f} in flight, "
        f"{sum(dead.values()):.0f} dead letters"
        + (" (" + ", ".join(f"{k} {v:.0f}" for k, v in sorted(dead.items())) + ")" if dead else "")
        + f", {errors:.0f} Kafka write errors"
    )
    data = {"received": received, "dead_letters": dead, "kafka_errors": errors}
    if outages:
        out.append(
            Finding(
                step=5,
                check="bridge.metrics",
                status="fail",
                seen=f"outage now: {', '.join(sorted(outages))}; " + seen,
                fix="the bridge cannot reach " + " and ".join(sorted(outages)) + ": see step 1",
                data=data,
            )
        )
    elif errors:
        out.append(
            Finding(
                step=5,
                check="bridge.metrics",
                status="warn",
                seen=seen,
                fix="Kafka refused writes: see the bridge's log (its dead letters, counted since "
                "it started and with the doctor's own probes among them, are in step 6)",
                data=data,
            )
        )
    else:
        out.append(Finding(step=5, check="bridge.metrics", status="ok", seen=seen, data=data))
    return out


MAX_LAG = 1000  # records behind on one partition before the doctor warns


def judge_worker(
    url: str,
    ready: HttpAnswer,
    metrics: HttpAnswer,
    fleet: HttpAnswer | None,
    max_lag: int = MAX_LAG,
) -> list[Finding]:
    return [
        msgspec.structs.replace(
            f,
            seen=f.seen if url in f.seen else f"{url}: {f.seen}",
            data={"url": url, **f.data},
        )
        for f in _judge_worker(url, ready, metrics, fleet, max_lag)
    ]


def _judge_worker(
    url: str,
    ready: HttpAnswer,
    metrics: HttpAnswer,
    fleet: HttpAnswer | None,
    max_lag: int,
) -> list[Finding]:
    if ready.status is None:
        return [
            _unreachable(
                5,
                "worker.ready",
                ready,
                "the worker",
                "is the worker running? Its web_port and web_bind ([worker]); check --worker-url",
            )
        ]
    out: list[Finding] = []
    if ready.status == 200:
        out.append(
            Finding(step=5, check="worker.ready", status="ok", seen="/ready: 200, table recovered")
        )
    elif ready.status == 503:
        out.append(
            Finding(
                step=5,
                check="worker.ready",
                status="warn",
                seen="/ready: 503, its table is still recovering",
                fix="wait; a recovery that reads nothing for recovery_stall_s ends the process "
                "for its supervisor to restart it",
            )
        )
    else:
        out.append(
            Finding(
                step=5,
                check="worker.ready",
                status="fail",
                seen=f"/ready answers {ready.status}",
                fix="is --worker-url a presence worker?",
            )
        )
    if fleet is not None and fleet.status == 401:
        out.append(
            Finding(
                step=5,
                check="worker.token",
                status="fail",
                seen="/fleet answers 401: the worker wants another bearer token",
                fix="give the workers' http_token ([worker] http_token or http_token_file, "
                "PRESENCE_WORKER_HTTP_TOKEN)",
            )
        )
    if metrics.status != 200:
        out.append(
            Finding(
                step=5,
                check="worker.metrics",
                status="fail",
                seen=f"/metrics: {metrics.error or metrics.status}",
                fix="is --worker-url a presence worker?",
            )
        )
        return out
    try:
        samples = parse_metrics(metrics.body.decode())
    except ValueError as exc:
        out.append(
            Finding(
                step=5,
                check="worker.metrics",
                status="fail",
                seen=f"/metrics is not Prometheus text: {exc}",
                fix="is --worker-url a presence worker?",
            )
        )
        return out
    lags = [
        (f"{labels.get('topic')}[{labels.get('partition')}]", value)
        for labels, value in samples.get("presence_worker_faust_consumer_lag", [])
    ]
    lags.sort(key=lambda item: -item[1])
    total = sum(v for _, v in lags)
    worst = lags[:3]
    recovering = _total(samples, "presence_worker_recovering") > 0
    outages = {k: v for k, v in _by_label(samples, "presence_worker_outage", "broker").items() if v}
    dead = {
        k: v
        for k, v in _by_label(samples, "presence_worker_dead_letters_total", "reason").items()
        if v
    }
    devices = _by_label(samples, "presence_worker_devices", "status")
    seen = (
        f"lag {total:.0f} over {len(lags)} partition(s)"
        + (
            " (most: " + ", ".join(f"{tp} {v:.0f}" for tp, v in worst if v) + ")"
            if worst and worst[0][1]
            else ""
        )
        + (", recovering" if recovering else "")
        + f", {_total(samples, 'presence_worker_events_total'):.0f} events applied"
        + (
            ", devices " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(devices.items()))
            if devices
            else ""
        )
        + (
            ", dead letters " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(dead.items()))
            if dead
            else ""
        )
    )
    data = {
        "lag": dict(lags),
        "lag_total": total,
        "recovering": recovering,
        "dead_letters": dead,
    }
    problems: list[tuple[Status, str]] = []
    if outages:
        problems.append(("fail", f"{' and '.join(sorted(outages))} unreachable: see step 1"))
    if worst and worst[0][1] > max_lag:
        problems.append(
            (
                "warn",
                f"a partition is more than {max_lag} records behind: the workers are slower "
                "than the input (add workers, up to the partition count) or stalled (their log)",
            )
        )
    if not lags and not recovering:
        problems.append(
            ("warn", "no partition assigned to this worker: more workers than partitions?")
        )
    if dead:
        problems.append(("warn", "dead letters: see step 6 for their reasons"))
    if _total(samples, "presence_worker_send_errors_total"):
        problems.append(("warn", "Kafka refused records the worker wrote: see its log"))
    status: Status = (
        "fail" if any(p[0] == "fail" for p in problems) else "warn" if problems else "ok"
    )
    out.append(
        Finding(
            step=5,
            check="worker.metrics",
            status=status,
            seen=seen,
            fix="; ".join(p[1] for p in problems) or None,
            data=data,
        )
    )
    return out


# --- step 6: dead letters and flapping devices -------------------------------------------------


@dataclass(frozen=True)
class DeadLetterSeen:
    reason: str
    source: str
    topic: str
    detail: str


@dataclass(frozen=True)
class StatusSeen:
    device: str
    status: str
    flapping: bool


def decode_dead_letter(
    value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()
) -> DeadLetterSeen:
    """A record of the dead-letter topic, whoever wrote it: its JSON fields (the bridge's and the
    workers' `DeadLetterRecord`), else a `reason` header, else `unreadable`."""
    try:
        body = json.loads(value or b"")
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("reason"), str):
        return DeadLetterSeen(
            reason=body["reason"],
            source=str(body.get("source", "?")),
            topic=str(body.get("topic", "")),
            detail=str(body.get("detail", ""))[:200],
        )
    for key, raw in headers:
        if key == "reason":
            return DeadLetterSeen(raw.decode(errors="replace"), "?", "", "")
    return DeadLetterSeen("unreadable", "?", "", "not a dead-letter record")


def decode_status(value: bytes | None) -> StatusSeen | None:
    """A record of the status topic (None for a tombstone or something else)."""
    try:
        body = json.loads(value or b"")
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("device"), str):
        return None
    return StatusSeen(
        device=body["device"], status=str(body.get("status")), flapping=body.get("flapping") is True
    )


@dataclass(frozen=True)
class Tail:
    """The last records of a topic, oldest first (`read` of the `asked` were there)."""

    topic: str
    asked: int
    dead_letters: tuple[DeadLetterSeen, ...] = ()
    statuses: tuple[StatusSeen, ...] = ()
    error: str | None = None


DLQ_FIXES = {
    "bad_payload": "devices send payloads their profile does not read: fix the devices or the "
    "profile's online_values/offline_values/json_field",
    "unknown_topic": "messages on topics no profile's pattern matches: narrow the profiles' "
    "filters or add a profile",
    "device_mismatch": "payloads name another device than their topic",
    "out_of_range": "values no consumer could read back (the detail names the field)",
    "bad_device_id": "device ids empty, too long or with control characters",
    "oversize": "payloads over max_payload_bytes",
    "bad_packet": "invalid MQTT packets (a topic that is not UTF-8)",
    "internal_error": "a bug of ours: please report it with the record",
    "poison": "messages that ended two bridge processes: please report them with the record",
    "clock_skew": "raw events stamped far ahead of the workers' clocks: check the clocks (NTP) "
    "of the bridge and worker hosts",
    "bad_record": "records on the raw topic that no bridge of this version wrote",
    "processing_error": "a bug of ours: please report it with the record",
}


def judge_dead_letters(tail: Tail | None) -> list[Finding]:
    check = "kafka.dlq"
    if tail is None:
        return [skipped(6, check, "no connection to Kafka")]
    if tail.error is not None:
        return [
            Finding(
                step=6,
                check=check,
                status="warn",
                seen=f"{tail.topic} could not be read: {tail.error}",
                fix="with an authorizer, this user needs Read on the topic",
            )
        ]
    mine = [d for d in tail.dead_letters if PROBE_MARK in d.topic]
    theirs = [d for d in tail.dead_letters if PROBE_MARK not in d.topic]
    probes = f" ({len(mine)} of the doctor's own probes left out)" if mine else ""
    if not theirs:
        return [
            Finding(
                step=6,
                check=check,
                status="ok",
                seen=f"no dead letter among the last {tail.asked} records of {tail.topic}{probes}",
                data={"reasons": {}},
            )
        ]
    reasons = Counter(d.reason for d in theirs)
    example = {d.reason: d for d in reversed(theirs)}  # the newest of each reason
    listed = "; ".join(
        f"{reason} x{count} ({example[reason].source}: {example[reason].detail or '-'}; "
        f"e.g. {example[reason].topic})"
        for reason, count in reasons.most_common(5)
    )
    fixes = [
        DLQ_FIXES.get(r, "see the README's dead-letter reasons") for r, _ in reasons.most_common(3)
    ]
    return [
        Finding(
            step=6,
            check=check,
            status="warn",
            seen=f"{len(theirs)} dead letter(s) in the last {len(tail.dead_letters)} records of "
            f"{tail.topic}{probes}: {listed}",
            fix="; ".join(fixes),
            data={"reasons": dict(reasons)},
        )
    ]


TOP_DEVICES = 5


def judge_flapping(tail: Tail | None) -> list[Finding]:
    check = "devices.flapping"
    if tail is None:
        return [skipped(6, check, "no connection to Kafka")]
    if tail.error is not None:
        return [
            Finding(
                step=6,
                check=check,
                status="warn",
                seen=f"{tail.topic} could not be read: {tail.error}",
                fix="with an authorizer, this user needs Read on the topic",
            )
        ]
    changes = Counter(s.device for s in tail.statuses)
    latest = {s.device: s for s in tail.statuses}
    flapping = sorted(d for d, s in latest.items() if s.flapping)
    ever = {s.device for s in tail.statuses if s.flapping}
    top = changes.most_common(TOP_DEVICES)
    most = ", ".join(
        f"{d} {n} change(s)" + (" (flapping now)" if d in flapping else "") for d, n in top
    )
    data = {"flapping_now": flapping, "most_changes": dict(top)}
    if not tail.statuses:
        return [
            Finding(
                step=6,
                check=check,
                status="ok",
                seen=f"no status change among the last {tail.asked} records of {tail.topic}",
                data=data,
            )
        ]
    seen = (
        f"{len(tail.statuses)} status change(s) of {len(changes)} device(s) in the last records of "
        f"{tail.topic}; most: {most}"
    )
    if flapping or ever:
        return [
            Finding(
                step=6,
                check=check,
                status="warn",
                seen=f"{len(flapping)} device(s) flapping now "
                f"({', '.join(flapping[:TOP_DEVICES]) or '-'}), {len(ever)} flapped in these "
                f"records ({', '.join(sorted(ever)[:TOP_DEVICES])}); " + seen,
                fix="the pipeline damps them (downstream sees no storm), but the devices keep "
                "reconnecting: look at their network, power and keepalive, and at the broker's "
                "rate and concurrency limits that drop them (report A)",
                data=data,
            )
        ]
    return [Finding(step=6, check=check, status="ok", seen=seen, data=data)]
