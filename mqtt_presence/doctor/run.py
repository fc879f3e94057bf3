"""`presence doctor`'s walk: the probes of each step, their observations judged into findings.

Three groups run side by side (MQTT; Kafka; the bridge's and the workers' HTTP), each in a daemon
thread with a deadline of its own, so that a dead endpoint costs its timeout and no more; a
probe that fails becomes a finding, never the end of the others. The findings come back in the
steps' order (report A's: the network, then the broker, then Kafka and the consumers)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from mqtt_presence.bridge.config import BridgeSettings
from mqtt_presence.bridge.profiles import build, subscriptions
from mqtt_presence.doctor import probes
from mqtt_presence.doctor.findings import (
    Finding,
    Reach,
    TopicPlan,
    judge_bridge,
    judge_broker,
    judge_connack,
    judge_dead_letters,
    judge_emqx,
    judge_flapping,
    judge_kafka_login,
    judge_reach,
    judge_round_trip,
    judge_suback,
    judge_topics,
    judge_worker,
)


@dataclass(frozen=True)
class Plan:
    """What to examine: the bridge's settings (MQTT, its profiles, and the [kafka] table), the
    workers' app id, and the HTTP addresses of the bridge and workers."""

    bridge: BridgeSettings
    app_id: str = "mqtt-presence"
    bridge_url: str | None = None
    worker_urls: tuple[str, ...] = ()
    token: str | None = None
    timeout_s: float = 3.0
    last: int = 1000
    max_lag: int = 1000
    emqx_api: str | None = None  # EMQX's REST API (http://host:18083): its limits and bans
    emqx_key: str | None = None
    emqx_secret: str | None = None


def examine(plan: Plan) -> list[Finding]:
    groups: list[tuple[str, Callable[[Plan], list[Finding]], float]] = [
        ("MQTT", mqtt_findings, plan.timeout_s * 8 + 5),
        ("Kafka", kafka_findings, plan.timeout_s * 16 + 5),
        ("HTTP", health_findings, plan.timeout_s * (3 * len(plan.worker_urls) + 2) + 5),
        ("EMQX", emqx_findings, plan.timeout_s * 3 + 5),
    ]
    results: dict[str, list[Finding]] = {}
    threads = []
    for name, group, _ in groups:
        thread = threading.Thread(
            target=_collect, args=(name, group, plan, results), name=f"doctor-{name}", daemon=True
        )
        thread.start()
        threads.append(thread)
    for thread, (name, _, budget) in zip(threads, groups, strict=True):
        thread.join(budget)
        if name not in results:
            results[name] = [
                Finding(
                    step=0,
                    check=f"doctor.{name.lower()}",
                    status="fail",
                    seen=f"the {name} probes did not finish within {budget:.0f} s",
                    fix="something hangs without a timeout: please report it",
                )
            ]
    everything = [f for name, _, _ in groups for f in results[name]]
    return sorted(everything, key=lambda f: f.step)  # stable: MQTT before Kafka within a step


def _collect(
    name: str,
    group: Callable[[Plan], list[Finding]],
    plan: Plan,
    results: dict[str, list[Finding]],
) -> None:
    try:
        results[name] = group(plan)
    except Exception as exc:  # a bug of the doctor's own: said, and the others go on
        results[name] = [
            Finding(
                step=0,
                check=f"doctor.{name.lower()}",
                status="fail",
                seen=f"the {name} probes failed: {type(exc).__name__}: {exc}",
                fix="a bug of the doctor's: please report it",
            )
        ]


def emqx_findings(plan: Plan) -> list[Finding]:
    if plan.emqx_api is None:
        return []
    answers = probes.probe_emqx(plan.emqx_api, plan.emqx_key, plan.emqx_secret, plan.timeout_s)
    return judge_emqx(answers)


def mqtt_findings(plan: Plan) -> list[Finding]:
    s = plan.bridge
    tls = None
    if s.mqtt_tls:
        tls = probes.mqtt_tls_context(
            str(s.tls_ca_file) if s.tls_ca_file else None,
            str(s.tls_cert_file) if s.tls_cert_file else None,
            str(s.tls_key_file) if s.tls_key_file else None,
        )
    reached = probes.reach(s.mqtt_host, s.mqtt_port, tls, plan.timeout_s)
    out = judge_reach("mqtt", reached, f"mqtt_url ({s.mqtt_url})")
    profiles = [build(p) for p in s.profiles]
    filters = list(dict.fromkeys(f for p in profiles for f in subscriptions(p)))
    # the round trip's topic: a lifecycle profile's first (an activity profile's last)
    lifecycle = [
        f
        for p, ps in zip(profiles, s.profiles, strict=True)
        if ps.kind != "activity"
        for f in subscriptions(p)
    ]
    ordered = list(dict.fromkeys([*lifecycle, *filters]))
    if not _connected(reached):
        out += judge_connack(None, s.mqtt_url)
        out += judge_suback(None, s.username)
        out += judge_round_trip(None, s.username, "no MQTT session")
        out += judge_broker(None)
        return out
    password = s.password.get_secret_value() if s.password else None
    connack, suback, trip, stats = probes.probe_mqtt(
        s.mqtt_host, s.mqtt_port, s.username, password, tls, ordered, plan.timeout_s
    )
    out += judge_connack(connack, s.mqtt_url)
    if connack.code is None or connack.code >= 0x80:
        out += judge_suback(None, s.username)
        out += judge_round_trip(None, s.username, "no MQTT session")
        out += judge_broker(None)
        return out
    out += judge_suback(suback, s.username)
    if trip is None:
        why = (
            "every filter is a $ topic (a broker's own): a client cannot publish there"
            if suback is not None and suback.codes and all(c < 0x80 for _, c in suback.codes)
            else "the subscription was refused"
        )
        out += judge_round_trip(None, s.username, why)
    else:
        out += judge_round_trip(trip, s.username, "")
    out += judge_broker(stats)
    return out


def _connected(reached: Reach) -> bool:
    return (
        reached.dns_error is None
        and reached.tcp_error is None
        and (not reached.tls_wanted or reached.tls_error is None)
    )


def kafka_findings(plan: Plan) -> list[Finding]:
    kafka = plan.bridge.kafka
    from mqtt_presence.kafka_topics import ssl_context  # noqa: PLC0415

    tls = ssl_context(kafka)
    out: list[Finding] = []
    any_reached = False
    for address in [a.strip() for a in kafka.bootstrap.split(",") if a.strip()]:
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            out.append(
                Finding(
                    step=1,
                    check="kafka.dns",
                    status="fail",
                    seen=f"{address!r} is not host:port",
                    fix="bootstrap in [kafka]: host:port[,host:port...]",
                )
            )
            continue
        reached = probes.reach(host.strip("[]"), int(port), tls, plan.timeout_s)
        out += judge_reach("kafka", reached, f"bootstrap in [kafka] ({kafka.bootstrap})")
        any_reached = any_reached or _connected(reached)
    # Faust loads with the name's one source; this thread runs beside the MQTT probes
    from mqtt_presence.streams.topology import changelog_topic  # noqa: PLC0415

    changelog = changelog_topic(plan.app_id)
    topic_plan = TopicPlan(
        names={
            "raw": kafka.raw_topic,
            "ticks": kafka.ticks_topic,
            "status": kafka.status_topic,
            "dlq": kafka.dlq_topic,
        },
        partitions=kafka.partitions,
        replication_factor=kafka.replication_factor,
        bootstrap=kafka.bootstrap,
        changelog=changelog,
    )
    if not any_reached:
        out += judge_kafka_login(None, kafka.bootstrap)
        out += judge_topics(None, topic_plan)
        out += judge_dead_letters(None)
        out += judge_flapping(None)
        return out
    login, topics = probes.probe_kafka(
        kafka, [*topic_plan.names.values(), changelog], plan.timeout_s
    )
    out += judge_kafka_login(login, kafka.bootstrap)
    out += judge_topics(topics, topic_plan)
    if topics is None or topics.error is not None:
        out += judge_dead_letters(None)
        out += judge_flapping(None)
        return out
    for role, judge in (("dlq", judge_dead_letters), ("status", judge_flapping)):
        name = topic_plan.names[role]
        if topics.found.get(name) is None:
            out.append(
                Finding(
                    step=6,
                    check="kafka.dlq" if role == "dlq" else "devices.flapping",
                    status="skip",
                    seen=f"not tried: {name} does not exist",
                )
            )
            continue
        out += judge(probes.probe_tail(kafka, name, plan.last, role, plan.timeout_s))
    return out


def health_findings(plan: Plan) -> list[Finding]:
    t = plan.timeout_s
    out: list[Finding] = []
    if plan.bridge_url is None:
        out += judge_bridge(None, None)
    else:
        base = plan.bridge_url.rstrip("/")
        out += judge_bridge(
            probes.http_get(f"{base}/health", None, t), probes.http_get(f"{base}/metrics", None, t)
        )
    if not plan.worker_urls:
        out.append(
            Finding(
                step=5,
                check="worker",
                status="skip",
                seen="not tried: no worker address (give --worker-url, once per worker)",
            )
        )
    for url in plan.worker_urls:
        base = url.rstrip("/")
        ready = probes.http_get(f"{base}/ready", plan.token, t)
        if ready.status is None:
            out += judge_worker(base, ready, ready, None, plan.max_lag)
            continue
        metrics = probes.http_get(f"{base}/metrics", plan.token, t)
        fleet = probes.http_get(f"{base}/fleet", plan.token, t)
        out += judge_worker(base, ready, metrics, fleet, plan.max_lag)
    return out
