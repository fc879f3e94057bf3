"""Library noise, rate-limited: what kafka-python, aiokafka and Faust say while a broker is away.

During a Kafka outage both clients log every failed connection attempt as ERROR or WARNING: a
worker wrote about 6,400 such lines in 55 s. The bridge and the worker say in their own words
that Kafka is gone and when it is back; the libraries' lines stay available, but each distinct
message of a library logger passes once per `period_s`, with a count of those held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

NOISY = ("kafka", "aiokafka", "faust", "mode")


class RateLimit(logging.Filter):
    """Passes the first record of each (logger, message template) per period, and says how
    many like it were held back. Records of other loggers pass untouched."""

    def __init__(
        self,
        period_s: float = 60.0,
        prefixes: tuple[str, ...] = NOISY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.period_s = period_s
        self.prefixes = prefixes
        self.clock = clock
        self._seen: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] not in self.prefixes:
            return True
        key = (record.name, record.msg)
        now = self.clock()
        last, held = self._seen.get(key, (None, 0))
        if last is not None and now - last < self.period_s:
            self._seen[key] = (last, held + 1)
            return False
        if held:
            record.msg = f"{record.getMessage()} ({held} more like this held back)"
            record.args = ()
        self._seen[key] = (now, 0)
        return True


def quiet_libraries(period_s: float = 60.0) -> RateLimit:
    """Rate-limit the libraries' records on every handler of the root logger (call it after the
    handlers are set up)."""
    limit = RateLimit(period_s)
    for handler in logging.getLogger().handlers:
        handler.addFilter(limit)
    return limit
