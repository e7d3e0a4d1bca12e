"""``analyze()`` on the persistent stores: paging through SQLite and Redis gives the known figures.

Session ``i`` of the data set is built so each figure follows from ``i`` alone: mode
``MODES[i % 3]``, ``i % 4`` turns starting on day ``i % 5``, replies alternating between two
models with latency ``10 * (i + 1)`` ms, one fetched URL per session cited when ``i`` is even,
a tool call in every session with at least two turns.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from ctx_memory.analytics import _scan as scan_module
from ctx_memory.analytics import analyze

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory import ContextManager

pytestmark = pytest.mark.stores("sqlite", "redis")

SESSIONS = 37
DAY0 = datetime(2026, 5, 1, 8, tzinfo=UTC)
MODES = ("normal", "thinking", "research")
MODELS = ("model-a", "model-b")


def build(manager: ContextManager) -> None:
    for i in range(SESSIONS):
        sid = f"sess/{i:03d}"  # a slash: ids are not key patterns
        manager.update_metadata(sid, mode=MODES[i % 3])
        url = f"https://example.org/{i}"
        manager.add_fetched_context(sid, "web_search", f"source {i}", url=url)
        at = DAY0 + timedelta(days=i % 5)
        for turn in range(i % 4):
            manager.add_user_message(sid, f"q{turn}", timestamp=at + timedelta(minutes=turn))
            if turn == 1:
                manager.add_messages(sid, [
                    {"role": "assistant", "content": "", "timestamp": at.isoformat(),
                     "tool_calls": [{"name": "search", "args": {}, "id": f"c{i}",
                                     "type": "tool_call"}],
                     "metadata": {"model": "planner", "response_time_ms": 1}},
                    {"role": "tool", "content": "r", "tool_call_id": f"c{i}", "name": "search",
                     "timestamp": at.isoformat()},
                ])  # fmt: skip
            manager.add_assistant_message(
                sid, "a [1]", model=MODELS[turn % 2], response_time_ms=10 * (i + 1),
                sources_used=[url], metadata={"cited": [1] if i % 2 == 0 else []},
                timestamp=at + timedelta(minutes=turn, seconds=30),
            )  # fmt: skip


def nearest_rank(values: list[int], q: int) -> float:
    ordered = sorted(values)
    return float(next(v for k, v in enumerate(ordered, 1) if k * 100 >= q * len(ordered)))


@pytest.fixture
def manager(manager_factory: Callable[..., ContextManager]) -> ContextManager:
    cm = manager_factory()
    build(cm)
    return cm


@pytest.mark.parametrize("page_size", [1000, 4])
def test_known_figures(
    manager: ContextManager, monkeypatch: pytest.MonkeyPatch, page_size: int
) -> None:
    pages: list[int] = []
    real = manager.list_sessions

    def spy(*args: Any, **kwargs: Any) -> list[str]:
        page = real(*args, **kwargs)
        pages.append(len(page))
        return page

    monkeypatch.setattr(manager, "list_sessions", spy)
    monkeypatch.setattr(scan_module.session_ids, "__defaults__", (page_size,))
    report = analyze(manager, progress=True)
    assert sum(pages) == SESSIONS
    assert max(pages) <= page_size  # paged, never the whole store at once
    turns = [i % 4 for i in range(SESSIONS)]
    assert (report.sessions_scanned, report.sessions) == (SESSIONS, SESSIONS)
    assert report.turns == sum(turns)
    assert report.sessions_empty == turns.count(0)
    assert report.sessions_one_turn == turns.count(1)
    assert dict(report.modes) == dict(Counter(MODES[i % 3] for i in range(SESSIONS)))
    replies = Counter(MODELS[t % 2] for i in range(SESSIONS) for t in range(i % 4))
    replies["planner"] = sum(t >= 2 for t in turns)
    assert {m.model: m.replies for m in report.models} == dict(replies)
    latencies = [10 * (i + 1) for i in range(SESSIONS) for _ in range(i % 4)]
    recorded = latencies + [1] * replies["planner"]
    assert report.latency_ms.count == len(recorded)
    assert report.latency_ms.p50 == nearest_rank(recorded, 50)
    assert report.latency_ms.p99 == nearest_rank(recorded, 99)
    assert [(t.tool, t.calls, t.results) for t in report.tools] == [
        ("search", replies["planner"], replies["planner"])
    ]
    s = report.sources
    assert (s.fetched_items, s.fetched_urls) == (SESSIONS, SESSIONS)
    assert s.used_urls == sum(t > 0 for t in turns)
    assert s.cited_fetched_urls == sum(t > 0 and i % 2 == 0 for i, t in enumerate(turns))
    # Sessions with turns start at their first message (day i % 5); empty ones were created
    # now, so they fall on today's date after these five days.
    by_day = {d.date: (d.sessions, d.turns) for d in report.days}
    for k in range(5):
        day = (DAY0 + timedelta(days=k)).date().isoformat()
        in_day = [i for i in range(SESSIONS) if i % 5 == k and turns[i]]
        assert by_day[day] == (len(in_day), sum(turns[i] for i in in_day))
    assert sum(d.sessions for d in report.days) == SESSIONS
    assert report.messages_by_role["tool"] == replies["planner"]
    assert report.tokens_by_section["history"] == sum(report.tokens_by_role.values()) > 0


def test_filters(manager: ContextManager) -> None:
    since, until = DAY0 + timedelta(days=1), DAY0 + timedelta(days=3)
    report = analyze(manager, since=since, until=until, mode="thinking")
    # Sessions with turns start at their first message (day i % 5); empty ones were created now.
    kept = [i for i in range(SESSIONS) if i % 3 == 1 and i % 4 and i % 5 in (1, 2)]
    assert report.sessions == len(kept)
    assert report.turns == sum(i % 4 for i in kept)
    assert dict(report.modes) == {"thinking": len(kept)}
