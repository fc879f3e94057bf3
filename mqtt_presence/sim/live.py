"""A simulated fleet on real MQTT connections, with ground truth (for the demo and the tests).

Each device is a real paho client (`MqttDevice`) with its own fate, chosen by a seeded random
generator and played out in real time, compressed to seconds: most stay up; some are power
cycled inside the keepalive window (the old will comes after the new birth); some are off for
longer than the keepalive; some die for good; some flap every second; some repeat their birth
(QoS 1 style duplicates); and in the middle the whole fleet reconnects at once (a storm).
The truth (is the device connected right now?) is recorded as the script runs.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from mqtt_presence.sim.mqtt_device import MqttDevice

KEEPALIVE_S = 4  # the broker publishes a lost connection's will 1.5 x this later


class Fate(StrEnum):
    STABLE = "stable"
    POWER_CYCLE = "power_cycle"  # Clean Start = 1 reboot inside the keepalive: stale will
    LONG_OUTAGE = "long_outage"  # off longer than the keepalive, then back
    DIES = "dies"  # gone for good: its will must take it offline
    FLAPPER = "flapper"  # connects and drops every second for a while
    DUPLICATES = "duplicates"  # publishes the very same birth again (a QoS 1 repeat)


FATES = [
    (Fate.STABLE, 0.45),
    (Fate.POWER_CYCLE, 0.2),
    (Fate.LONG_OUTAGE, 0.1),
    (Fate.DIES, 0.1),
    (Fate.FLAPPER, 0.05),
    (Fate.DUPLICATES, 0.1),
]


@dataclass
class LiveDevice:
    name: str
    fate: Fate
    session: int = 0
    online: bool = False  # the truth right now
    intervals: list[tuple[float, float | None]] = field(default_factory=list)

    def up(self) -> None:
        self.online = True
        self.intervals.append((time.time(), None))

    def down(self) -> None:
        self.online = False
        if self.intervals and self.intervals[-1][1] is None:
            self.intervals[-1] = (self.intervals[-1][0], time.time())


class LiveFleet:
    def __init__(
        self,
        host: str,
        port: int,
        count: int,
        topic_prefix: str,
        seed: int = 1,
        duration_s: float = 60.0,
    ) -> None:
        self.host, self.port, self.prefix = host, port, topic_prefix
        self.duration_s = duration_s
        rnd = random.Random(seed)
        fates, weights = zip(*FATES, strict=True)
        self.devices = [
            LiveDevice(f"{topic_prefix}-dev-{i:04d}", rnd.choices(fates, weights)[0])
            for i in range(count)
        ]
        self._rnd = rnd
        self._clients: dict[str, MqttDevice] = {}
        # Half-open connections must stay referenced: a collected client closes its socket,
        # and the broker would publish the will at once instead of after the keepalive.
        self._half_open: list[MqttDevice] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # --- one device's life ------------------------------------------------------------------

    def _connect(self, dev: LiveDevice) -> MqttDevice:
        dev.session += 1
        client = MqttDevice(
            dev.name,
            self.host,
            self.port,
            session=dev.session,
            topic=f"{self.prefix}/{dev.name}/status",
            keepalive=KEEPALIVE_S,
            client_id=f"{dev.name}-s{dev.session}",
        ).connect()
        dev.up()  # connected from now on
        client.birth()
        with self._lock:
            self._clients[dev.name] = client
        return client

    def _sleep(self, seconds: float) -> bool:
        """Wait; False when the fleet is stopping."""
        return not self._stop.wait(seconds)

    def _live(self, dev: LiveDevice, storm_at: float) -> None:
        rnd = random.Random(f"{dev.name}")
        client = self._connect(dev)
        start = time.monotonic()
        if not self._sleep(rnd.uniform(2, self.duration_s / 3)):
            return
        if dev.fate is Fate.POWER_CYCLE:
            dev.down()  # the truth first: the will may beat this thread
            client.vanish()  # power cut: half-open, the will comes 1.5 x keepalive later
            self._half_open.append(client)
            if self._sleep(rnd.uniform(0.5, 2)):
                client = self._connect(dev)  # a new client id: the old session lingers
        elif dev.fate is Fate.LONG_OUTAGE:
            dev.down()  # the truth first: the will may beat this thread
            client.vanish()
            self._half_open.append(client)
            if self._sleep(KEEPALIVE_S * 3):
                client = self._connect(dev)
        elif dev.fate is Fate.DIES:
            dev.down()  # the truth first: the will may beat this thread
            client.die()
            return
        elif dev.fate is Fate.FLAPPER:
            for _ in range(15):
                dev.down()  # the truth first: the will may beat this thread
                client.die()
                if not self._sleep(0.5):
                    return
                client = self._connect(dev)
                if not self._sleep(0.5):
                    return
        elif dev.fate is Fate.DUPLICATES:
            for _ in range(3):
                client.birth(again=True)  # the same message again, as QoS 1 redelivers it
        # the reconnect storm: everyone who is up drops and comes back within a few seconds
        wait = storm_at - (time.monotonic() - start)
        if wait > 0 and self._sleep(wait) and dev.online:
            dev.down()  # the truth first: the will may beat this thread
            client.die()
            if self._sleep(rnd.uniform(0.5, 3)):
                self._connect(dev)

    # --- the fleet ------------------------------------------------------------------------------

    def run(self, progress: Callable[[], None] | None = None) -> None:
        """Play every device's fate in its own thread for `duration_s`."""
        storm_at = self.duration_s * 0.6
        threads = [
            threading.Thread(target=self._live, args=(d, storm_at), daemon=True)
            for d in self.devices
        ]
        for t in threads:
            t.start()
            time.sleep(0.01)  # stagger the connects a little
        end = time.monotonic() + self.duration_s
        while time.monotonic() < end and not self._stop.is_set():
            if progress is not None:
                progress()
            time.sleep(1)
        self._stop.set()
        for t in threads:
            t.join(10)

    def close(self) -> None:
        """Leave: the devices still up say goodbye and disconnect (truth: offline)."""
        self._stop.set()
        with self._lock:
            clients = list(self._clients.values()) + self._half_open
        for client in clients:
            try:
                client.client.disconnect()
                client.client.loop_stop()
            except OSError:
                pass

    def truth(self) -> dict[str, bool]:
        return {d.name: d.online for d in self.devices}
