"""Where the bridge and the worker take broker addresses from when the user gave none: the running
local stack, and only for what was set nowhere else."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from mqtt_presence.cli.common import with_local_stack

KEYS = ("mqtt_url", "kafka_bootstrap")


@pytest.fixture(autouse=True)
def no_local_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRESENCE_STACK_HOME", str(tmp_path / "no-stack-here"))
    for name in ("PRESENCE_KAFKA_BOOTSTRAP", "PRESENCE_BRIDGE_MQTT_URL"):
        monkeypatch.delenv(name, raising=False)


def test_flags_need_no_stack_and_unset_flags_are_left_out() -> None:
    flags = {"mqtt_url": "mqtt://b:1883", "kafka_bootstrap": "k:9092", "client_id": None}
    assert with_local_stack({}, "bridge", flags, KEYS) == {
        "mqtt_url": "mqtt://b:1883",
        "kafka_bootstrap": "k:9092",
    }


def test_the_config_file_and_the_environment_count_as_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRESENCE_BRIDGE_MQTT_URL", "mqtt://env:1883")
    data: dict[str, object] = {"kafka": {"bootstrap": "file:9092"}}
    assert with_local_stack(data, "bridge", {}, KEYS) == {}


def test_nothing_set_and_no_stack_up_says_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        with_local_stack({}, "worker", {}, ("kafka_bootstrap",))
    said = " ".join(capsys.readouterr().err.split())
    assert "no kafka_bootstrap given and no local stack is up" in said
    assert "`presence stack up`, or pass --kafka-bootstrap" in said
