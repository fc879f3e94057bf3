"""Settings come from flags over environment over the config file over defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mqtt_presence.bridge.config import load_bridge_settings
from mqtt_presence.bridge.profiles.plain import PlainProfileSettings
from mqtt_presence.settings import ConfigError


def test_precedence_flags_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    file = {
        "bridge": {"client_id": "from-file", "linger_ms": 3},
        "kafka": {"raw_topic": "file.raw", "partitions": 3},
    }
    monkeypatch.setenv("PRESENCE_KAFKA_RAW_TOPIC", "env.raw")
    monkeypatch.setenv("PRESENCE_KAFKA_PARTITIONS", "5")
    monkeypatch.setenv("PRESENCE_BRIDGE_LINGER_MS", "4")
    s = load_bridge_settings(file, partitions=7)
    assert (s.client_id, s.linger_ms) == ("from-file", 4)
    assert (s.kafka.raw_topic, s.kafka.partitions) == ("env.raw", 7)


def test_profiles_from_the_file_and_secret_password() -> None:
    s = load_bridge_settings(
        {
            "bridge": {
                "password": "hunter2",
                "username": "bridge",
                "profiles": [{"kind": "plain", "topic": "z2m/{device}/availability"}],
            }
        }
    )
    assert isinstance(s.profiles[0], PlainProfileSettings)
    assert "hunter2" not in repr(s)
    assert s.password is not None
    assert s.password.get_secret_value() == "hunter2"


@pytest.mark.parametrize(
    "bad",
    [
        {"mqtt_url": "http://x"},
        {"receive_maximum": 0},
        {"nonsense": 1},
        {"profiles": [{"kind": "json", "topic": "no-device-here"}]},
    ],
)
def test_bad_settings_are_refused_clearly(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="bad bridge configuration: ") as refused:
        load_bridge_settings({"bridge": bad})
    assert isinstance(refused.value.__cause__, ValidationError)  # which field, and why


def test_mqtt_url_parts() -> None:
    s = load_bridge_settings({}, mqtt_url="mqtts://broker.example:8884")
    assert (s.mqtt_host, s.mqtt_port, s.mqtt_tls) == ("broker.example", 8884, True)


def test_credentials_in_the_url_are_used_and_kept_out_of_the_url() -> None:
    # An operator's probe: `--mqtt-url mqtt://user:password@host` was logged verbatim and the
    # bridge then connected anonymously. RFC 3986 section 3.2.1: userinfo, percent-encoded.
    s = load_bridge_settings({}, mqtt_url="mqtt://bridge:p%40ss@broker.example:1884")
    assert s.mqtt_url == "mqtt://broker.example:1884"
    assert s.username == "bridge"
    assert s.password is not None
    assert s.password.get_secret_value() == "p@ss"
    assert "p@ss" not in repr(s)
    assert "p%40ss" not in repr(s)


def test_two_different_passwords_are_refused_without_printing_either() -> None:
    with pytest.raises(ConfigError) as refused:
        load_bridge_settings({}, mqtt_url="mqtt://u:secret-one@h", password="secret-two")
    assert "two different passwords" in str(refused.value)
    assert "secret-one" not in str(refused.value)
    assert "secret-two" not in str(refused.value)
