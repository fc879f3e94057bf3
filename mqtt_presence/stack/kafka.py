"""Apache Kafka for the local stack: resolved from Maven Central, run in KRaft mode with the JDK.

One combined broker+controller on 127.0.0.1, storage formatted on first start, logs to a file in
the stack's home. Nothing of Kafka is in this repository: Maven resolves `kafka_2.13` and its
dependencies into its own local repository and we run `kafka.Kafka` from that class path.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from mqtt_presence.stack import maven
from mqtt_presence.stack.errors import BrokerStartError
from mqtt_presence.stack.logs import tail
from mqtt_presence.stack.ports import HOST, is_listening
from mqtt_presence.stack.processes import spawn
from mqtt_presence.stack.tls import Issued

KAFKA_VERSION_PROPERTY = "kafka.version"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
HEAP = os.environ.get("PRESENCE_KAFKA_HEAP", "768m")

Progress = Callable[[str], None]


def kafka_version() -> str:
    """The Kafka version the bundled POM asks Maven for."""
    return maven.pom_property("pom.xml", KAFKA_VERSION_PROPERTY)


def resolve_classpath(progress: Progress = lambda _msg: None) -> list[Path]:
    """Kafka's runtime class path, resolved by Maven once and cached by the POM's hash."""
    return maven.resolve_classpath(
        maven.resource("pom.xml"), "kafka", f"Apache Kafka {kafka_version()}", progress
    )


@dataclass(frozen=True)
class Secured:
    """What a secured broker needs: its PEM files, a second port for clients with certificates,
    and the SCRAM users (name -> password; the first is the brokers' own, for inter-broker)."""

    ca: Path
    server: Issued
    mtls_port: int
    users: dict[str, str]

    @property
    def admin(self) -> tuple[str, str]:
        return next(iter(self.users.items()))


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


def _jaas(module: str, user: str, password: str, extra: str = "") -> str:
    return f'{module} required username="{user}" password="{password}"{extra};'


def listener_settings(port: int, controller_port: int, secured: Secured | None) -> dict[str, str]:
    """Plaintext clients on `port`; or, secured: SASL_SSL (SCRAM and PLAIN) on `port` and SSL
    with a required client certificate on `mtls_port`. The KRaft controller listener stays
    plaintext on loopback: only this broker talks to it."""
    if secured is None:
        return {
            "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        }
    admin, admin_password = secured.admin
    plain_users = "".join(f' user_{u}="{p}"' for u, p in secured.users.items())
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    settings = {
        "listeners": f"SASL_SSL://{HOST}:{port},SSL://{HOST}:{secured.mtls_port},"
        f"CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{HOST}:{port},SSL://{HOST}:{secured.mtls_port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT",
        "sasl.enabled.mechanisms": ",".join(("PLAIN", *SCRAM_MECHANISMS)),
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": _jaas(
            "org.apache.kafka.common.security.plain.PlainLoginModule",
            admin,
            admin_password,
            plain_users,
        ),
        # PEM key and trust stores (KIP-651): the files `presence stack up --secure` made.
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(secured.server.cert.with_suffix(".keystore.pem")),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(secured.ca),
        "listener.name.ssl.ssl.client.auth": "required",
    }
    for mechanism in SCRAM_MECHANISMS:
        key = f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config"
        settings[key] = _jaas(scram, admin, admin_password)
    return settings


def write_keystore(secured: Secured) -> None:
    """Kafka's PEM key store is one file: the private key, then the certificate chain."""
    path = secured.server.cert.with_suffix(".keystore.pem")
    path.write_bytes(secured.server.key.read_bytes() + secured.server.cert.read_bytes())
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class Node:
    """One of the cluster's combined broker+controller processes."""

    node_id: int
    port: int
    controller_port: int


def replica_settings(nodes: int) -> dict[str, str]:
    """One node: internal topics cannot have more than one replica. Three: three copies of
    everything, and a write acknowledged (acks=all) only once two have it, so one node may die
    without losing an acknowledged record or stopping writes."""
    if nodes == 1:
        copies, in_sync = "1", "1"
    else:
        copies, in_sync = str(min(nodes, 3)), str(min(nodes, 3) - 1)
    return {
        "offsets.topic.replication.factor": copies,
        "transaction.state.log.replication.factor": copies,
        "transaction.state.log.min.isr": in_sync,
        "share.coordinator.state.topic.replication.factor": copies,
        "share.coordinator.state.topic.min.isr": in_sync,
        "default.replication.factor": copies,
        "min.insync.replicas": in_sync,
    }


def server_properties(
    home: Path,
    port: int,
    controller_port: int,
    secured: Secured | None = None,
    node_id: int = 1,
    cluster: tuple[Node, ...] = (),
) -> str:
    """The broker's configuration; every value that differs from Kafka's default says why.
    `cluster`: every node of a multi-node cluster (this one too), for the KRaft quorum."""
    data = home / "kafka-data"
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in cluster)
    settings = {
        # Each process is both broker and KRaft controller: no ZooKeeper, nothing else to run.
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or f"1@{HOST}:{controller_port}",
        **listener_settings(port, controller_port, secured),
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(data),
        # Every topic is declared by its owner (the bridge, Faust's compacted changelogs).
        "auto.create.topics.enable": "false",
        **replica_settings(max(len(cluster), 1)),
        # Fewer internal partitions than the default 50: faster first consumer-group join.
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.num.partitions": "8",
        # Consumer groups start at once instead of waiting 3 s for more members.
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def cluster_id() -> str:
    """A random Kafka cluster id (base64url of 16 bytes). Like Kafka's own `Uuid.randomUuid()`,
    never one that starts with "-": the storage tool would read it as an option."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate


def _java_command(classpath: list[Path], home: Path, *args: str) -> list[str]:
    java = maven.require_java()
    return [
        java,
        f"-Xmx{HEAP}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={home}",
        "-cp",
        os.pathsep.join(str(j) for j in classpath),
        *args,
    ]


def prepare(
    home: Path,
    classpath: list[Path],
    port: int,
    controller_port: int,
    secured: Secured | None = None,
    node_id: int = 1,
    cluster: tuple[Node, ...] = (),
    cluster_uuid: str | None = None,
) -> Path:
    """Write the config and format the storage if it is not formatted yet (with the SCRAM users
    of a secured broker: KRaft keeps them in its metadata log); returns the config. The nodes of
    one cluster are formatted with the same `cluster_uuid`."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "log4j2.properties").write_bytes(maven.resource("log4j2.properties"))
    config = home / "server.properties"
    config.write_text(server_properties(home, port, controller_port, secured, node_id, cluster))
    os.chmod(config, 0o600)  # a secured broker's file holds its users' passwords
    if secured is not None:
        write_keystore(secured)
    if not (home / "kafka-data" / "meta.properties").exists():
        scram = [
            arg
            for user, password in (secured.users.items() if secured else ())
            for mechanism in SCRAM_MECHANISMS
            for arg in ("--add-scram", f"{mechanism}=[name={user},password={password}]")
        ]
        cmd = _java_command(
            classpath,
            home,
            STORAGE_TOOL,
            "format",
            "-t",
            cluster_uuid or cluster_id(),
            "-c",
            str(config),
            "--ignore-formatted",
            *scram,
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            for _user, password in secured.users.items() if secured else ():
                output = output.replace(password, "***")
            raise BrokerStartError(f"formatting Kafka's storage failed:\n{output}")
    return config


def start(home: Path, classpath: list[Path], config: Path) -> subprocess.Popen[bytes]:
    """Start the broker in its own session (it outlives the CLI); stdout goes to a file."""
    return spawn(
        _java_command(classpath, home, MAIN_CLASS, str(config)), home / "kafka.stdout", cwd=home
    )


@contextmanager
def kafka_clients_quiet() -> Iterator[None]:
    """kafka-python's own lines at DEBUG while a readiness probe waits for a booting broker:
    a healthy start prints no ERROR or WARNING; a broker that never comes says so in the end."""
    logger = logging.getLogger("kafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def wait_ready(
    bootstrap: str,
    alive: Callable[[], bool],
    log: Path,
    timeout: float = 90.0,
    options: dict[str, Any] | None = None,
    brokers: int = 1,
) -> None:
    """Wait until a real client call (describe the cluster) succeeds and shows `brokers`
    brokers, or the process dies, or time runs out. `options`: the clients' security
    (kafka_topics.client_options)."""

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise BrokerStartError(
                f"Kafka exited during start-up; last lines of {log}:\n{tail(log)}"
            )
        try:
            if not is_listening(int(bootstrap.rsplit(":", 1)[1]), timeout=1):
                raise OSError(f"nothing listens at {bootstrap} yet")
            with kafka_clients_quiet():  # a broker still booting is expected, not an error
                admin = KafkaAdminClient(
                    **(options or {"bootstrap_servers": bootstrap}), request_timeout_ms=3000
                )
                try:
                    found = len(admin.describe_cluster()["brokers"])
                    if found >= brokers:
                        return
                    raise OSError(f"{found} of {brokers} brokers are up")
                finally:
                    admin.close()
        except (KafkaError, OSError) as exc:  # the broker is not ready yet
            last_error = exc
            time.sleep(0.3)
    raise BrokerStartError(
        f"Kafka at {bootstrap} was not ready after {timeout:.0f} s ({last_error!r}); "
        f"last lines of {log}:\n{tail(log)}"
    )


# Right after a node of a cluster was killed or started again, a request can reach an address
# that refuses it until the metadata catches up: ask again, a second apart, a few times.
ask_the_cluster = Retrying(
    retry=retry_if_exception_type((KafkaError, OSError)),
    stop=stop_after_attempt(10),
    wait=wait_fixed(1),
    reraise=True,
)


def _admin_call(bootstrap: str, call: Callable[[KafkaAdminClient], Any]) -> Any:
    def once() -> Any:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            return call(admin)
        finally:
            admin.close()

    return ask_the_cluster(once)


def partition_leader(bootstrap: str, topic: str, partition: int) -> int:
    """The node that leads `partition` of `topic` (what a fault test kills)."""
    described = _admin_call(bootstrap, lambda admin: admin.describe_topics([topic])[0])
    # kafka-python 3 names the fields as the Metadata protocol does
    leaders = {
        p.get("partition_index", p.get("partition")): p.get("leader_id", p.get("leader"))
        for p in described["partitions"]
    }
    return int(leaders[partition])


def active_controller(bootstrap: str) -> int:
    """The KRaft quorum's leader: the active controller (DescribeQuorum, KIP-595)."""
    quorum = _admin_call(bootstrap, lambda admin: admin.describe_metadata_quorum())
    return int(quorum["topics"][0]["partitions"][0]["leader_id"])
