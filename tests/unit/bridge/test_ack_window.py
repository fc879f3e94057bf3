"""PUBACKs go out in arrival order, only for what Kafka has, never across connections."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.ack_window import AckWindow


def test_acks_wait_for_the_oldest_message() -> None:
    w = AckWindow()
    a, b, c = w.add(10), w.add(11), w.add(12)
    w.complete(c)
    w.complete(b)
    assert w.release() == []  # 10 is not in Kafka yet: nothing may be acknowledged
    w.complete(a)
    assert w.release() == [10, 11, 12]
    assert len(w) == 0


def test_slots_of_an_earlier_connection_are_never_acknowledged() -> None:
    w = AckWindow()
    old = w.add(5)
    assert w.reset() == 1
    fresh = w.add(5)  # the broker reuses packet id 5 on the new connection
    assert w.complete(old) is False
    assert w.release() == []
    assert w.complete(fresh) is True
    assert w.release() == [5]


@given(st.lists(st.integers(1, 65535), min_size=1, max_size=50), st.randoms())
def test_any_completion_order_releases_everything_in_arrival_order(
    mids: list[int], rnd: object
) -> None:
    w = AckWindow()
    slots = [w.add(m) for m in mids]
    order = list(slots)
    rnd.shuffle(order)  # type: ignore[attr-defined]
    released: list[int] = []
    for slot in order:
        w.complete(slot)
        released += w.release()
        done = {s.seq for s in order[: order.index(slot) + 1]}
        # what is released is always a prefix of arrival order, all of it completed
        assert all(s.seq in done for s in slots[: len(released)])
    assert released == mids
