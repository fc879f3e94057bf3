"""The session fence: a process paused past its group session writes nothing more.

Outside reference: a consumer group member that sends no heartbeat for `session.timeout.ms` is
removed and its partitions reassigned (Kafka's consumer configuration, `session.timeout.ms`);
a member paused longer does not learn it until its next request, so it must fence itself, as
KIP-98's producer epochs fence a "zombie" instance. Found for real by `python -m bench.faults
--faults stop-worker`: a worker SIGSTOPped for 15 s with a 10 s session wrote v2 after v3.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.streams.fence import SessionFence, suspend_aware_clock


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fence(limit_s: float = 7.5) -> tuple[SessionFence, Clock, list[str]]:
    """A fence as a running worker has it: started (its thread's ticks are driven by hand)."""
    clock, calls = Clock(), list[str]()
    f = SessionFence(limit_s, calls.append, clock)
    f._thread = threading.current_thread()  # watching, without a thread of its own
    return f, clock, calls


def test_the_time_a_worker_takes_to_start_is_not_a_pause() -> None:
    # Found by CI: a worker built its fence, took 4.5 s to recover its table, wrote its first
    # record before the fence's thread started, and exited (a 6 s session: limit 4.5 s).
    clock, calls = Clock(), list[str]()
    f = SessionFence(4.5, calls.append, clock)
    clock.now += 30
    f.check()
    assert calls == []
    f.start()
    try:
        f.check()
        assert calls == []
    finally:
        f.stop()


def test_regular_ticks_and_checks_never_expire() -> None:
    f, clock, calls = fence()
    for _ in range(1000):
        clock.now += 0.25
        f.tick()
        f.check()
    assert calls == []
    assert f.expired is None


def test_a_check_after_a_pause_longer_than_the_limit_ends_the_process_before_the_thread_runs() -> (
    None
):
    f, clock, calls = fence()
    clock.now += 7.6  # SIGSTOP, SIGCONT, and the agent runs first
    f.check()
    assert len(calls) == 1
    assert "did not run for 7.6 s" in calls[0]


def test_the_thread_seeing_the_pause_first_leaves_the_check_failing_too() -> None:
    f, clock, calls = fence()
    clock.now += 20
    f.tick()  # the thread ran first: it expires and moves `last_seen` on
    f.check()  # the agent's next write must still be refused
    assert len(calls) == 2
    assert f.expired is not None


def test_a_pause_within_the_session_is_not_a_reason_to_stop() -> None:
    f, clock, calls = fence()
    clock.now += 7.4
    f.tick()
    f.check()
    assert calls == []


def test_the_limit_is_the_session_less_one_heartbeat_interval() -> None:
    # The coordinator counts the session from the last heartbeat, which may have been sent up to
    # one interval before the pause began.
    assert SessionFence.for_session(10.0, 2.5, lambda _: None).limit_s == 7.5


@given(st.lists(st.floats(min_value=0.0, max_value=20.0), max_size=50), st.floats(1.0, 15.0))
def test_it_expires_exactly_when_some_gap_exceeded_the_limit(
    gaps: list[float], limit: float
) -> None:
    f, clock, calls = fence(limit)
    paused = False
    for gap in gaps:
        before = clock.now
        clock.now += gap
        paused |= clock.now - before > limit  # the gap as the clock's floats measure it
        f.tick()
        f.check()
    assert bool(calls) == paused


def test_the_clock_counts_the_time_a_process_is_stopped() -> None:
    # A real SIGSTOP of a child that reads the clock before and after: the gap it sees is the
    # time it was stopped (CLOCK_BOOTTIME on Linux, not a CPU-time clock).
    script = textwrap.dedent(
        """
        import sys, time
        from mqtt_presence.streams.fence import suspend_aware_clock
        before = suspend_aware_clock()
        print("ready", flush=True)
        sys.stdin.readline()
        print(suspend_aware_clock() - before, flush=True)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    assert child.stdout.readline().strip() == "ready"
    os.kill(child.pid, signal.SIGSTOP)
    time.sleep(1.0)
    os.kill(child.pid, signal.SIGCONT)
    child.stdin.write("go\n")
    child.stdin.flush()
    assert float(child.stdout.readline()) >= 1.0
    child.wait(10)
    assert suspend_aware_clock() > 0


class Exited(Exception):
    """What `os._exit` is to the caller: nothing after it runs."""


def test_a_request_of_the_producer_after_a_pause_is_never_sent() -> None:
    # Found by CI: a status change waiting in the producer's 10 ms linger buffer at the instant
    # of a SIGSTOP left on SIGCONT, before the fence's thread or the agent ran, and landed after
    # the new owner's newer one (a version going back in presence.status).
    clock, sent = Clock(), list[str]()

    def exit_now(why: str) -> None:
        raise Exited(why)

    f = SessionFence(7.5, exit_now, clock)
    f._thread = threading.current_thread()

    async def send(node_id: int, request: str) -> str:
        sent.append(request)
        return "ok"

    guarded = f.guarded(send)
    assert asyncio.run(guarded(1, "before")) == "ok"
    clock.now += 8.0  # SIGSTOP for 8 s, SIGCONT: the producer's sender runs first
    with pytest.raises(Exited, match=r"did not run for 8\.0 s"):
        asyncio.run(guarded(1, "after"))
    assert sent == ["before"]
