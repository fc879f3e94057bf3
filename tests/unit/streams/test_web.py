"""The HTTP API's parameter parsing and device view, without a worker: a bad parameter is a 400
with a sentence, never a 500."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.core import ConnectionEvent, EventKind, PresenceConfig, transition
from mqtt_presence.streams.web import MAX_LIMIT, BadParameterError, list_params, status_view


def test_defaults() -> None:
    assert list_params({}) == (None, 100, "")


def test_a_page_after_a_cursor() -> None:
    query = {"status": "offline", "limit": "5", "cursor": "cam-9"}
    assert list_params(query) == ("offline", 5, "cam-9")


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"status": "asleep"}, "status must be one of online, offline, sleeping, flapping"),
        ({"limit": "ten"}, "limit must be a whole number"),
        ({"limit": "0"}, f"limit must be between 1 and {MAX_LIMIT}"),
        ({"limit": str(MAX_LIMIT + 1)}, f"limit must be between 1 and {MAX_LIMIT}"),
    ],
)
def test_a_bad_parameter_says_what_is_accepted(query: dict[str, str], says: str) -> None:
    with pytest.raises(BadParameterError, match=says):
        list_params(query)


@given(st.dictionaries(st.sampled_from(["status", "limit", "cursor", "x"]), st.text()))
def test_any_query_is_either_parsed_or_refused_with_a_sentence(query: dict[str, str]) -> None:
    try:
        status, limit, cursor = list_params(query)
    except BadParameterError as exc:
        refused = str(exc)
        assert refused.split(maxsplit=1)[0] in {"status", "limit"}
        return
    assert status in (None, "online", "offline", "sleeping", "flapping")
    assert 1 <= limit <= MAX_LIMIT
    assert cursor == query.get("cursor", "")


def test_the_device_view_is_its_last_change_and_its_current_session() -> None:
    config = PresenceConfig()
    state, _ = transition(
        None,
        ConnectionEvent(device="cam-1", kind=EventKind.BIRTH, received_at=1, session=7),
        config,
    )
    assert state is not None
    view = status_view(state)
    assert view is not None
    assert (view["device"], view["status"], view["version"], view["session"]) == (
        "cam-1",
        "online",
        1,
        7,
    )
    assert view["current_session"] == 7
