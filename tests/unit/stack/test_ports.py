"""Picking ports: free ones, from below the range the OS hands to outgoing connections."""

from __future__ import annotations

import socket

from mqtt_presence.stack.ports import bindable, ephemeral_low, free_port


def test_free_ports_come_from_below_the_ephemeral_range_and_can_be_bound() -> None:
    low = ephemeral_low()
    picks = {free_port() for _ in range(50)}
    assert all(1024 <= port < low for port in picks)
    assert all(bindable(port) for port in picks)
    assert len(picks) > 40  # spread out: two stacks starting at once rarely pick the same


def test_a_port_someone_listens_on_is_not_bindable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not bindable(sock.getsockname()[1])
