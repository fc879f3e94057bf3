"""The shared [kafka] table: declared once, read by every part, and the old places refused with
the way to fix them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mqtt_presence.bridge.config import load_bridge_settings
from mqtt_presence.settings import ConfigError, KafkaSettings, render_config
from mqtt_presence.streams.config import load_worker_settings

FILE = {
    "kafka": {"bootstrap": "k1:9092,k2:9092", "raw_topic": "fleet.raw", "partitions": 12},
    "bridge": {"client_id": "b1"},
    "worker": {"app_id": "w"},
}


def test_the_bridge_and_the_worker_read_the_same_topics_and_partitions() -> None:
    bridge, worker = load_bridge_settings(FILE), load_worker_settings(FILE)
    assert bridge.kafka == worker.kafka
    assert (worker.kafka.bootstrap, worker.kafka.raw_topic, worker.kafka.partitions) == (
        "k1:9092,k2:9092",
        "fleet.raw",
        12,
    )


@pytest.mark.parametrize("part", ["bridge", "worker"])
def test_a_kafka_key_left_in_a_part_table_says_where_it_went(part: str) -> None:
    old = {part: {"raw_topic": "x", "kafka_bootstrap": "k:9092"}}
    load = load_bridge_settings if part == "bridge" else load_worker_settings
    with pytest.raises(ConfigError) as caught:
        load(old)
    message = str(caught.value)
    assert f"[{part}] kafka_bootstrap, raw_topic" in message
    assert "[kafka] table (bootstrap = ..., raw_topic = ...)" in message


def test_command_line_overrides_of_kafka_keys_reach_the_kafka_table() -> None:
    s = load_worker_settings(FILE, kafka_bootstrap="flag:9092", store="memory")
    assert (s.kafka.bootstrap, s.kafka.raw_topic, s.store) == ("flag:9092", "fleet.raw", "memory")


def test_a_rendered_config_moves_kafka_keys_to_their_table_and_loads() -> None:
    text = render_config({"worker": {"app_id": "a", "raw_topic": "r", "partitions": 3}})
    data = tomllib.loads(text)
    assert data == {"kafka": {"raw_topic": "r", "partitions": 3}, "worker": {"app_id": "a"}}
    assert load_worker_settings(data).kafka.partitions == 3


def test_kafka_security_wants_its_credentials_and_reads_secrets_from_files(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="needs sasl_username and sasl_password"):
        KafkaSettings.load({"kafka": {"security_protocol": "SASL_SSL", "sasl_username": "u"}})
    secret = tmp_path / "kafka.password"
    secret.write_text("s3cret\n")  # as `echo s3cret > file` writes it
    kafka = KafkaSettings.load(
        {
            "kafka": {
                "security_protocol": "SASL_SSL",
                "sasl_username": "u",
                "sasl_password_file": str(secret),
            }
        }
    )
    assert kafka.sasl_password is not None
    assert kafka.sasl_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(kafka)
    both = {"sasl_password": "x", "sasl_password_file": str(secret)}
    with pytest.raises(ConfigError, match="not both"):
        KafkaSettings.load({"kafka": both})
    with pytest.raises(ConfigError, match="No such file"):
        KafkaSettings.load({"kafka": {"sasl_password_file": str(tmp_path / "none")}})
    with pytest.raises(ConfigError, match="go together"):
        KafkaSettings.load({"kafka": {"ssl_certfile": str(secret)}})


def test_a_refused_setting_never_prints_the_password_it_was_given() -> None:
    with pytest.raises(ConfigError) as refused:
        KafkaSettings.load({"kafka": {"sasl_password": "hunter2", "security_protocol": "TLS"}})
    assert "hunter2" not in str(refused.value)
