"""The analytics routes at the edges: times outside UTC's range, stored or given as a filter.

A stored timestamp whose offset takes it out of the years 1 to 9999 in UTC is skipped like
any unreadable one, so ``GET /v1/analytics`` and the inspector's page still answer 200; a
``since`` / ``until`` bound like that is invalid input, refused as ``since=garbage`` is
(422 from the JSON API, 400 from the inspector), never a 500.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ctx_memory import ContextManager

OUT_OF_RANGE = ("0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00")


def test_a_stored_time_outside_utc_is_skipped_not_a_500(http: Any, manager: ContextManager) -> None:
    """An exported session, its times edited, imported back: valid ISO 8601, so accepted."""
    manager.add_user_message("s", "hi")
    manager.add_assistant_message("s", "hello", model="m")
    document = http.get("/v1/sessions/s").json()
    document["metadata"]["session_id"] = "odd"
    document["metadata"]["created_at"] = OUT_OF_RANGE[0]
    for message, stamp in zip(document["conversation_history"], OUT_OF_RANGE, strict=True):
        message["timestamp"] = stamp
    assert http.post("/v1/sessions", json=document).status_code == 201
    report = http.get("/v1/analytics")
    assert report.status_code == 200, report.text
    figures = report.json()
    assert (figures["sessions"]["matched"], figures["turns"]["total"]) == (2, 2)
    assert figures["skipped_timestamps"] == 2
    page = http.get("/inspector/analytics")
    assert page.status_code == 200, page.text
    assert 'id="analytics"' in page.text


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("bound", OUT_OF_RANGE)
def test_a_filter_bound_outside_utc_is_invalid_input(
    http: Any, manager: ContextManager, name: str, bound: str
) -> None:
    manager.add_user_message("s", "hi")
    api = http.get("/v1/analytics", params={name: bound})
    assert api.status_code == 422, api.text
    body = api.json()
    assert body["error"] == "validation_error"
    assert body["detail"][0]["loc"] == ["query", name]
    assert "outside the range of UTC datetimes" in body["detail"][0]["msg"]
    page = http.get("/inspector/analytics", params={name: bound})
    assert page.status_code == 400, page.text
    assert page.json()["error"] == "bad_request"


def test_bounds_at_the_edges_of_utc_are_accepted(http: Any, manager: ContextManager) -> None:
    """The widest bounds that do convert (and naive ones, read as UTC) still work."""
    manager.add_user_message("s", "hi")
    params = {"since": "0001-01-01T05:00:00+05:00", "until": "9999-12-31T23:59:59"}
    report = http.get("/v1/analytics", params=params)
    assert report.status_code == 200, report.text
    assert report.json()["filters"]["since"] == "0001-01-01T00:00:00+00:00"
    assert report.json()["sessions"]["matched"] == 1
    page = http.get("/inspector/analytics", params=params)
    assert page.status_code == 200, page.text
    assert 'name="since" value="0001-01-01T00:00:00"' in page.text


@pytest.mark.parametrize("bound", ["1700000000", "1700000000.5", "tomorrow"])
def test_the_api_reads_bounds_as_iso_8601_like_the_inspector(
    http: Any, manager: ContextManager, bound: str
) -> None:
    """A Unix time is refused by both pages (pydantic alone would read it as one)."""
    manager.add_user_message("s", "hi")
    api = http.get("/v1/analytics", params={"since": bound})
    assert api.status_code == 422, api.text
    assert "is not an ISO 8601 date or date-time" in api.json()["detail"][0]["msg"]
    assert http.get("/inspector/analytics", params={"since": bound}).status_code == 400
    day = http.get("/v1/analytics", params={"since": "2000-01-01", "until": " 2999-01-01T00:00Z "})
    assert day.status_code == 200, day.text
    assert day.json()["filters"]["since"] == "2000-01-01T00:00:00+00:00"
