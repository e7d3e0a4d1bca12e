"""Times in the assembly: pinned sources in time order, and a naive ``now`` read as UTC."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

import pytest
from langchain_core.messages import HumanMessage

from ctx_memory import ContextManager, ContextPromptAssembler
from ctx_memory.assembly.sources import format_header, split_pinned

if TYPE_CHECKING:
    from collections.abc import Iterator

LAYOUTS: tuple[Literal["classic", "stable"], ...] = ("classic", "stable")


def _pin(manager: ContextManager, url: str, timestamp: datetime | str) -> None:
    manager.add_fetched_context(
        "s", "docs", f"Policy at {url}: " + "rules " * 20, url=url,
        extracted_data={"title": url, "pinned": True}, timestamp=timestamp,
    )  # fmt: skip


def test_pinned_sources_are_ordered_by_instant_not_by_text(manager: ContextManager) -> None:
    manager.set_system_prompt("s", "You are a hotel front desk.")
    # 18:00 in Tokyo is 09:00 UTC: pinned an hour before the second, written with +00:00.
    _pin(manager, "https://h.example/old", datetime(2026, 3, 2, 18, tzinfo=ZoneInfo("Asia/Tokyo")))
    _pin(manager, "https://h.example/new", "2026-03-02T10:00:00+00:00")
    prompt = ContextPromptAssembler(manager, max_tokens=4000).assemble("s", "check-out?")
    assert prompt.report.pinned_source_urls == ("https://h.example/old", "https://h.example/new")
    # Too many to keep: the oldest that fit are kept.
    one = ContextPromptAssembler(manager, max_tokens=4000, max_sources=1).assemble("s", "q")
    assert one.report.pinned_source_urls == ("https://h.example/old",)
    assert one.report.pinned_sources_dropped == 1


def test_a_newly_pinned_item_with_an_offset_goes_last_and_keeps_the_prefix(
    manager: ContextManager,
) -> None:
    manager.set_system_prompt("s", "You are the front desk.")
    _pin(manager, "https://kew.example/rules", "2026-12-02T02:25:00+00:00")
    for i in range(5):
        manager.add_messages("s", [HumanMessage(f"question {i}"), HumanMessage(f"more {i}")])
    assembler = ContextPromptAssembler(manager, max_tokens=4000, layout="stable")
    first = assembler.assemble("s", "breakfast?").messages[0].text
    # Five minutes later, written as Los Angeles time (the text sorts first).
    _pin(manager, "https://kew.example/breakfast", "2026-12-01T18:30:00-08:00")
    second = assembler.assemble("s", "breakfast?")
    assert second.report.pinned_source_urls[-1] == "https://kew.example/breakfast"
    assert second.messages[0].text.startswith(first)  # the cached system message, extended


def test_unreadable_or_missing_timestamps_count_as_the_oldest_in_stored_order() -> None:
    pin = {"extracted_data": {"pinned": True}}
    items = [
        {**pin, "content": "a", "timestamp": "2026-01-02T00:00:00+00:00"},
        {**pin, "content": "b", "timestamp": "yesterday"},
        {**pin, "content": "c", "timestamp": "2026-01-02T08:00:00+09:00"},
        {**pin, "content": "d"},
        {**pin, "content": "e", "timestamp": "2026-01-01T23:00:00"},
    ]
    pinned, others = split_pinned(items)
    # b and d first as given; then 23:00Z (naive is UTC), 08:00+09:00 = 23:00Z (a tie:
    # stored order), 00:00Z.
    assert [i["content"] for i in pinned] == ["b", "d", "c", "e", "a"]
    assert others == []


@pytest.fixture(params=["America/New_York", "Asia/Kathmandu", "UTC"])
def host_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's local zone set to each value (``TZ``), put back afterwards."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_a_naive_now_is_utc_whatever_the_hosts_zone(
    manager: ContextManager, host_zone: str
) -> None:
    manager.update_metadata("s", user_timezone="Asia/Tokyo")
    now = datetime(2026, 1, 1, 0, 0)  # naive: the point of the test
    line = "User's local time: 2026-01-01 09:00 (Asia/Tokyo)"
    assert format_header(manager.get_header("s")["metadata"], now=now) == line
    for layout in LAYOUTS:
        assembler = ContextPromptAssembler(manager, max_tokens=2000, layout=layout)
        prompt = assembler.build("s", [HumanMessage("what time is it?")], query="time", now=now)
        assert any(line in m.text for m in prompt.messages), (host_zone, layout)
