"""Crash memory: which redelivered message ended the previous processes, and when to give up on it.

Each `CrashMemory(path)` below is a new bridge process starting; a `begin` without its `end` is a
process that died while handling that message.
"""

from __future__ import annotations

from pathlib import Path

from mqtt_presence.bridge.message import MqttMessage
from mqtt_presence.bridge.poison import STRIKES, CrashMemory

T = 1_700_000_000_000


def msg(payload: bytes, dup: bool = True) -> MqttMessage:
    return MqttMessage("devices/d/status", payload, T, dup=dup)


def die_on(path: Path, message: MqttMessage) -> None:
    CrashMemory(path).begin(message)  # and never reaches end()


def test_a_message_that_ended_two_processes_is_poison_on_its_next_delivery(tmp_path: Path) -> None:
    path = tmp_path / "bridge.inflight"
    poison = msg(b"boom")
    for _ in range(STRIKES):
        assert not CrashMemory(path).is_poison(poison)
        die_on(path, poison)
    memory = CrashMemory(path)
    assert not memory.is_poison(msg(b"other"))
    assert not memory.is_poison(msg(b"boom", dup=False))  # a new publish of the same bytes
    assert memory.is_poison(poison)
    assert not memory.is_poison(poison)  # once: after that it is forgotten
    assert not CrashMemory(path).is_poison(poison)


def test_an_innocent_message_killed_once_is_handled_again(tmp_path: Path) -> None:
    # An operator's kill -9 during a burst of redeliveries lands inside one of them.
    path = tmp_path / "bridge.inflight"
    innocent = msg(b"birth")
    die_on(path, innocent)
    memory = CrashMemory(path)
    assert not memory.is_poison(innocent)
    memory.begin(innocent)
    memory.end(innocent)  # handled this time
    assert not CrashMemory(path).is_poison(innocent)
    assert CrashMemory(path).strikes == 0


def test_first_deliveries_cost_nothing_and_off_remembers_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bridge.inflight"
    die_on(path, msg(b"x", dup=False))
    assert CrashMemory(path).suspect is None
    off = CrashMemory(None)
    off.begin(msg(b"x"))
    assert not off.is_poison(msg(b"x"))
