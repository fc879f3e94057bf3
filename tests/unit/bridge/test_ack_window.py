"""PUBACKs go out in arrival order, only for what Kafka has, never across connections."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.bridge.ack_window import AckWindow


@dataclass
class Write:
    """A write whose outcome the test decides (the window only reads these two fields)."""

    is_done: bool = False
    exception: BaseException | None = None


def test_acks_wait_for_the_oldest_message() -> None:
    w = AckWindow()
    a, b, c = Write(), Write(), Write()
    for mid, write in ((10, a), (11, b), (12, c)):
        w.add(mid, write)
    c.is_done = b.is_done = True
    assert w.release() == ([], None)  # 10 is not in Kafka yet: nothing may be acknowledged
    a.is_done = True
    assert w.release() == ([10, 11, 12], None)
    assert len(w) == 0


def test_a_failed_write_stops_the_release_and_is_reported() -> None:
    w = AckWindow()
    boom = TimeoutError("delivery timed out")
    writes = [Write(True), Write(True, boom), Write(True)]
    for mid, write in enumerate(writes, start=1):
        w.add(mid, write)
    assert w.release() == ([1], boom)
    assert len(w) == 2  # 2 and 3 stay unacknowledged: the broker will deliver them again


def test_a_new_connection_forgets_every_slot() -> None:
    w = AckWindow()
    w.add(5, Write())
    assert w.reset() == 1
    w.add(5, Write(True))  # the broker reuses packet id 5 on the new connection
    assert w.release() == ([5], None)


@given(st.lists(st.integers(1, 65535), min_size=1, max_size=50), st.randoms())
def test_any_completion_order_releases_everything_in_arrival_order(
    mids: list[int], rnd: object
) -> None:
    w = AckWindow()
    writes = [Write() for _ in mids]
    for mid, write in zip(mids, writes, strict=True):
        w.add(mid, write)
    order = list(range(len(mids)))
    rnd.shuffle(order)  # type: ignore[attr-defined]
    released: list[int] = []
    for step, index in enumerate(order, start=1):
        writes[index].is_done = True
        more, error = w.release()
        assert error is None
        released += more
        done = set(order[:step])
        # what is released is always a prefix of arrival order, all of it written
        assert all(i in done for i in range(len(released)))
    assert released == mids
