"""`presence doctor`'s pure half: observations in, findings out (status, what was seen, the fix).

Reason codes are MQTT 5.0's: CONNACK section 3.2.2.2, SUBACK section 3.9.3, PUBACK 3.4.2.1.
Mosquitto's $SYS values are retained with a 60 s expiry and republished only when they change
(its sys_tree.c), which is what `judge_broker` reads absence as."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.doctor.findings import (
    PROBE_MARK,
    BrokerStats,
    Connack,
    DeadLetterSeen,
    Finding,
    HttpAnswer,
    Reach,
    RoundTrip,
    StatusSeen,
    Suback,
    Tail,
    TopicInfo,
    TopicPlan,
    Topics,
    decode_dead_letter,
    decode_status,
    exit_status,
    judge_bridge,
    judge_broker,
    judge_connack,
    judge_dead_letters,
    judge_flapping,
    judge_reach,
    judge_round_trip,
    judge_suback,
    judge_topics,
    judge_worker,
    to_json,
)

PLAN = TopicPlan(
    names={
        "raw": "presence.raw",
        "ticks": "presence.ticks",
        "status": "presence.status",
        "dlq": "presence.dlq",
    },
    partitions=8,
    replication_factor=1,
    bootstrap="k:9092",
    changelog="app-device-state-changelog",
)


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def healthy_topics(
    brokers: int = 1, rf: int = 1, partitions: int = 8
) -> dict[str, TopicInfo | None]:
    found: dict[str, TopicInfo | None] = {
        name: TopicInfo(
            name,
            partitions,
            rf,
            "compact" if role == "status" else None,
        )
        for role, name in PLAN.names.items()
    }
    found["app-device-state-changelog"] = TopicInfo("app-device-state-changelog", partitions, rf)
    return found


# --- step 1 ------------------------------------------------------------------------------------


def test_a_name_that_does_not_resolve_fails_dns_and_skips_what_needs_it() -> None:
    reach = Reach("brokr", 1883, dns_error="Name or service not known", tls_wanted=True)
    found = by_check(judge_reach("mqtt", reach, "mqtt_url"))
    assert found["mqtt.dns"].status == "fail"
    assert "brokr does not resolve" in found["mqtt.dns"].seen
    assert found["mqtt.tcp"].status == "skip"
    assert found["mqtt.tls"].status == "skip"


def test_a_refused_connection_names_the_port_to_check() -> None:
    reach = Reach("127.0.0.1", 1884, ("127.0.0.1",), tcp_error="connection refused")
    found = by_check(judge_reach("mqtt", reach, "mqtt_url (mqtt://127.0.0.1:1884)"))
    assert found["mqtt.dns"].status == "ok"
    assert found["mqtt.tcp"].status == "fail"
    assert "127.0.0.1:1884" in found["mqtt.tcp"].seen
    assert found["mqtt.tcp"].fix is not None
    assert "nothing listens on port 1884" in found["mqtt.tcp"].fix


def test_a_timeout_points_at_the_network_not_the_port() -> None:
    reach = Reach("10.9.9.9", 1883, ("10.9.9.9",), tcp_error="timed out")
    fix = by_check(judge_reach("kafka", reach, "bootstrap"))["kafka.tcp"].fix
    assert fix is not None
    assert "firewall" in fix


def test_an_untrusted_certificate_points_at_the_ca_file() -> None:
    reach = Reach(
        "localhost",
        8883,
        ("127.0.0.1",),
        tcp_ms=1.0,
        tls_wanted=True,
        tls_error="unable to get local issuer certificate",
        tls_untrusted=True,
    )
    tls = by_check(judge_reach("mqtt", reach, "mqtt_url"))["mqtt.tls"]
    assert tls.status == "fail"
    assert tls.fix is not None
    assert "CA" in tls.fix


def test_a_reachable_endpoint_is_ok_with_its_connect_time() -> None:
    reach = Reach("h", 1, ("10.0.0.1",), tcp_ms=2.5, tls_wanted=True, tls_version="TLSv1.3, X")
    found = by_check(judge_reach("mqtt", reach, "mqtt_url"))
    assert [f.status for f in found.values()] == ["ok", "ok", "ok"]
    assert found["mqtt.tcp"].data == {"connect_ms": 2.5}


@pytest.mark.parametrize(
    ("code", "named", "fix_says"),
    [
        (0x86, "Bad User Name or Password (0x86)", "password"),
        (0x87, "Not authorized (0x87)", "allow_anonymous"),
        (0x8A, "Banned (0x8A)", "flapping"),
        (0x9F, "Connection rate exceeded (0x9F)", "rate"),
    ],
)
def test_a_refused_login_names_the_connack_code_and_the_fix(
    code: int, named: str, fix_says: str
) -> None:
    (finding,) = judge_connack(Connack(code, "presence-bridge"), "mqtt://b")
    assert finding.status == "fail"
    assert named in finding.seen
    assert "presence-bridge" in finding.seen
    assert finding.fix is not None
    assert fix_says in finding.fix


def test_no_connack_at_all_fails_and_no_connection_skips() -> None:
    (silent,) = judge_connack(Connack(None, None, "connection closed"), "mqtt://b")
    assert silent.status == "fail"
    (skip,) = judge_connack(None, "mqtt://b")
    assert skip.status == "skip"


# --- step 2 ------------------------------------------------------------------------------------


def test_a_refused_subscription_names_filter_and_code() -> None:
    (finding,) = judge_suback(Suback(codes=(("devices/+/status", 0x87),)), "device")
    assert finding.status == "fail"
    assert "'devices/+/status': Not authorized (0x87)" in finding.seen
    assert finding.fix is not None
    assert "read" in finding.fix


def test_a_subscription_granted_at_qos_0_only_is_a_warning() -> None:
    (finding,) = judge_suback(Suback(codes=(("a/+", 0x00),)), None)
    assert finding.status == "warn"
    (good,) = judge_suback(Suback(codes=(("a/+", 0x01), ("b/#", 0x02))), None)
    assert good.status == "ok"


def test_a_probe_that_never_comes_back_is_an_acl_that_filters_reads() -> None:
    trip = RoundTrip("devices/presence-doctor-1/status", puback=0x00, waited_s=3.0)
    (finding,) = judge_round_trip(trip, "device", "")
    assert finding.status == "fail"
    assert "never came back" in finding.seen
    assert finding.fix is not None
    assert "ACL" in finding.fix
    assert "read" in finding.fix


def test_a_round_trip_is_timed_and_a_slow_one_warns() -> None:
    (fast,) = judge_round_trip(RoundTrip("t", 0, received=True, ms=1.234), None, "")
    assert fast.status == "ok"
    assert fast.data == {"round_trip_ms": 1.23}
    (slow,) = judge_round_trip(RoundTrip("t", 0, received=True, ms=2500.0), None, "")
    assert slow.status == "warn"


def test_a_refused_probe_publish_is_a_warning_that_reads_were_not_tested() -> None:
    (finding,) = judge_round_trip(RoundTrip("t", puback=0x87), "presence-bridge", "")
    assert finding.status == "warn"
    assert "Not authorized (0x87)" in finding.seen


# --- step 3 ------------------------------------------------------------------------------------


def test_messages_dropped_lately_warn_with_the_limits_to_raise() -> None:
    stats = BrokerStats(
        values={
            "version": "mosquitto version 2.0.11",
            "publish/messages/dropped": "17",
            "load/publish/dropped/1min": "3.50",
            "store/messages/count": "40",
        }
    )
    found = by_check(judge_broker(stats))
    assert found["mqtt.broker"].status == "ok"
    assert "messages stored 40" in found["mqtt.broker"].seen
    assert found["mqtt.dropped"].status == "warn"
    assert "17" in found["mqtt.dropped"].seen
    assert found["mqtt.dropped"].fix is not None
    assert "max_queued_messages" in found["mqtt.dropped"].fix


def test_a_dropped_count_absent_or_zero_is_ok() -> None:
    absent = by_check(judge_broker(BrokerStats(values={"version": "v"})))
    assert absent["mqtt.dropped"].status == "ok"
    zero = by_check(judge_broker(BrokerStats(values={"publish/messages/dropped": "0"})))
    assert zero["mqtt.dropped"].status == "ok"


def test_no_sys_values_is_a_warning_not_a_failure() -> None:
    (finding,) = judge_broker(BrokerStats(waited_s=2.0))
    assert finding.status == "warn"
    assert "$SYS" in (finding.fix or "")


# --- step 4 ------------------------------------------------------------------------------------


def test_a_healthy_layout_is_ok_and_co_partitioned() -> None:
    findings = judge_topics(Topics(1, healthy_topics()), PLAN)
    assert {f.status for f in findings} == {"ok"}
    assert "app-device-state-changelog" in by_check(findings)["kafka.copartitioned"].seen


def test_a_missing_topic_fails_with_the_command_that_creates_it() -> None:
    found = healthy_topics()
    found["presence.status"] = None
    status = by_check(judge_topics(Topics(1, found), PLAN))["kafka.topic.status"]
    assert status.status == "fail"
    assert "presence.status does not exist" in status.seen
    assert status.fix is not None
    assert "--create --topic presence.status --partitions 8" in status.fix
    assert "cleanup.policy=compact" in status.fix


def test_another_partition_count_and_no_compaction_fail() -> None:
    found = healthy_topics()
    found["presence.ticks"] = TopicInfo("presence.ticks", 4, 1)
    found["presence.status"] = TopicInfo("presence.status", 8, 1, "delete")
    result = by_check(judge_topics(Topics(1, found), PLAN))
    assert result["kafka.topic.ticks"].status == "fail"
    assert "4 partitions, the configuration says 8" in result["kafka.topic.ticks"].seen
    assert result["kafka.topic.status"].status == "fail"
    assert "not compacted" in result["kafka.topic.status"].seen
    assert result["kafka.copartitioned"].status == "fail"
    assert "presence.ticks has 4" in result["kafka.copartitioned"].seen


def test_replication_against_the_brokers() -> None:
    too_many = by_check(judge_topics(Topics(1, healthy_topics(rf=3)), PLAN))
    assert too_many["kafka.topic.raw"].status == "fail"
    single = by_check(judge_topics(Topics(3, healthy_topics(brokers=3, rf=1)), PLAN))
    assert single["kafka.topic.raw"].status == "warn"
    assert "replication factor 1 on a cluster of 3" in single["kafka.topic.raw"].seen


# --- step 5 ------------------------------------------------------------------------------------

BRIDGE_METRICS = """\
# TYPE presence_bridge_messages_received counter
presence_bridge_messages_received_total 12.0
# TYPE presence_bridge_dead_letters counter
presence_bridge_dead_letters_total{reason="bad_payload"} 2.0
# TYPE presence_bridge_kafka_errors counter
presence_bridge_kafka_errors_total 0.0
# TYPE presence_bridge_outage gauge
presence_bridge_outage{broker="mqtt"} %s
presence_bridge_outage{broker="kafka"} 0.0
"""


def test_an_unhealthy_bridge_names_what_it_cannot_reach() -> None:
    health = HttpAnswer("http://b/health", 503, b'{"healthy": false, "mqtt": false, "kafka": true}')
    metrics = HttpAnswer("http://b/metrics", 200, (BRIDGE_METRICS % "1.0").encode())
    found = by_check(judge_bridge(health, metrics))
    assert found["bridge.health"].status == "fail"
    assert "mqtt down" in found["bridge.health"].seen
    assert found["bridge.metrics"].status == "fail"
    assert "outage now: mqtt" in found["bridge.metrics"].seen


def test_a_healthy_bridge_counts_its_dead_letters_by_reason() -> None:
    health = HttpAnswer("http://b/health", 200, b'{"healthy": true, "mqtt": true, "kafka": true}')
    metrics = HttpAnswer("http://b/metrics", 200, (BRIDGE_METRICS % "0.0").encode())
    found = by_check(judge_bridge(health, metrics))
    assert found["bridge.health"].status == "ok"
    assert found["bridge.metrics"].status == "ok"
    assert "2 dead letters (bad_payload 2)" in found["bridge.metrics"].seen


def test_a_bridge_that_does_not_answer_fails_and_none_given_skips() -> None:
    gone = HttpAnswer("http://b/health", error="connection refused")
    (finding,) = judge_bridge(gone, gone)
    assert finding.status == "fail"
    (skip,) = judge_bridge(None, None)
    assert skip.status == "skip"


WORKER_METRICS = """\
# TYPE presence_worker_events counter
presence_worker_events_total 100.0
# TYPE presence_worker_recovering gauge
presence_worker_recovering 0.0
# TYPE presence_worker_faust_consumer_lag gauge
presence_worker_faust_consumer_lag{partition="0",topic="presence.raw"} %s
presence_worker_faust_consumer_lag{partition="1",topic="presence.raw"} 3.0
"""


def test_a_worker_far_behind_warns_naming_the_partition() -> None:
    ready = HttpAnswer("http://w/ready", 200, b'{"ready": true}')
    metrics = HttpAnswer("http://w/metrics", 200, (WORKER_METRICS % "5000.0").encode())
    found = by_check(judge_worker("http://w", ready, metrics, None, max_lag=1000))
    assert found["worker.ready"].status == "ok"
    assert found["worker.metrics"].status == "warn"
    assert "presence.raw[0] 5000" in found["worker.metrics"].seen
    assert found["worker.metrics"].data["lag_total"] == 5003.0
    assert found["worker.metrics"].data["url"] == "http://w"


def test_a_stopped_worker_fails_and_a_wrong_token_is_named() -> None:
    gone = HttpAnswer("http://w/ready", error="connection refused")
    (finding,) = judge_worker("http://w", gone, gone, None)
    assert finding.status == "fail"
    assert "http://w/ready does not answer" in finding.seen
    ready = HttpAnswer("http://w/ready", 200, b'{"ready": true}')
    metrics = HttpAnswer("http://w/metrics", 200, (WORKER_METRICS % "0.0").encode())
    found = by_check(judge_worker("http://w", ready, metrics, HttpAnswer("http://w/fleet", 401)))
    assert found["worker.token"].status == "fail"
    assert found["worker.metrics"].status == "ok"


def test_a_recovering_worker_is_a_warning() -> None:
    ready = HttpAnswer("http://w/ready", 503, b'{"ready": false}')
    metrics = HttpAnswer("http://w/metrics", 200, (WORKER_METRICS % "0.0").encode())
    found = by_check(judge_worker("http://w", ready, metrics, None))
    assert found["worker.ready"].status == "warn"


# --- step 6 ------------------------------------------------------------------------------------


def test_dead_letters_are_counted_by_reason_without_the_doctors_probes() -> None:
    letters = (
        DeadLetterSeen("bad_payload", "json", f"devices/{PROBE_MARK}1/status", "not JSON"),
        DeadLetterSeen("bad_payload", "json", "devices/a/status", "not JSON"),
        DeadLetterSeen("unknown_topic", "bridge", "x/y", "no profile"),
        DeadLetterSeen("bad_payload", "json", "devices/b/status", "unknown status"),
    )
    (finding,) = judge_dead_letters(Tail("presence.dlq", 1000, dead_letters=letters))
    assert finding.status == "warn"
    assert finding.data == {"reasons": {"bad_payload": 2, "unknown_topic": 1}}
    assert "1 of the doctor's own probes left out" in finding.seen
    only_probes = Tail("presence.dlq", 1000, dead_letters=letters[:1])
    (clean,) = judge_dead_letters(only_probes)
    assert clean.status == "ok"


def test_dead_letters_decode_from_the_record_or_a_header() -> None:
    record = {"reason": "clock_skew", "source": "worker", "topic": "presence.raw", "detail": "d"}
    seen = decode_dead_letter(json.dumps(record).encode())
    assert seen == DeadLetterSeen("clock_skew", "worker", "presence.raw", "d")
    assert decode_dead_letter(b"\xff", [("reason", b"oversize")]).reason == "oversize"
    assert decode_dead_letter(None).reason == "unreadable"


def test_flapping_devices_and_the_most_changes_are_named() -> None:
    statuses = (
        StatusSeen("cam-1", "online", False),
        StatusSeen("agent-7", "offline", True),
        StatusSeen("agent-7", "online", True),
        StatusSeen("agent-7", "offline", True),
    )
    (finding,) = judge_flapping(Tail("presence.status", 1000, statuses=statuses))
    assert finding.status == "warn"
    assert "agent-7 3 change(s) (flapping now)" in finding.seen
    assert finding.data["flapping_now"] == ["agent-7"]
    calm = Tail("presence.status", 1000, statuses=statuses[:1])
    assert judge_flapping(calm)[0].status == "ok"


def test_status_records_decode_and_tombstones_are_skipped() -> None:
    value = b'{"device": "d", "status": "online", "flapping": true, "version": 3}'
    assert decode_status(value) == StatusSeen("d", "online", True)
    assert decode_status(None) is None
    assert decode_status(b"[1]") is None


# --- properties --------------------------------------------------------------------------------

statuses = st.sampled_from(["ok", "warn", "fail", "skip"])
findings_lists = st.lists(
    st.builds(
        Finding,
        step=st.integers(1, 6),
        check=st.text(max_size=8),
        status=statuses,
        seen=st.text(max_size=8),
    ),
    max_size=20,
)


@given(findings_lists)
def test_exit_status_is_1_exactly_when_a_check_failed(findings: list[Finding]) -> None:
    assert exit_status(findings) == (1 if any(f.status == "fail" for f in findings) else 0)
    doc = msgspec.json.decode(to_json(findings))
    assert doc["exit_status"] == exit_status(findings)
    assert sum(doc["counts"].values()) == len(findings)
    assert len(doc["findings"]) == len(findings)


codes = st.integers(0, 255)
texts = st.text(max_size=20)
maybe_text = st.none() | texts
reaches = st.builds(
    Reach,
    host=st.text(min_size=1, max_size=10),
    port=st.integers(1, 65535),
    addresses=st.tuples(texts),
    dns_error=maybe_text,
    tcp_ms=st.none() | st.floats(0, 10_000),
    tcp_error=maybe_text,
    tls_wanted=st.booleans(),
    tls_version=maybe_text,
    tls_error=maybe_text,
    tls_untrusted=st.booleans(),
)
topic_infos = st.none() | st.builds(
    TopicInfo,
    name=st.sampled_from(["presence.raw", "presence.ticks", "presence.status", "presence.dlq"]),
    partitions=st.integers(1, 12),
    replication_factor=st.integers(1, 4),
    cleanup_policy=st.sampled_from([None, "compact", "delete", "compact,delete"]),
    offline_partitions=st.integers(0, 2),
    under_replicated=st.integers(0, 2),
)


def judged(
    reach: Reach,
    connack: Connack,
    suback: Suback,
    trip: RoundTrip,
    stats: BrokerStats,
    brokers: int,
    infos: list[TopicInfo | None],
) -> list[Finding]:
    found = {
        name: None if info is None else TopicInfo(name, *list(info.__dict__.values())[1:])
        for name, info in zip(PLAN.names.values(), infos, strict=True)
    }
    return [
        *judge_reach("mqtt", reach, "mqtt_url"),
        *judge_connack(connack, "mqtt://b"),
        *judge_suback(suback, None),
        *judge_round_trip(trip, None, "why"),
        *judge_broker(stats),
        *judge_topics(Topics(brokers, found), PLAN),
    ]


@given(
    reaches,
    st.builds(Connack, code=st.none() | codes, user=maybe_text, error=maybe_text),
    st.builds(Suback, codes=st.lists(st.tuples(texts, codes), max_size=3).map(tuple)),
    st.builds(
        RoundTrip,
        topic=texts,
        puback=st.none() | codes,
        received=st.booleans(),
        ms=st.none() | st.floats(0, 5000),
    ),
    st.builds(
        BrokerStats,
        values=st.dictionaries(
            st.sampled_from(["version", "publish/messages/dropped", "load/publish/dropped/1min"]),
            st.sampled_from(["0", "3", "0.50", "x"]),
        ),
    ),
    st.integers(1, 4),
    st.lists(topic_infos, min_size=4, max_size=4),
)
def test_every_warning_and_failure_says_what_to_fix(
    reach: Reach,
    connack: Connack,
    suback: Suback,
    trip: RoundTrip,
    stats: BrokerStats,
    brokers: int,
    infos: list[TopicInfo | None],
) -> None:
    for finding in judged(reach, connack, suback, trip, stats, brokers, infos):
        assert finding.seen
        if finding.status in ("warn", "fail"):
            assert finding.fix, finding
        if finding.status == "skip":
            assert finding.seen.startswith("not tried: ")


@given(st.lists(st.integers(1, 12), min_size=3, max_size=3), st.integers(1, 12))
def test_co_partitioning_fails_exactly_when_the_counts_differ(
    counts: list[int], changelog: int
) -> None:
    found: dict[str, TopicInfo | None] = dict(healthy_topics())
    for name, count in zip(
        ["presence.raw", "presence.ticks", "presence.status"], counts, strict=True
    ):
        found[name] = TopicInfo(name, count, 1, "compact")
    found["app-device-state-changelog"] = TopicInfo("app-device-state-changelog", changelog, 1)
    verdict = by_check(judge_topics(Topics(1, found), PLAN))["kafka.copartitioned"]
    assert (verdict.status == "fail") == (len({*counts, changelog}) > 1)


def test_the_probe_topic_fills_a_filters_wildcards_and_skips_the_brokers_own() -> None:
    from mqtt_presence.doctor.probes import probe_topic  # noqa: PLC0415 - loads paho

    device = f"{PROBE_MARK}x"
    assert probe_topic(["$SYS/brokers/+/clients/+/+", "devices/+/status"], device) == (
        f"devices/{device}/status"
    )
    assert probe_topic(["tele/+/#"], device) == f"tele/{device}/{device}"
    assert probe_topic(["$SYS/#"], device) is None
