"""The status index against the obvious model (every device's category in a dictionary, filtered
and sorted on each question), with Hypothesis: counts and pages agree, for any history of
updates, any owned partitions, any cursor and page size."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.streams.status_index import CATEGORIES, StatusIndex

DEVICES = [f"d{i:02}" for i in range(12)]
CATEGORY = st.none() | st.sampled_from(CATEGORIES)
UPDATES = st.lists(st.tuples(st.sampled_from(DEVICES), CATEGORY), max_size=80)
OWNED = st.sets(st.integers(0, 3))


def partition(device: str) -> int:
    return int(device[1:]) % 4


@given(UPDATES, OWNED, st.none() | st.sampled_from(CATEGORIES), st.integers(1, 5))
def test_counts_and_pages_match_the_model(
    updates: list[tuple[str, str | None]], owned: set[int], status: str | None, limit: int
) -> None:
    index = StatusIndex()
    model: dict[str, str | None] = {}
    for device, new in updates:
        index.update(partition(device), device, model.get(device), new)
        model[device] = new
    mine = {d: c for d, c in model.items() if c is not None and partition(d) in owned}
    assert index.counts(owned) == {c: sum(v == c for v in mine.values()) for c in CATEGORIES}
    listed = sorted(d for d, c in mine.items() if status is None or c == status)
    pages, cursor = [], ""
    while True:  # every page through the cursor, as the HTTP API does
        page, more = index.page(owned, status, cursor, limit)
        pages += page
        if not more:
            break
        cursor = page[-1]
    assert pages == listed


def test_a_page_reads_the_page_not_the_fleet() -> None:
    index = StatusIndex()
    for i in range(200_000):
        index.update(i % 8, f"dev-{i:07}", None, "offline" if i % 2 else "online")
    page, more = index.page(range(8), "offline", "dev-0100000", 3)
    assert page == ["dev-0100001", "dev-0100003", "dev-0100005"]
    assert more
    assert index.counts(range(4))["online"] == 50_000
