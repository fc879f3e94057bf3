"""Outages an operator can read: one line when a broker goes away, one when it is back.

While Kafka is away the clients retry on their own and the bridge and the workers only wait;
while MQTT is away paho reconnects. None of them says, in words an operator looks for, that the
broker is gone or for how long it was. `Outages` does: the first sign of trouble for a broker
logs one warning, its recovery one line with the duration, and a gauge is 1 for as long as it
lasts (a counter counts them: `presence_bridge_outage{broker}` and
`presence_worker_outage{broker}`, with `..._outages_total`). Every later sign during the same
outage (retries, failed writes) is left to DEBUG.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge


class Outages:
    def __init__(
        self,
        gauge: Gauge,
        counter: Counter,
        log: logging.Logger,
        consequence: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gauge, self.counter, self.log = gauge, counter, log
        self.consequence = consequence  # what the reader needs to know while it lasts
        self.clock = clock
        self._since: dict[str, float] = {}

    def active(self, broker: str) -> bool:
        return broker in self._since

    def down(self, broker: str, why: object) -> None:
        """A sign that `broker` is unreachable; logged once per outage."""
        if broker in self._since:
            self.log.debug("%s still unreachable: %s", broker, why)
            return
        self._since[broker] = self.clock()
        self.gauge.labels(broker).set(1)
        self.log.warning("%s is unreachable (%s); %s", broker, why, self.consequence)

    def up(self, broker: str) -> None:
        """`broker` works again; logs how long it was away, if it was."""
        since = self._since.pop(broker, None)
        if since is None:
            return
        self.gauge.labels(broker).set(0)
        self.counter.labels(broker).inc()
        self.log.warning("%s is back after %.1f s", broker, self.clock() - since)
