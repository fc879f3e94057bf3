"""The whole pipeline on the real stack: real devices, Mosquitto, the bridge, a streams worker.

Each test is named after the field case it covers.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import paho.mqtt.client as mqtt
import pytest
from kafka import KafkaProducer

from mqtt_presence.bridge.profiles.sparkplug import (
    REBIRTH_METRIC,
    Payload,
    encode_device_payload,
    encode_payload,
)
from mqtt_presence.core import ConnectionEvent, EventKind, SessionOrder, Status, StatusChange
from mqtt_presence.core.records import schema_path
from mqtt_presence.stack import LocalStack, StackInfo
from mqtt_presence.streams.output import EXIT_RESTART_ME
from mqtt_presence.worker_process import WorkerProcess

from .helpers import (
    Publisher,
    read_topic,
    running_bridge,
    unique,
    wait_for,
)
from .pipeline import POISON, Pipeline, Workers, running_pipeline


@pytest.fixture(scope="module")
def pipeline(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(stack, tmp_path_factory.mktemp("worker")) as running:
        yield running


def publish_births(pipeline: Pipeline, count: int) -> list[str]:
    devices = [unique("dev") for _ in range(count)]
    pub = Publisher(pipeline.stack)
    for i, device in enumerate(devices):
        pub.publish(
            f"{pipeline.topics['prefix']}/{device}/status",
            json.dumps({"status": "online", "session": i}),
        )
    pub.close()
    wait_for(lambda: all(pipeline.status_of(d) for d in devices), 20, "the births to be applied")
    return devices


def test_unknown_devices_and_status_records_follow_the_contract(pipeline: Pipeline) -> None:
    publish_births(pipeline, 3)
    code, body = pipeline.get(f"/devices/{unique('nobody')}")
    assert code == 404
    assert body["error"] == "unknown device"
    schema = jsonschema.Draft202012Validator(json.loads(schema_path("presence.status").read_text()))
    changes = pipeline.changes()
    assert changes
    for change in changes:
        schema.validate(json.loads(msgspec.json.encode(change)))


def test_a_consumer_of_presence_status_rebuilds_what_the_http_api_shows(
    pipeline: Pipeline,
) -> None:
    publish_births(pipeline, 20)
    latest: dict[str, StatusChange] = {}
    for change in pipeline.changes():  # from the beginning, upserting by version
        if change.device not in latest or change.version > latest[change.device].version:
            latest[change.device] = change
    assert latest
    for device, change in latest.items():
        shown = pipeline.status_of(device)
        assert shown is not None
        assert (shown["status"], shown["version"]) == (change.status.value, change.version)


def test_listing_fleet_counts_cli_and_metrics(pipeline: Pipeline) -> None:
    devices = publish_births(pipeline, 5)
    code, page = pipeline.get("/devices?status=online&limit=2")
    assert code == 200
    assert len(page["devices"]) == 2
    assert all(d["status"] == "online" for d in page["devices"])
    seen = [d["device"] for d in page["devices"]]
    while page["next_cursor"]:
        code, page = pipeline.get(f"/devices?status=online&limit=2&cursor={page['next_cursor']}")
        seen += [d["device"] for d in page["devices"]]
    assert seen == sorted(seen)
    assert set(devices) <= set(seen)
    code, fleet = pipeline.get("/fleet")
    assert code == 200
    assert fleet["online"] >= 5
    assert fleet["devices"] == sum(fleet[k] for k in ("online", "offline", "sleeping", "flapping"))
    for bad in ("/devices?status=sideways", "/devices?limit=0", "/devices?limit=many"):
        code, body = pipeline.get(bad)
        assert code == 400, bad
        assert body["error"]
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "mqtt_presence",
            "status",
            devices[0],
            "--json",
            "--url",
            f"http://127.0.0.1:{pipeline.port}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["status"] == "online"
    with urllib.request.urlopen(f"http://127.0.0.1:{pipeline.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert "presence_worker_events_total" in text
    assert 'presence_worker_status_changes_total{status="online"}' in text
    # Faust's figures, read from its monitor: the consumer lag of each raw partition it read
    raw = pipeline.topics["raw"]
    faust = "presence_worker_faust"
    assert re.search(rf'{faust}_consumer_lag\{{partition="\d",topic="{raw}"\}} \d', text)
    assert re.search(rf'{faust}_messages_received_total\{{topic="{raw}"\}} [1-9]', text)


def test_a_restarted_worker_recovers_its_pending_grace_deadline_and_fires_it(
    stack: StackInfo, tmp_path: Path
) -> None:
    workers = Workers(stack, tmp_path, grace_ms=8_000, store="rocksdb")  # the default store
    try:
        port = workers.start()
        with running_bridge(workers.bridge_settings()) as bridge:
            p = Pipeline(stack, bridge, port, workers.topics)
            cam = unique("cam")
            dev = p.device(cam, session=1)
            dev.birth()
            dev.die()  # the will comes at once; the offline is due 8 s later
            wait_for(lambda: any(e.kind is EventKind.WILL for e in p.raw(cam)), 20, "the will")
            time.sleep(1)  # the will is applied: the deadline is in the table, not yet fired
            workers.kill(port)
            p.port = workers.start()  # recovers the table from its changelog
            wait_for(
                lambda: (p.status_of(cam) or {}).get("status") == "offline",
                30,
                "the recovered deadline to fire",
            )
            changes = p.changes(cam, timeout=3)
    finally:
        workers.stop_all()
    by_version: dict[int, StatusChange] = {}
    for c in changes:  # the restarted worker re-announced what it inherited: identical repeats
        assert by_version.setdefault(c.version, c) == c
    assert [(c.status.value, c.version, c.reason.value) for c in by_version.values()] == [
        ("online", 1, "birth"),
        ("offline", 2, "will"),
    ]
    assert len(changes) > len(by_version)


def list_all(p: Pipeline, status: str) -> list[str]:
    """Every device of one status, page by page (7 a page) through the cursor."""
    names: list[str] = []
    cursor = ""
    while True:
        code, page = p.get(f"/devices?status={status}&limit=7&cursor={cursor}")
        assert code == 200, page
        names += [d["device"] for d in page["devices"]]
        if not page["next_cursor"]:
            return names
        cursor = page["next_cursor"]


def test_two_workers_split_the_partitions_and_survive_a_sigkill(
    stack: StackInfo, tmp_path: Path
) -> None:
    workers = Workers(stack, tmp_path, partitions=8)
    devices = [unique("d") for _ in range(40)]
    try:
        first = workers.start()
        second = workers.start()
        with running_bridge(workers.bridge_settings()) as bridge:
            p = Pipeline(stack, bridge, first, workers.topics)
            wait_for(lambda: p.get("/fleet")[1].get("workers") == 2, 30, "two workers")
            pub = Publisher(stack)
            prefix = workers.topics["prefix"]
            truth: dict[str, str] = {}
            for rnd in range(6):  # a steady stream: births and wills, session by session
                for i, d in enumerate(devices):
                    status = "online" if (rnd + i) % 3 else "offline"
                    pub.publish(
                        f"{prefix}/{d}/status", json.dumps({"status": status, "session": rnd + 1})
                    )
                    truth[d] = status
                if rnd == 0:  # any worker answers for any device: routed to its owner
                    wait_for(
                        lambda: all(p.status_of(d) for d in devices),
                        30,
                        "every device to be known through the first worker",
                    )
                    _, both = p.get("/fleet")
                    assert (both["workers"], both["devices"]) == (2, len(devices))
                if rnd == 2:
                    workers.kill(first)  # SIGKILL in the middle of the stream
                    p.port = second
                time.sleep(0.5)
            pub.close()

            restarted = []

            def settled() -> bool:
                if workers.procs[p.port].proc.poll() == EXIT_RESTART_ME:
                    # Its recovery stalled (a Faust bug) and it exited to be restarted: do what
                    # its supervisor would.
                    restarted.append(workers.procs.pop(p.port).log.read_text()[-2000:])
                    p.port = workers.start()
                shown = {d: (p.status_of(d) or {}).get("status") for d in devices}
                return shown == truth

            wait_for(settled, 120, "every device to show its true status on the survivor")
            _, fleet = p.get("/fleet")
            listed = {status: list_all(p, status) for status in ("online", "offline")}
            changes = p.changes(timeout=5)
            survivor_log = workers.procs[p.port].log.read_text()
    finally:
        workers.stop_all()
    # The survivor re-announced the partitions it took over from the killed worker, not the
    # ones it had held all along (a restarted survivor took them all over).
    recoveries = re.findall(
        r"holding partitions \[([\d, ]*)\]; \d+ changes to re-announce for the ones taken over "
        r"\[([\d, ]*)\]",
        survivor_log,
    )

    def parts(text: str) -> set[int]:
        return {int(x) for x in text.split(",") if x.strip()}

    if restarted:
        print(f"the survivor's recovery stalled and it was restarted; its log ended:{restarted}")
        assert [parts(held) for held, _ in recoveries] == [set(range(8))]
        assert parts(recoveries[0][1]) == set(range(8))
    else:
        assert len(recoveries) >= 2, survivor_log[-3000:]
        (held_before, _), (held_now, taken_over) = recoveries[-2:]
        assert parts(held_now) == set(range(8))
        assert parts(taken_over) == set(range(8)) - parts(held_before)
        assert parts(held_before), "the survivor held partitions before the kill"
    assert fleet["workers"] == 1
    # The counts and the lists come from the status index, rebuilt in the survivor's recovery
    # after the rebalance and kept since: exactly the truth.
    want = Counter(truth.values())
    assert (fleet["online"], fleet["offline"], fleet["flapping"]) == (
        want["online"],
        want["offline"],
        0,
    )
    for status, names in listed.items():
        assert names == sorted(d for d in devices if truth[d] == status)
    assert_versions_never_go_back(changes)


def assert_versions_never_go_back(changes: list[StatusChange]) -> None:
    """In each partition's order (a device's changes are in one): a version seen again is the
    same change (reprocessed or re-announced), and versions never go backwards."""
    by_version: dict[tuple[str, int], StatusChange] = {}
    last: dict[str, int] = {}
    for c in changes:
        key = (c.device, c.version)
        if key in by_version:
            assert by_version[key] == c
        by_version[key] = c
        assert c.version >= last.get(c.device, 0), c
        last[c.device] = c.version


def test_a_worker_paused_past_its_group_session_exits_instead_of_writing_older_states(
    stack: StackInfo, tmp_path: Path
) -> None:
    """A worker SIGSTOPped longer than its group session (6 s here) in the middle of a steady
    stream loses its partitions; on SIGCONT it must not process the records its last fetch
    brought with its state from before the pause: that wrote older states after the new
    owner's, into presence.status and into the changelog that later recoveries restore (found
    by `python -m bench.faults --faults stop-worker`: 58-66 devices wrong in 3 runs of 3). It
    exits with 75 instead, before writing; restarted, it recovers what the owner wrote.
    Reference: Kafka's consumer `session.timeout.ms` (a member silent that long is removed and
    its partitions reassigned) and the "zombie" fencing of KIP-98."""
    workers = Workers(stack, tmp_path, partitions=8, store="rocksdb")
    devices = [unique("d") for _ in range(400)]
    rate, total, pause_at, pause_s = 200, 4000, 800, 10.0
    try:
        first = workers.start()
        second = workers.start()
        paused = workers.procs[first]
        with running_bridge(workers.bridge_settings()) as bridge:
            p = Pipeline(stack, bridge, second, workers.topics)
            wait_for(lambda: p.get("/fleet")[1].get("workers") == 2, 30, "two workers")
            pub = Publisher(stack)
            prefix = workers.topics["prefix"]
            truth: dict[str, str] = {}
            stopped_at = resumed_at = 0.0
            started = time.monotonic()
            for k in range(total):  # 200 births and wills a second, each device in turn
                rnd, i = divmod(k, len(devices))
                d = devices[i]
                status = "online" if (rnd + i) % 3 else "offline"
                pub.publish(
                    f"{prefix}/{d}/status", json.dumps({"status": status, "session": rnd + 1})
                )
                truth[d] = status
                if k == pause_at:
                    paused.proc.send_signal(signal.SIGSTOP)
                    stopped_at = time.monotonic()
                if stopped_at and not resumed_at and time.monotonic() - stopped_at > pause_s:
                    paused.proc.send_signal(signal.SIGCONT)  # its partitions have moved on
                    resumed_at = time.monotonic()
                time.sleep(max(0.0, started + k / rate - time.monotonic()))
            pub.close()
            assert resumed_at, "the stream outlasted the pause"
            assert paused.proc.wait(30) == EXIT_RESTART_ME
            log = paused.log.read_text()
            assert "longer than its group session allows" in log, log[-3000:]
            del workers.procs[first]
            workers.start()  # what its supervisor does

            def settled() -> bool:
                shown = {d: (p.status_of(d) or {}).get("status") for d in devices}
                return shown == truth

            wait_for(settled, 120, "every device to show its true status")
            _, fleet = p.get("/fleet")
            changes = p.changes(timeout=5)
    finally:
        workers.stop_all()
    assert fleet["workers"] == 2
    assert_versions_never_go_back(changes)


@pytest.mark.parametrize(
    ("progress_s", "false_offline"),
    [(0.5, False), (0.0, True)],
    ids=["bridges-report-progress", "progress-off-shows-the-defect"],
)
def test_a_stale_will_through_one_bridge_waits_for_the_birth_held_in_another(
    stack: StackInfo, tmp_path: Path, progress_s: float, false_offline: bool
) -> None:
    """Two bridges, one device: its new birth waits in bridge B's queue at the broker (B is
    stopped; its persistent session keeps the message) while its old connection's will comes
    through bridge A. The worker must not end the will's grace (2 s) before B has delivered
    what it was queued before: B's last progress record holds the grace back (for up to
    `bridge_silence_s`, 15 s); B comes back and hands the birth on, stamped with its late
    receive time, past the deadline, but B's watermark was still before the deadline, so the
    birth counts as in time; the device never shows offline. With progress records off, the
    same case shows the false offline this prevents
    (the storm with two bridges sharing a subscription found 10 in 95,000). Reference: a shared
    subscription hands each message to one member (MQTT 5.0, 4.8.2), so one device's messages
    may travel different queues; only one session's queue keeps its order."""
    workers = Workers(stack, tmp_path, grace_ms=2_000)
    prefix = workers.topics["prefix"]

    def bridge_for(kind: str) -> Any:
        return workers.bridge_settings(
            client_id=f"bridge-{kind}-{prefix}",
            profiles=[{"kind": "json", "topic": f"{prefix}/{kind}/{{device}}"}],
            progress_interval_s=progress_s,
        )

    births, wills = bridge_for("births"), bridge_for("wills")
    cam = unique("cam")
    try:
        port = workers.start()
        with running_bridge(wills) as bridge_a:
            p = Pipeline(stack, bridge_a, port, workers.topics)
            pub = Publisher(stack)
            with running_bridge(births):
                pub.publish(
                    f"{prefix}/births/{cam}", json.dumps({"status": "online", "session": 1})
                )
                wait_for(lambda: p.status_of(cam) is not None, 20, "the first birth")
                time.sleep(2 * max(progress_s, 0.5))  # B's progress is in the raw topic
            # B is away: the new birth waits in its session at the broker
            pub.publish(f"{prefix}/births/{cam}", json.dumps({"status": "online", "session": 2}))
            pub.publish(f"{prefix}/wills/{cam}", json.dumps({"status": "offline", "session": 1}))
            time.sleep(6)  # three graces
            shown_while_b_away = (p.status_of(cam) or {}).get("status")
            with running_bridge(births):  # B is back: the birth comes
                wait_for(
                    lambda: any(e.session in (2, "2") for e in p.raw(cam)),
                    20,
                    "the birth held in B's queue",
                )
                wait_for(lambda: (p.status_of(cam) or {}).get("status") == "online", 20, "online")
            pub.close()
            changes = p.changes(cam, timeout=3)
            print("RAW", [(e.kind, e.session, e.received_at) for e in p.raw(cam)])
            print(
                "CHANGES",
                [
                    (c.status, c.version, c.session, c.since, c.decided_at, c.reason)
                    for c in changes
                ],
            )
    finally:
        workers.stop_all()
    offlines = [c for c in changes if c.status is Status.OFFLINE]
    if false_offline:
        assert shown_while_b_away == "offline"
        assert offlines, changes
    else:
        assert shown_while_b_away == "online"
        assert offlines == [], changes


def test_poison_messages_between_good_births_stop_nothing(pipeline: Pipeline) -> None:
    prefix = pipeline.topics["prefix"]
    good = [unique("good") for _ in range(30)]
    poisoners = {name: unique(f"poison-{name.replace('_', '-')}") for name in POISON}
    pub = Publisher(pipeline.stack)
    births = iter(good)
    for name, payload in POISON.items():
        for _ in range(3):
            device = next(births)
            pub.publish(f"{prefix}/{device}/status", json.dumps({"status": "online", "session": 1}))
        pub.publish(f"{prefix}/{poisoners[name]}/status", payload)
    pub.close()
    # Garbage written straight into presence.raw, past the bridge: the worker's own boundary.
    producer = KafkaProducer(bootstrap_servers=pipeline.stack.kafka_bootstrap)
    straight = unique("straight")
    producer.send(
        pipeline.topics["raw"],
        key=straight.encode(),
        value=b'{"device":"%s","kind":"birth","received_at":-5}' % straight.encode(),
    )
    producer.send(pipeline.topics["raw"], key=b"x", value=b"\xff\xfe not a record")
    future = unique("future")  # a bridge whose clock is a year ahead: must not freeze a device
    producer.send(
        pipeline.topics["raw"],
        key=future.encode(),
        value=b'{"device":"%s","kind":"birth","received_at":%d}'
        % (future.encode(), int(time.time() * 1000) + 365 * 86_400_000),
    )
    producer.flush()
    producer.close()

    wait_for(lambda: all(pipeline.status_of(d) for d in good), 30, "every good birth applied")
    assert all(pipeline.status_of(d)["status"] == "online" for d in good)  # type: ignore[index]
    changes = {c.device for c in pipeline.changes()}
    assert set(good) <= changes
    assert not set(poisoners.values()) & changes
    assert straight not in changes

    def dead_letters() -> list[Any]:
        records = read_topic(pipeline.stack, pipeline.topics["dlq"], 10**9, 3)
        return [msgspec.json.decode(r.value) for r in records]

    deadline = time.monotonic() + 30
    letters = dead_letters()
    while sum(d["source"] == "worker" for d in letters) < 3 and time.monotonic() < deadline:
        letters = dead_letters()  # the worker's own are written as it gets to them
    by_device = {
        name: [d for d in letters if d["source"] != "worker" and f"/{device}/" in d["topic"]]
        for name, device in poisoners.items()
    }
    missing = [name for name, found in by_device.items() if len(found) != 1]
    assert not missing, f"not dead-lettered exactly once: {missing}"
    reasons = {name: found[0]["reason"] for name, found in by_device.items()}
    assert reasons["session_beyond_int64"] == "out_of_range"
    assert reasons["nul_in_session"] == "out_of_range"
    assert reasons["negative_time"] == "out_of_range"
    assert reasons["not_utf8_in_a_string"] == "bad_payload"
    assert reasons["oversize"] == "oversize"
    for name, found in by_device.items():  # the original bytes, untouched
        assert base64.b64decode(found[0]["payload_base64"]) == POISON[name], name
    worker_letters = [d for d in letters if d["source"] == "worker"]
    assert len(worker_letters) == 3
    assert sorted(d["reason"] for d in worker_letters) == ["bad_record", "bad_record", "clock_skew"]
    assert future not in changes
    # The contract (README, *Records*, and the schema): both writers' letters validate; the
    # bridge's are keyed by the MQTT topic, the worker's by the raw record's key.
    schema = jsonschema.Draft202012Validator(json.loads(schema_path("presence.dlq").read_text()))
    keyed = read_topic(pipeline.stack, pipeline.topics["dlq"], 10**9, 3)
    for record in keyed:
        letter = json.loads(record.value)
        schema.validate(letter)
        if letter["source"] == "worker":
            assert letter["topic"] == pipeline.topics["raw"]
            assert record.key in {straight.encode(), b"x", future.encode()}
        else:
            assert record.key == letter["topic"].encode()
    assert pipeline.bridge.health()["mqtt"]
    assert pipeline.bridge.health()["kafka"]


def listening_addresses(port: int) -> set[str]:
    """The local addresses of TCP sockets listening on `port` (Linux /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_the_http_api_listens_on_loopback_only_by_default(pipeline: Pipeline) -> None:
    # It has no authentication; Faust's own default (web_bind) is every interface.
    assert listening_addresses(pipeline.port) == {"0100007F"}  # 127.0.0.1, nothing else


def test_local_table_data_of_a_purged_kafka_is_rebuilt_not_a_crash(stack_home: Path) -> None:
    # Seen by an operator: `presence worker` keeps RocksDB data in its data_dir; the local stack
    # was made anew (new cluster, empty topics) and the next worker died in table recovery with
    # Faust's ConsistencyError ("persisted offset ... is higher than the last offset").
    local = LocalStack(stack_home / "stack")
    data_dir = stack_home / "worker-data"
    workers_home = stack_home / "workers"
    workers_home.mkdir(parents=True)
    topics = {"raw": "raw", "status": "status", "dlq": "dlq", "ticks": "ticks", "prefix": "p"}

    def run_worker_with(devices: list[str]) -> tuple[WorkerProcess, str]:
        info = local.up()
        worker = WorkerProcess.start(
            info.kafka_bootstrap,
            workers_home,
            topics,
            "app",
            partitions=2,
            store="rocksdb",
            data_dir=data_dir,
        ).wait_ready()
        producer = KafkaProducer(bootstrap_servers=info.kafka_bootstrap)
        for device in devices:
            event = ConnectionEvent(
                device=device,
                kind=EventKind.BIRTH,
                received_at=int(time.time() * 1000),
                session=1,
                session_order=SessionOrder.COUNTER,
            )
            producer.send("raw", key=device.encode(), value=msgspec.json.encode(event))
        producer.close()

        def applied() -> bool:
            for device in devices:
                try:
                    with urllib.request.urlopen(f"{worker.url}/devices/{device}", timeout=2):
                        pass
                except urllib.error.URLError:
                    return False
            return True

        wait_for(applied, 30, "the births to be applied")
        return worker, worker.log.read_text()

    try:
        first, _ = run_worker_with([f"old-{i}" for i in range(20)])
        first.stop()
        local.down(purge=True)  # a new Kafka: every topic and offset starts again at 0
        second, log = run_worker_with(["new-0"])
        try:
            assert "is not this Kafka's" in log
            assert "it belongs to Kafka cluster" in log
            with pytest.raises(urllib.error.HTTPError) as gone:
                urllib.request.urlopen(f"{second.url}/devices/old-0", timeout=2)
            assert gone.value.code == 404
        finally:
            second.stop()
        # The same Kafka again: the local data is kept (a restart does not rebuild needlessly).
        third, log = run_worker_with(["new-1"])
        third.stop()
        assert "is not this Kafka's" not in log
    finally:
        local.down(purge=True)


def test_device_classes_and_sleep_through_mosquitto_bridge_and_worker(
    stack: StackInfo, tmp_path: Path
) -> None:
    # Issue 13: one fleet of mains cameras (a short grace), battery sensors that sleep (Homie
    # 4.0 `$state` `sleeping`: "You have to send this message before sleeping"; or silent past
    # their class's inactivity timeout) and everything else on the base settings.
    workers = Workers(
        stack,
        tmp_path,
        grace_ms=30_000,
        presence={
            "classes": [
                {"name": "cameras", "match": {"device": "cam-*"}, "offline_grace_ms": 0},
                {
                    "name": "sensors",
                    "match": {"profile": "homie"},
                    "offline_grace_ms": 1_000,
                    "inactivity_timeout_ms": 3_000,
                    "sleeps": True,
                },
            ]
        },
    )
    prefix = workers.topics["prefix"]
    homie = f"{prefix}/homie/{{device}}/$state"
    settings = workers.bridge_settings(
        profiles=[
            {"kind": "json", "topic": f"{prefix}/{{device}}/status"},
            {"kind": "homie", "topic": homie},
        ]
    )
    try:
        port = workers.start()
        with running_bridge(settings) as bridge:
            p = Pipeline(stack, bridge, port, workers.topics)
            cam, door = p.device("cam-1", session=1), p.device("door-1", session=1)
            for d in (cam, door):
                d.birth()
            pub = Publisher(stack)
            pub.publish(homie.format(device="th-1"), "ready", qos=1)
            pub.publish(homie.format(device="th-2"), "ready", qos=1)
            wait_for(
                lambda: all(p.status_of(d) for d in ("cam-1", "door-1", "th-1", "th-2")),
                30,
                "four devices online",
            )
            pub.publish(homie.format(device="th-1"), "sleeping", qos=1)  # it says so
            cam.die()
            door.die()  # the broker publishes both wills; only the camera's class has no grace
            wait_for(
                lambda: (p.status_of("cam-1") or {}).get("status") == "offline",
                20,
                "the camera offline at once (its class: no grace)",
            )
            wait_for(
                lambda: (p.status_of("th-1") or {}).get("sleeping") is True,
                20,
                "th-1 sleeping, as it said (after its class's 1 s grace)",
            )
            wait_for(  # th-2 said nothing for 3 s: its class says it sleeps
                lambda: (p.status_of("th-2") or {}).get("sleeping") is True,
                20,
                "th-2 sleeping after its class's inactivity timeout",
            )
            assert (p.status_of("door-1") or {}).get("status") == "online"  # 30 s base grace
            code, fleet = p.get("/fleet")
            assert code == 200
            assert (fleet["online"], fleet["offline"], fleet["sleeping"]) == (1, 1, 2)
            code, page = p.get("/devices?status=sleeping")
            assert [d["device"] for d in page["devices"]] == ["th-1", "th-2"]
            th1 = [c for c in p.changes("th-1") if c.sleeping]
            assert [(c.status.value, c.reason.value) for c in th1] == [
                ("offline", "graceful_offline")
            ]
            th2 = [c for c in p.changes("th-2") if c.sleeping]
            assert [(c.status.value, c.reason.value) for c in th2] == [
                ("offline", "inactivity_timeout")
            ]
            pub.close()
    finally:
        workers.stop_all()


class Watcher:
    """A real MQTT client that keeps every message of its subscriptions."""

    def __init__(self, stack: StackInfo, *filters: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []  # topic, payload, retain
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda _c, _u, m: self.messages.append(
            (m.topic, bytes(m.payload), m.retain)
        )
        self.client.connect(stack.mqtt_host, stack.mqtt_port)
        for f in filters:
            self.client.subscribe(f, qos=1)
        self.client.loop_start()

    def of(self, topic: str) -> list[bytes]:
        return [payload for t, payload, _ in list(self.messages) if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_sparkplug_node_death_takes_its_devices_offline_through_the_real_pipeline(
    stack: StackInfo, tmp_path: Path
) -> None:
    # Sparkplug 3.0 host rules, end to end: a primary host's STATE (spBv1.0/STATE/<id>, JSON
    # {"online", "timestamp"}, retained, its will the same with online false and the same
    # timestamp); "Immediately after receiving an NDEATH from an Edge Node, Host Applications MUST
    # mark all Sparkplug Devices associated with the Edge Node as offline"; and a rebirth request
    # (NCMD `Node Control/Rebirth`) to a node whose NBIRTH was not seen.
    workers = Workers(stack, tmp_path, grace_ms=500)
    prefix = workers.topics["prefix"]
    host_id = f"host-{prefix}"
    state_topic = f"spBv1.0/STATE/{host_id}"
    settings = workers.bridge_settings(
        profiles=[
            {"kind": "sparkplug", "topic": f"{prefix}/spBv1.0/{{group}}/{{event}}/{{device}}"}
        ],
        sparkplug_host_id=host_id,
    )
    ns = f"{prefix}/spBv1.0/plant"
    watcher = Watcher(stack, state_topic, f"{ns}/NCMD/#")
    edge = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-{prefix}", protocol=mqtt.MQTTv5
    )
    now = int(time.time() * 1000)
    edge.will_set(f"{ns}/NDEATH/edge-1", encode_payload(0, now), qos=1)
    try:
        port = workers.start()
        with running_bridge(settings) as bridge:
            wait_for(lambda: watcher.of(state_topic), 20, "the host's STATE")
            online = json.loads(watcher.of(state_topic)[-1])
            assert online["online"] is True
            assert isinstance(online["timestamp"], int)
            edge.connect(stack.mqtt_host, stack.mqtt_port, keepalive=5)
            edge.loop_start()
            for topic, payload in (
                (f"{ns}/NBIRTH/edge-1", encode_payload(0, now, seq=0)),
                (f"{ns}/DBIRTH/edge-1/pump-1", encode_device_payload(now, seq=1)),
                (f"{ns}/DBIRTH/edge-1/pump-2", encode_device_payload(now, seq=2)),
            ):
                edge.publish(topic, payload, qos=1).wait_for_publish(10)
            p = Pipeline(stack, bridge, port, workers.topics)
            devices = ("plant/edge-1", "plant/edge-1/pump-1", "plant/edge-1/pump-2")
            wait_for(
                lambda: all((p.status_of(d) or {}).get("status") == "online" for d in devices),
                30,
                "the node and its two devices online",
            )
            edge.loop_stop()  # the edge node loses power: no DISCONNECT, the broker sends NDEATH
            sock = edge.socket()
            assert isinstance(sock, socket.socket)
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            wait_for(
                lambda: all((p.status_of(d) or {}).get("status") == "offline" for d in devices),
                30,
                "the node and both devices offline after its NDEATH",
            )
            pumps = [c for c in p.changes() if c.device.endswith(("pump-1", "pump-2"))]
            assert [c.status.value for c in pumps if c.device.endswith("pump-1")] == [
                "online",
                "offline",
            ]
            # the reason says so: a will, caused by the node's death
            offline = [c for c in pumps if c.status.value == "offline"]
            assert {(c.reason.value, c.cause) for c in offline} == {("will", "node_death")}
            assert (p.status_of("plant/edge-1/pump-2") or {}).get("cause") == "node_death"
            # another node talks without having been seen born: the host asks it to rebirth
            pub = Publisher(stack)
            pub.publish(f"{ns}/DDATA/edge-2/fan", encode_device_payload(now + 1))
            wait_for(lambda: watcher.of(f"{ns}/NCMD/edge-2"), 20, "a rebirth request")
            request = Payload()
            request.ParseFromString(watcher.of(f"{ns}/NCMD/edge-2")[0])
            assert [(m.name, m.boolean_value) for m in request.metrics] == [(REBIRTH_METRIC, True)]
            pub.close()
        # a clean stop says offline itself, with the timestamp of its birth, retained
        wait_for(lambda: len(watcher.of(state_topic)) >= 2, 20, "the host's offline STATE")
        offline = json.loads(watcher.of(state_topic)[-1])
        assert offline == {"online": False, "timestamp": online["timestamp"]}
        late = Watcher(stack, state_topic)  # a node connecting now reads the retained STATE
        wait_for(lambda: late.of(state_topic), 10, "the retained STATE")
        assert json.loads(late.of(state_topic)[-1])["online"] is False
        late.close()
    finally:
        watcher.close()
        workers.stop_all()
        Publisher(stack).publish(state_topic, b"", retain=True)  # leave no retained message
