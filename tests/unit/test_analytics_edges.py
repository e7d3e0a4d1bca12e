"""Analytics at the edges: times outside UTC, unreadable timestamps, shared URLs, long spans.

Each test pins one behaviour docs/analytics.md promises where the figures once broke: a
stored timestamp or a filter bound whose offset takes it out of the years 1 to 9999 in UTC,
``skipped_timestamps`` counting each unreadable timestamp once, a URL fetched under two
source types, and a per-day list whose length follows the data rather than the dates.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from typer.testing import CliRunner

from ctx_memory import ContextManager
from ctx_memory.analytics import MAX_DENSE_DAYS, Aggregator, analyze
from ctx_memory.analytics._aggregate import as_utc
from ctx_memory.cli import app

# Valid ISO 8601 whose offset takes it out of the years 1 to 9999 once converted to UTC.
BEFORE_YEAR_1 = "0001-01-01T00:00:00+05:00"
AFTER_YEAR_9999 = "9999-12-31T23:00:00-05:00"
OUT_OF_RANGE = (BEFORE_YEAR_1, AFTER_YEAR_9999)


def _message(role: str, timestamp: object = "2026-03-01T10:00:00Z", **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"role": role, "content": role, **extra}
    if timestamp is not None:
        record["timestamp"] = timestamp
    return record


def _session(*history: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {"created_at": "2026-03-01T09:00:00Z", **metadata},
        "conversation_history": list(history),
    }


# --------------------------------------------------------------------------- outside UTC


def test_as_utc_refuses_a_time_without_a_utc_equivalent() -> None:
    """An offset that takes a time out of range is a ``ValueError``, never an overflow."""
    for text in OUT_OF_RANGE:
        with pytest.raises(ValueError, match="outside the range of UTC datetimes"):
            as_utc(datetime.fromisoformat(text))
    edge = datetime(1, 1, 1, 5, tzinfo=timezone(timedelta(hours=5)))
    assert as_utc(edge) == datetime(1, 1, 1, tzinfo=UTC)
    assert as_utc(datetime(9999, 12, 31, 23)) == datetime(9999, 12, 31, 23, tzinfo=UTC)


@pytest.mark.parametrize("stamp", OUT_OF_RANGE)
def test_a_stored_time_outside_utc_is_skipped_like_any_unreadable_one(stamp: str) -> None:
    """The message counts, off the day chart; the session falls back to ``created_at``."""
    aggregator = Aggregator()
    aggregator.add(_session(_message("user", stamp), _message("assistant", stamp)))
    aggregator.add({"metadata": {"created_at": stamp}})  # no message: no readable start
    report = aggregator.report()
    assert (report.sessions, report.turns, report.skipped_timestamps) == (2, 1, 2)
    assert report.messages_by_role["assistant"] == 1
    assert [(d.date, d.sessions, d.turns) for d in report.days] == [("2026-03-01", 1, 0)]
    assert report.latency_estimated_ms.count == 0


def test_a_stored_time_outside_utc_leaves_analyze_and_the_command_working() -> None:
    with ContextManager() as manager:
        manager.add_user_message("odd", "hi", timestamp=BEFORE_YEAR_1)
        manager.add_assistant_message("odd", "hello", model="m", timestamp=AFTER_YEAR_9999)
        manager.add_user_message("fine", "hi", timestamp="2026-03-02T10:00:00Z")
        report = analyze(manager)
        result = CliRunner().invoke(app, ["analytics", "--json"], obj=manager)
    assert (report.sessions, report.turns, report.skipped_timestamps) == (2, 2, 2)
    assert result.exit_code == 0, result.output
    assert '"skipped_timestamps": 2' in result.stdout


@pytest.mark.parametrize("bound", OUT_OF_RANGE)
def test_a_filter_bound_outside_utc_is_refused(bound: str) -> None:
    instant = datetime.fromisoformat(bound)
    with pytest.raises(ValueError, match="outside the range of UTC datetimes"):
        Aggregator(since=instant)
    with ContextManager() as manager, pytest.raises(ValueError, match="outside the range"):
        analyze(manager, until=instant)


@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize("bound", OUT_OF_RANGE)
def test_cli_refuses_a_date_outside_utc_as_a_usage_error(option: str, bound: str) -> None:
    with ContextManager() as manager:
        result = CliRunner().invoke(app, ["analytics", option, bound], obj=manager)
    assert result.exit_code == 2
    said = " ".join(result.stderr.replace("│", " ").split())  # typer boxes and wraps it
    assert f"Invalid value for {option}: '{bound}' falls outside the years 1 to 9999" in said
    assert "Traceback" not in result.output


def test_cli_bounds_are_read_as_utc() -> None:
    """A bound with an offset still selects by the instant it names."""
    with ContextManager() as manager:
        manager.add_user_message("s", "hi", timestamp="2026-03-01T09:00:00Z")
        args = ["analytics", "--json", "--since", "2026-03-01T10:00:00+02:00"]
        result = CliRunner().invoke(app, args, obj=manager)
    assert result.exit_code == 0, result.output
    assert '"since": "2026-03-01T08:00:00+00:00"' in result.stdout
    assert '"matched": 1' in result.stdout


# --------------------------------------------------------------------------- skipped


def _skipped(*history: dict[str, Any]) -> int:
    aggregator = Aggregator()
    aggregator.add(_session(*history))
    return aggregator.report().skipped_timestamps


@pytest.mark.parametrize(
    "history",
    [
        # A bad question answered without a recorded latency (was counted twice).
        [_message("user", "yesterday"), _message("assistant", model="m")],
        # The same bad question answered with one.
        [_message("user", "yesterday"), _message("assistant", metadata={"response_time_ms": 5})],
        # A bad reply after a reply (was not counted).
        [_message("user"), _message("assistant", metadata={"response_time_ms": 5}),
         _message("assistant", "not a time")],
        # A bad reply right after its question (counted once, not once per side).
        [_message("user"), _message("assistant", "not a time")],
        # A bad system message, and a bad tool result (were not counted).
        [_message("system", "not a time"), _message("user")],
        [_message("user"), _message("tool", "not a time", name="search")],
        # Not a string at all.
        [_message("user"), _message("assistant", 1_700_000_000)],
    ],
    ids=["question-estimated", "question-recorded", "reply-after-reply", "reply-after-question",
         "system", "tool", "not-a-string"],
)  # fmt: skip
def test_each_unreadable_timestamp_counts_once(history: list[dict[str, Any]]) -> None:
    assert _skipped(*history) == 1


def test_missing_timestamps_and_created_at_are_not_counted() -> None:
    """Only a message timestamp that is there and unreadable counts."""
    aggregator = Aggregator()
    aggregator.add(_session(_message("user", None), _message("assistant", None)))
    aggregator.add({"metadata": {"created_at": "yesterday"}, "conversation_history": [
        _message("user", {"when": "now"}), _message("assistant", "later"),
    ]})  # fmt: skip
    report = aggregator.report()
    assert (report.turns, report.skipped_timestamps) == (2, 2)


def test_skipped_timestamps_are_counted_from_the_store() -> None:
    """The QA cases, written through the manager: one unreadable timestamp each."""
    with ContextManager() as manager:
        manager.add_user_message("a", "hi", timestamp="yesterday")
        manager.add_assistant_message("a", "hello", model="m")
        manager.add_user_message("c", "hi")
        manager.add_assistant_message("c", "one", model="m", response_time_ms=5)
        manager.add_assistant_message("c", "two", model="m", timestamp="not a time")
        manager.add_message("d", "system", "be brief", timestamp="not a time")
        manager.add_user_message("d", "hi")
        assert analyze(manager).skipped_timestamps == 3


# --------------------------------------------------------------------------- by type


@pytest.mark.parametrize("order", [("js_scraping", "web_search"), ("web_search", "js_scraping")])
def test_a_url_fetched_under_two_types_counts_for_each(order: tuple[str, str]) -> None:
    url = "https://airline.example/paris"
    with ContextManager() as manager:
        for source_type in order:
            manager.add_fetched_context("s", source_type, f"Paris ({source_type})", url=url)
        manager.add_fetched_context("s", "web_search", "Other", url="https://other.example")
        manager.add_user_message("s", "Price?")
        manager.add_assistant_message(
            "s", "$420 [1].", model="m", sources_used=[url], metadata={"cited": [1]}
        )
        sources = analyze(manager).sources
    assert dict(sources.by_type) == {
        "web_search": {"items": 2, "urls": 2, "cited_urls": 1},
        "js_scraping": {"items": 1, "urls": 1, "cited_urls": 1},
    }
    # Still one (session, URL) pair each in the totals.
    assert (sources.fetched_urls, sources.cited_fetched_urls) == (2, 1)
    assert sources.citation_rate == 0.5


# --------------------------------------------------------------------------- per day


def _days_from(first: str, last: str) -> Aggregator:
    aggregator = Aggregator()
    for stamp in (first, last):
        aggregator.add(_session(_message("user", stamp)))
    return aggregator


def test_a_span_up_to_the_limit_lists_every_day() -> None:
    first = date(2020, 1, 1)
    last = first + timedelta(days=MAX_DENSE_DAYS - 1)
    report = _days_from(f"{first}T12:00:00Z", f"{last}T12:00:00Z").report()
    assert len(report.days) == MAX_DENSE_DAYS
    assert (report.days[0].date, report.days[-1].date) == (first.isoformat(), last.isoformat())
    assert sum(d.turns for d in report.days) == 2
    assert not report.days_sparse
    assert "Only days with activity" not in report.to_markdown()


def test_a_longer_span_lists_only_the_active_days() -> None:
    """Year 1 to 2026 was 739,677 entries; it is the two days that have data."""
    aggregator = _days_from("0001-01-01T00:00:00Z", "2026-03-01T10:00:00+01:00")
    aggregator.add(_session(_message("user", "2026-03-01T23:30:00-05:00")))  # 2nd in UTC
    report = aggregator.report()
    assert [(d.date, d.sessions, d.turns) for d in report.days] == [
        ("0001-01-01", 1, 1), ("2026-03-01", 1, 1), ("2026-03-02", 1, 1),
    ]  # fmt: skip
    assert report.days_sparse
    assert report.as_dict()["by_day"][0] == {"date": "0001-01-01", "sessions": 1, "turns": 1}
    assert "Only days with activity are listed" in report.to_markdown()
    assert "Only days with activity are listed" in report.to_html()


def test_one_day_past_the_limit_is_sparse() -> None:
    first = date(2020, 1, 1)
    last = first + timedelta(days=MAX_DENSE_DAYS)
    report = _days_from(f"{first}T12:00:00Z", f"{last}T12:00:00Z").report()
    assert [d.date for d in report.days] == [first.isoformat(), last.isoformat()]
    assert report.days_sparse
