"""The pipeline over secured connections, on a real `presence stack up --secure`: Kafka with a
SASL_SSL listener (SCRAM users made at format time) and an mTLS listener, Mosquitto with TLS,
a password file, an ACL and a client-certificate listener.

What the outside says should happen, and where:
- Kafka: SASL/SCRAM credentials of a KRaft cluster are added with `kafka-storage format
  --add-scram` (Kafka docs, "Authentication using SASL/SCRAM", KRaft section); a PEM key store
  is `ssl.keystore.type=PEM` (KIP-651); `ssl.client.auth=required` refuses clients without a
  certificate the broker trusts (Kafka docs, "Encryption and Authentication using SSL").
- Mosquitto: `password_file`, `acl_file`, `require_certificate` and `use_identity_as_username`
  (mosquitto.conf(5)); a subscription the ACL forbids gets SUBACK reason 0x87 "Not authorized"
  (MQTT 5.0, section 3.9.3).
- RFC 6750, section 3: a protected resource answers a request without a valid bearer token
  with 401 and a `WWW-Authenticate: Bearer` header.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from mqtt_presence.bridge.config import load_bridge_settings
from mqtt_presence.kafka_topics import KafkaAccessError, check_access, read_from_beginning
from mqtt_presence.settings import KafkaSettings, load_file, render_config
from mqtt_presence.stack import LocalStack, StackInfo
from mqtt_presence.stack import secure as secure_files
from mqtt_presence.stack.tls import Issued, issue, make_ca
from mqtt_presence.worker_process import WorkerProcess
from tests.integration.helpers import running_bridge, unique, wait_for

TOKEN = "t0ken-" + "x" * 20


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    stack = LocalStack(tmp_path_factory.mktemp("secure-stack"))
    info = stack.up(secure=True, progress=lambda msg: print(f"[secure stack] {msg}"))
    yield info
    stack.down(purge=True)


def client_tables(info: StackInfo) -> dict[str, Any]:
    assert info.client_config is not None
    return load_file(info.client_config)


def secrets_of(info: StackInfo) -> list[str]:
    folder = secure_files.secrets_dir(Path(info.home))
    return [p.read_text().strip() for p in folder.glob("*.password")] + [TOKEN]


def device_client(info: StackInfo, client_id: str) -> mqtt.Client:
    """A device as the ACL knows it: user `device`, over TLS, checked against the stack's CA."""
    home = Path(info.home)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    secure_files.mqtt_login(home, secure_files.MQTT_DEVICE).apply(client)
    return client


def connack_of(client: mqtt.Client, port: int) -> ReasonCode:
    result: list[ReasonCode] = []
    client.on_connect = lambda _c, _u, _f, rc, _p: result.append(rc)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_for(lambda: bool(result), 10, "a CONNACK")
    finally:
        client.loop_stop()
    return result[0]


def test_the_pipeline_runs_end_to_end_over_tls_scram_and_a_token(
    secure_stack: StackInfo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A device on MQTT over TLS with a password, the bridge on MQTT TLS and Kafka SASL_SSL
    (SCRAM-SHA-512), a worker on Kafka SASL_SSL with a bearer token on its API: the device's
    status arrives in the API and in presence.status, and no password or token is in any log."""
    caplog.set_level(logging.DEBUG)
    info, tables, tag = secure_stack, client_tables(secure_stack), unique("sec")
    dev = f"{tag}-dev-1"
    topics = {k: f"{k}-{tag}" for k in ("raw", "status", "dlq", "ticks")}
    settings = load_bridge_settings(
        tables,
        client_id=f"bridge-{tag}",
        raw_topic=topics["raw"],
        dlq_topic=topics["dlq"],
        partitions=2,
        profiles=[{"kind": "json", "topic": "devices/{device}/status"}],
        state_dir=tmp_path / "bridge",
    )
    kafka = KafkaSettings.load(tables, partitions=2)
    worker = WorkerProcess.start(
        info.kafka_bootstrap,
        tmp_path,
        topics,
        f"app-{tag}",
        partitions=2,
        kafka={k: v for k, v in tables["kafka"].items() if k != "bootstrap"},
        worker_settings={"http_token": TOKEN},
    )
    try:
        with running_bridge(settings):
            device = device_client(info, dev)
            assert connack_of(device, info.mqtt_port) == 0
            device.loop_start()
            birth = {"status": "online", "session": 7, "ts": int(time.time() * 1000)}
            device.publish(f"devices/{dev}/status", json.dumps(birth), qos=1).wait_for_publish(10)
            device.loop_stop()
            worker.wait_ready()

            def answer(headers: dict[str, str]) -> tuple[int, dict[str, Any], str]:
                request = urllib.request.Request(f"{worker.url}/devices/{dev}", headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=5) as resp:
                        return resp.status, json.loads(resp.read()), ""
                except urllib.error.HTTPError as exc:
                    return exc.code, json.loads(exc.read()), exc.headers["WWW-Authenticate"]

            auth = {"Authorization": f"Bearer {TOKEN}"}
            wait_for(lambda: answer(auth)[0] == 200, 60, "the device's status in the API")
            _, body, _ = answer(auth)
            assert (body["status"], body["session"], body["verified"]) == ("online", 7, True)
            assert answer({})[0] == 401
            code, body, challenge = answer({"Authorization": "Bearer not-the-token"})
            assert (code, challenge) == (401, 'Bearer realm="mqtt-presence"')
            assert "http_token" in body["error"]
            with urllib.request.urlopen(f"{worker.url}/ready", timeout=5) as resp:
                assert resp.status == 200  # probes need no token
            fleet = urllib.request.Request(f"{worker.url}/fleet", headers=auth)
            with urllib.request.urlopen(fleet, timeout=5) as resp:
                assert json.loads(resp.read())["online"] == 1  # the gather passes the token on
            records = read_from_beginning(kafka, topics["status"], idle_ms=1500)
            assert [r.key for r in records] == [dev.encode()]
    finally:
        worker.stop()
    logs = caplog.text + worker.log.read_text()
    logs += (Path(info.home) / "kafka.log").read_text()
    logs += (Path(info.home) / "mosquitto.log").read_text()
    leaked = [
        logs[max(0, logs.index(s) - 160) : logs.index(s)] for s in secrets_of(info) if s in logs
    ]
    assert leaked == [], "a password or the token is in a log, after these words"


def test_stack_files_hold_secrets_only_for_their_owner(secure_stack: StackInfo) -> None:
    home = Path(secure_stack.home)
    assert secure_files.secrets_dir(home).stat().st_mode & 0o077 == 0
    for path in [*secure_files.secrets_dir(home).iterdir(), home / "server.properties"]:
        assert path.stat().st_mode & 0o077 == 0, path
    for key in (home / "tls").glob("*.key"):
        assert key.stat().st_mode & 0o077 == 0, key


def bridge_cli(config: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mqtt_presence", "bridge", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def config_with(info: StackInfo, tmp_path: Path, **changes: dict[str, Any]) -> Path:
    tables = client_tables(info)
    for table, values in changes.items():
        tables[table] = {**tables[table], **values}
        tables[table] = {k: v for k, v in tables[table].items() if v is not None}
    tables["bridge"]["state_dir"] = str(tmp_path / "bridge-state")
    tables["bridge"]["client_id"] = unique("bridge")
    path = tmp_path / "bridge.toml"
    path.write_text(render_config(tables))
    return path


def one_clear_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, out
    assert all(w in out for w in words), out
    assert out.count("error:") == 1, out
    assert "Traceback" not in out, out


def other_ca(tmp_path: Path) -> Issued:
    return make_ca(tmp_path / "other-ca", name="somebody else's CA")


def test_a_wrong_kafka_password_is_one_clear_error(secure_stack: StackInfo, tmp_path: Path) -> None:
    config = config_with(
        secure_stack,
        tmp_path,
        kafka={"sasl_password_file": None, "sasl_password": "not-the-password"},
    )
    started = time.monotonic()
    proc = bridge_cli(config)
    one_clear_error(proc, "refused user 'presence'", "SCRAM-SHA-512", "sasl_password")
    assert time.monotonic() - started < 45  # no retry storm: it ends
    assert "not-the-password" not in proc.stdout + proc.stderr


def test_a_kafka_certificate_from_an_unknown_ca_is_one_clear_error(
    secure_stack: StackInfo, tmp_path: Path
) -> None:
    config = config_with(secure_stack, tmp_path, kafka={"ssl_cafile": str(other_ca(tmp_path).cert)})
    one_clear_error(bridge_cli(config), "does not trust", "ssl_cafile")


def test_an_mqtt_certificate_from_an_unknown_ca_is_one_clear_error(
    secure_stack: StackInfo, tmp_path: Path
) -> None:
    config = config_with(
        secure_stack, tmp_path, bridge={"tls_ca_file": str(other_ca(tmp_path).cert)}
    )
    one_clear_error(bridge_cli(config), "MQTT broker", "does not trust", "tls_ca_file")


def test_a_wrong_mqtt_password_is_one_clear_error(secure_stack: StackInfo, tmp_path: Path) -> None:
    config = config_with(
        secure_stack, tmp_path, bridge={"password_file": None, "password": "not-it"}
    )
    proc = bridge_cli(config)
    one_clear_error(proc, "refused")
    assert "not-it" not in proc.stdout + proc.stderr


def expired_client(info: StackInfo, tmp_path: Path, name: str) -> Issued:
    """A client certificate of the stack's own CA that expired yesterday."""
    home = Path(info.home)
    ca = Issued(secure_files.tls_dir(home) / "ca.pem", secure_files.tls_dir(home) / "ca.key")
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    return issue(ca, tmp_path, f"{name}-expired", name, server=False, valid_from=start, days=29)


def test_kafka_mtls_takes_the_stacks_client_certificate_and_refuses_an_expired_one(
    secure_stack: StackInfo, tmp_path: Path
) -> None:
    home, info = Path(secure_stack.home), secure_stack
    ca = secure_files.tls_dir(home) / "ca.pem"
    good = secure_files.tls_dir(home) / f"{secure_files.KAFKA_CLIENT}.pem"
    mtls = KafkaSettings(
        bootstrap=f"127.0.0.1:{info.kafka_mtls_port}",
        security_protocol="SSL",
        ssl_cafile=ca,
        ssl_certfile=good,
        ssl_keyfile=good.with_suffix(".key"),
    )
    check_access(mtls)  # accepted
    expired = expired_client(info, tmp_path, secure_files.KAFKA_CLIENT)
    stale = mtls.model_copy(update={"ssl_certfile": expired.cert, "ssl_keyfile": expired.key})
    with pytest.raises(KafkaAccessError, match="refused this client's certificate"):
        check_access(stale)
    no_cert = mtls.model_copy(update={"ssl_certfile": None, "ssl_keyfile": None})
    with pytest.raises(KafkaAccessError, match="certificate"):
        check_access(no_cert)


def test_mqtt_client_certificates_identify_the_user_and_expired_ones_are_refused(
    secure_stack: StackInfo, tmp_path: Path
) -> None:
    info, home = secure_stack, Path(secure_stack.home)
    ca = secure_files.tls_dir(home) / "ca.pem"
    good = secure_files.tls_dir(home) / f"{secure_files.MQTT_BRIDGE}.pem"

    def client_with(cert: Path, key: Path) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=unique("c"), protocol=mqtt.MQTTv5
        )
        client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        return client

    assert connack_of(client_with(good, good.with_suffix(".key")), info.mqtt_mtls_port) == 0
    expired = expired_client(info, tmp_path, secure_files.MQTT_BRIDGE)
    assert no_connack(client_with(expired.cert, expired.key), info.mqtt_mtls_port)
    device = secure_files.tls_dir(home) / "device"
    stranger = issue(other_ca(tmp_path), device.parent, "stranger", "device", server=False)
    assert no_connack(client_with(stranger.cert, stranger.key), info.mqtt_mtls_port)


def no_connack(client: mqtt.Client, port: int) -> bool:
    """The broker ends the TLS handshake (an error at once) or the connection before any
    CONNACK (TLS 1.3 sends the refusal after the handshake)."""
    try:
        connack_of(client, port)
    except (OSError, AssertionError):
        return True
    return False


def test_the_acl_lets_a_device_write_its_lifecycle_and_read_nothing(
    secure_stack: StackInfo,
) -> None:
    """Mosquitto's acl_file never refuses a SUBSCRIBE (eclipse/mosquitto#803: the filter is
    granted, and each message is checked for `read` when it is delivered): a device that
    subscribes to `#` gets nothing, while the bridge's user, subscribed the same way, gets the
    device's birth."""
    info, home = secure_stack, Path(secure_stack.home)
    received: dict[str, list[str]] = {"device": [], "bridge": []}
    bridge = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=unique("b"), protocol=mqtt.MQTTv5
    )
    secure_files.mqtt_login(home).apply(bridge)
    readers = {"device": device_client(info, unique("d")), "bridge": bridge}
    for name, client in readers.items():
        assert connack_of(client, info.mqtt_port) == 0
        client.on_message = lambda _c, _u, m, name=name: received[name].append(m.topic)
        client.loop_start()
        client.subscribe("#", qos=1)
    try:
        time.sleep(0.5)
        writer = device_client(info, unique("w"))
        assert connack_of(writer, info.mqtt_port) == 0
        writer.loop_start()
        topic = f"devices/{unique('acl')}/status"
        writer.publish(topic, b'{"status": "online"}', qos=1).wait_for_publish(10)
        writer.publish("not/a/device/topic", b"x", qos=1).wait_for_publish(10)  # not allowed
        writer.loop_stop()
        wait_for(lambda: topic in received["bridge"], 10, "the bridge's user to get the birth")
        time.sleep(0.5)
        assert received["device"] == []
        assert "not/a/device/topic" not in received["bridge"]  # the write was dropped
    finally:
        for client in readers.values():
            client.loop_stop()


def test_credentials_in_the_mqtt_url_are_used_and_never_logged(
    secure_stack: StackInfo, tmp_path: Path
) -> None:
    info = secure_stack
    password = secure_files.password(Path(info.home), "mqtt", secure_files.MQTT_BRIDGE)
    url = f"mqtts://{secure_files.MQTT_BRIDGE}:{password}@127.0.0.1:{info.mqtt_port}"
    config = config_with(
        info, tmp_path, bridge={"mqtt_url": url, "username": None, "password_file": None}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqtt_presence", "bridge", "--config", str(config), "-v"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("subscribed" in ln for ln in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=30)
    output = "".join(lines) + rest
    assert any("subscribed" in ln for ln in lines), output
    assert password not in output


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port` (Linux's /proc/net/tcp{,6})."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                if len(address) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    words = [bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 32, 8)]
                    found.add(socket.inet_ntop(socket.AF_INET6, b"".join(words)))
    return found


def test_the_workers_api_listens_on_loopback_by_default(stack: StackInfo, tmp_path: Path) -> None:
    """A worker started without web_bind: its HTTP socket is bound to 127.0.0.1 only (Faust's
    own default would be every interface)."""
    tag = unique("bind")
    topics = {k: f"{k}-{tag}" for k in ("raw", "status", "dlq", "ticks")}
    worker = WorkerProcess.start(stack.kafka_bootstrap, tmp_path, topics, f"app-{tag}")
    try:
        worker.wait_ready()
        assert listening_addresses(worker.port) == {"127.0.0.1"}
    finally:
        worker.stop()
