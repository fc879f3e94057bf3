"""The wakeup that ends the bridge's select() when Kafka finished a write (real sockets, no
broker)."""

from __future__ import annotations

import select
import threading
import time

from mqtt_presence.bridge.mqtt_source import Wakeup


def test_a_wake_from_another_thread_ends_a_select_at_once_and_clear_rearms_it() -> None:
    wakeup = Wakeup()
    try:
        assert select.select([wakeup], [], [], 0) == ([], [], [])
        timer = threading.Timer(0.05, wakeup.wake)
        started = time.monotonic()
        timer.start()
        readable, _, _ = select.select([wakeup], [], [], 5)
        assert readable == [wakeup]
        assert time.monotonic() - started < 2  # woken, not timed out
        for _ in range(1000):  # many completions before the loop looks: one byte, no error
            wakeup.wake()
        wakeup.clear()
        assert select.select([wakeup], [], [], 0) == ([], [], [])
        wakeup.wake()
        assert select.select([wakeup], [], [], 0)[0] == [wakeup]
    finally:
        wakeup.close()
    wakeup.wake()  # after close (a write finishing as the bridge ends): nothing raised
