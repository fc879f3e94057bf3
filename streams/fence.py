"""A worker that was not running for as long as its group session lasts must not write again.

A process paused past its consumer group's session (SIGSTOP, a frozen VM or container, a host
that slept) has lost its partitions to another worker when it resumes, but does not know it
yet: until its next heartbeat is refused it goes on processing the records it had fetched, with
the state it had before the pause, and writes them after the new owner's. Those late writes put
older device states into the table's changelog (what any later recovery restores) and older
status changes into `presence.status`. Kafka's own answer to such "zombies" is fencing by
transactional producer epochs (KIP-98), which Faust offers only with `exactly_once`, and that
has open bugs there. This is the at-least-once equivalent:

`SessionFence` measures time on a thread of its own (which runs whatever the event loop does,
so a busy loop is not a pause) with the clock that counts suspended time too, and a pause
longer than the session less one heartbeat interval (from then on the group coordinator may
have expired the member) ends the process at once with status 75 ("restart me"), before any
write: the agent's output asks `check()` before each batch of records it hands to the
producer. A fresh process recovers from the changelog, which then holds only what the
partitions' owners wrote.

Records waiting in the agent's output or handed to the producer before the pause would leave
on resume, before the thread has run: so the producer's client asks `check()` too, before each
request it sends (`guarded`). What is left: a pause that falls between that check and the
write to the socket, a few microseconds of Python.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger("presence.worker")

TICK_S = 0.25

P = ParamSpec("P")
T = TypeVar("T")


def suspend_aware_clock() -> float:
    """Seconds on a clock that goes on while the process is stopped or the host suspended
    (Linux's CLOCK_BOOTTIME; elsewhere the monotonic clock, which covers a stopped process)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class SessionFence:
    """`limit_s`: the longest pause after which the process may still own its partitions.
    `on_expired(why)` ends the process (in a worker, `exit_for_restart`); it is called once."""

    def __init__(
        self,
        limit_s: float,
        on_expired: Callable[[str], None],
        clock: Callable[[], float] = suspend_aware_clock,
    ) -> None:
        self.limit_s = limit_s
        self.on_expired = on_expired
        self.clock = clock
        self.last_seen = clock()
        self.expired: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_session(
        cls,
        session_timeout_s: float,
        heartbeat_interval_s: float,
        on_expired: Callable[[str], None],
    ) -> SessionFence:
        return cls(session_timeout_s - heartbeat_interval_s, on_expired)

    def tick(self) -> None:
        """The watch's heartbeat: a gap since the last one longer than the limit is a pause.
        `expired` is set before `last_seen` moves, so `check()` on another thread sees one or
        the other."""
        now = self.clock()
        gap = now - self.last_seen
        if gap > self.limit_s and self.expired is None:
            self.expire(gap)
        self.last_seen = now

    def check(self) -> None:
        """Before a write: the process was paused past the limit (seen by the thread, or now,
        if the thread has not run since the pause) ends it here. Before `start()`, nothing is
        measured (the time a worker takes to start is not a pause)."""
        if self.expired is not None:
            self.on_expired(self.expired)
            return
        if self._thread is None:  # not watching yet: the worker is still starting
            return
        gap = self.clock() - self.last_seen
        if gap > self.limit_s:
            self.expire(gap)

    def expire(self, gap: float) -> None:
        self.expired = (
            f"this process did not run for {gap:.1f} s, longer than its group session allows "
            f"({self.limit_s:.1f} s): its partitions may have another owner now, and what it "
            "would write from its state before the pause could be older than what that "
            "owner wrote"
        )
        self.on_expired(self.expired)

    def guarded(self, send: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """`send` asking `check()` first, each time it runs: for a Kafka client's request sender,
        so that what waited in the producer's buffer over a pause is not sent after it."""

        async def send_unless_fenced(*args: P.args, **kwargs: P.kwargs) -> T:
            self.check()
            return await send(*args, **kwargs)

        return send_unless_fenced

    def start(self) -> SessionFence:
        self.last_seen = self.clock()
        self._thread = threading.Thread(target=self._run, name="session-fence", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            self.tick()
