"""The local Kafka's generated values."""

from __future__ import annotations

import base64
from pathlib import Path

from mqtt_presence.stack import kafka
from mqtt_presence.stack.kafka import cluster_id
from mqtt_presence.stack.tls import Issued


def test_cluster_ids_are_16_bytes_and_never_look_like_an_option() -> None:
    ids = [cluster_id() for _ in range(5_000)]  # about 78 would start with "-" if unchecked
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_a_single_node_keeps_one_copy_of_everything(tmp_path: Path) -> None:
    conf = properties(kafka.server_properties(tmp_path, 9092, 9093))
    assert conf["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert conf["offsets.topic.replication.factor"] == conf["min.insync.replicas"] == "1"


def test_a_three_node_cluster_votes_together_and_acknowledges_two_copies(tmp_path: Path) -> None:
    # Kafka docs, "Replication": with acks=all and min.insync.replicas=2 of 3 replicas, one
    # broker may fail without losing an acknowledged write or refusing new ones.
    nodes = tuple(kafka.Node(i, 9000 + i, 9100 + i) for i in (1, 2, 3))
    conf = properties(kafka.server_properties(tmp_path, 9002, 9102, node_id=2, cluster=nodes))
    assert conf["node.id"] == "2"
    assert conf["controller.quorum.voters"] == ",".join(
        f"{i}@127.0.0.1:{9100 + i}" for i in (1, 2, 3)
    )
    for key in ("offsets.topic.replication.factor", "default.replication.factor"):
        assert conf[key] == "3"
    for key in ("min.insync.replicas", "transaction.state.log.min.isr"):
        assert conf[key] == "2"
    assert conf["listeners"].startswith("PLAINTEXT://127.0.0.1:9002,")


def test_a_secured_broker_takes_sasl_ssl_and_mtls_and_keeps_its_controller_private(
    tmp_path: Path,
) -> None:
    server = Issued(tmp_path / "server.pem", tmp_path / "server.key")
    secured = kafka.Secured(tmp_path / "ca.pem", server, 9094, {"admin": "a", "presence": "p"})
    conf = properties(kafka.server_properties(tmp_path, 9092, 9093, secured))
    assert conf["listener.security.protocol.map"] == (
        "SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT"
    )
    assert conf["listener.name.ssl.ssl.client.auth"] == "required"
    assert conf["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert 'user_presence="p"' in conf["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    assert "PLAINTEXT://" not in conf["advertised.listeners"]
