"""Analytics across sessions: figures against a generated data set whose answers are known.

The data set is written through the manager's public API (the calls an app, ContextualChat
or an agent makes) from a seeded RNG; while writing it, the test notes what every figure
must be (:class:`Gen`), and :func:`expected` adds those notes up with its own arithmetic.
Only the token counts are read back from the store (the manager computes them on write).
"""

from __future__ import annotations

import json
import random
import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from typer.testing import CliRunner

from ctx_memory import ContextManager, ContextualChat, InMemoryStore
from ctx_memory.analytics import (
    SCHEMA,
    Aggregator,
    AnalyticsReport,
    analyze,
    bar_chart,
    line_chart,
    percentiles,
    session_ids,
)
from ctx_memory.analytics import _scan as scan_module
from ctx_memory.cli import app
from ctx_memory.errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

    from langchain_core.runnables import RunnableConfig

DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4")
MODES = ("normal", "thinking", "research")
TOOLS = ("web_search", "calculator")
ROLES = ("user", "assistant", "system", "tool")
ELSEWHERE = "https://not-fetched.example/page"


@dataclass
class Gen:
    """What one generated session must contribute to each figure (noted while writing it)."""

    sid: str
    mode: str
    start: datetime | None = None
    user_days: list[str] = field(default_factory=list)
    roles: Counter[str] = field(default_factory=Counter)
    replies: list[tuple[str, int | None]] = field(default_factory=list)  # (model, latency)
    estimated: list[int] = field(default_factory=list)
    fetched: dict[str, list[str]] = field(default_factory=dict)  # type -> urls (repeats kept)
    used: set[str] = field(default_factory=set)
    cited: set[str] = field(default_factory=set)
    citations: int = 0
    replies_with_sources: int = 0
    replies_citing: int = 0
    tool_calls: Counter[str] = field(default_factory=Counter)
    tool_results: Counter[str] = field(default_factory=Counter)
    tool_errors: Counter[str] = field(default_factory=Counter)
    # Read back from the store after writing (the manager counts tokens on write):
    tokens_by_role: Counter[str] = field(default_factory=Counter)
    system_tokens: int = 0
    fetched_tokens: Counter[str] = field(default_factory=Counter)


def _ts(at: datetime) -> str:
    return at.isoformat()


def build(manager: ContextManager, *, sessions: int = 60, seed: int = 14) -> list[Gen]:
    """Write ``sessions`` generated sessions; return what each must count for."""
    rng = random.Random(seed)
    gens = []
    for index in range(sessions):
        gen = Gen(f"s{index:03d}", rng.choice(MODES))
        start = DAY0 + timedelta(days=rng.randrange(10), seconds=rng.randrange(86_400))
        turns = rng.choice((0, 1, 1, 2, 3, 5))
        if turns:  # created now; it starts at its first message, in March
            manager.update_metadata(gen.sid, mode=gen.mode)
        else:  # no message: it starts when it was created (an imported March session)
            meta = {"session_id": gen.sid, "mode": gen.mode, "created_at": _ts(start),
                    "timestamp": _ts(start)}  # fmt: skip
            manager.import_session({"metadata": meta})
            gen.start = start
        if rng.random() < 0.4:
            manager.set_system_prompt(gen.sid, "You are a careful travel assistant.")
        # Fetched sources: two types, one URL sometimes fetched twice (one URL, two items).
        urls: list[str] = []
        for k in range(rng.randrange(5)):
            kind = ("web_search", "js_scraping")[k % 2]
            url = f"https://site{k}.example/{index}"
            manager.add_fetched_context(gen.sid, kind, f"page {k} of {index}", url=url)
            gen.fetched.setdefault(kind, []).append(url)
            urls.append(url)
            if rng.random() < 0.2:
                manager.add_fetched_context(gen.sid, kind, f"again {k}", url=url)
                gen.fetched[kind].append(url)
        at = start
        for turn in range(turns):
            at += timedelta(minutes=rng.randrange(1, 600))
            manager.add_user_message(gen.sid, f"question {turn}", timestamp=at)
            gen.roles["user"] += 1
            gen.user_days.append(at.date().isoformat())
            gen.start = gen.start or at
            previous = "user"
            if rng.random() < 0.3:  # an agent's tool round: call (no latency) then result
                tool = rng.choice(TOOLS)
                call_id = f"call-{index}-{turn}"
                error = rng.random() < 0.3
                named = rng.random() < 0.5  # else the name comes from the call's id
                result: dict[str, Any] = {
                    "role": "tool", "content": "boom" if error else "42",
                    "tool_call_id": call_id, "timestamp": _ts(at + timedelta(seconds=2)),
                }  # fmt: skip
                if named:
                    result["name"] = tool
                if error:
                    result["status"] = "error"
                call = {
                    "role": "assistant", "content": "", "timestamp": _ts(at + timedelta(seconds=1)),
                    "tool_calls": [{"name": tool, "args": {"q": "x"}, "id": call_id,
                                    "type": "tool_call"}],
                    "response_metadata": {"model_name": "planner-model"},
                }  # fmt: skip
                manager.add_messages(gen.sid, [call, result])
                gen.roles["assistant"] += 1
                gen.roles["tool"] += 1
                gen.replies.append(("planner-model", None))
                gen.estimated.append(1000)  # user -> call: 1 s, no recorded latency
                gen.tool_calls[tool] += 1
                gen.tool_results[tool] += 1
                gen.tool_errors[tool] += error
                previous = "tool"
            model = rng.choice(MODELS)
            latency = rng.randrange(50, 5000) if rng.random() < 0.8 else None
            gap_ms = rng.randrange(100, 20_000)
            shown = rng.sample(urls, rng.randrange(len(urls) + 1))
            if shown and rng.random() < 0.3:
                shown.append(ELSEWHERE)
            cited_numbers = sorted(
                rng.sample(range(1, len(shown) + 1), rng.randrange(len(shown) + 1))
            )
            tools_used = [rng.choice(TOOLS)] if rng.random() < 0.2 else None
            manager.add_assistant_message(
                gen.sid,
                f"answer {turn} " + "".join(f"[{n}]" for n in cited_numbers),
                model=model,
                response_time_ms=latency,
                sources_used=shown,
                tools_used=tools_used,
                metadata={"cited": cited_numbers},
                timestamp=at + timedelta(milliseconds=gap_ms),
            )
            at += timedelta(milliseconds=gap_ms)
            gen.roles["assistant"] += 1
            gen.replies.append((model, latency))
            if latency is None and previous == "user":
                gen.estimated.append(gap_ms)
            for name in tools_used or ():
                gen.tool_calls[name] += 1
            gen.used.update(shown)
            gen.cited.update(shown[n - 1] for n in cited_numbers)
            gen.citations += len(cited_numbers)
            gen.replies_with_sources += bool(shown)
            gen.replies_citing += bool(cited_numbers)
            if rng.random() < 0.1:
                manager.add_message(gen.sid, "system", "note", timestamp=at)
                gen.roles["system"] += 1
        for record in manager.get_history(gen.sid):
            gen.tokens_by_role[record["role"]] += record["token_count"]
        gen.system_tokens = manager.get_metadata(gen.sid)["system_prompt_tokens"]
        for kind, items in manager.get_fetched_context(gen.sid).items():
            gen.fetched_tokens[kind] += sum(item["token_count"] for item in items)
        gens.append(gen)
    return gens


def nearest_rank(values: list[int], q: int) -> float | None:
    """The smallest value with at least q % of the values at or below it (by definition)."""
    if not values:
        return None
    return float(min(v for v in values if sum(x <= v for x in values) * 100 >= q * len(values)))


def figures(values: list[int]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50": nearest_rank(values, 50),
        "p90": nearest_rank(values, 90),
        "p99": nearest_rank(values, 99),
        "mean": round(sum(values) / len(values), 3) if values else None,
        "max": float(max(values)) if values else None,
    }


def ranked(counts: Counter[str] | dict[str, int]) -> dict[str, int]:
    return {k: counts[k] for k in sorted(counts, key=lambda k: (-counts[k], k))}


def ratio(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def expected(
    gens: Iterable[Gen], *, scanned: int, since: datetime | None = None,
    until: datetime | None = None, mode: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``as_dict()`` (without ``generated_at``) for the sessions the filters keep."""
    kept = [
        g for g in gens
        if (mode is None or g.mode == mode)
        and (since is None or g.start >= since)  # type: ignore[operator]
        and (until is None or g.start < until)  # type: ignore[operator]
    ]  # fmt: skip
    turns = [len(g.user_days) for g in kept]
    active = sum(t > 0 for t in turns)
    one_turn = sum(t == 1 for t in turns)
    days_sessions = Counter(g.start.date().isoformat() for g in kept)  # type: ignore[union-attr]
    days_turns = Counter(d for g in kept for d in g.user_days)
    by_day = []
    if days_sessions or days_turns:
        first = date.fromisoformat(min(days_sessions | days_turns))
        last = date.fromisoformat(max(days_sessions | days_turns))
        day = first
        while day <= last:
            key = day.isoformat()
            by_day.append({"date": key, "sessions": days_sessions[key], "turns": days_turns[key]})
            day += timedelta(days=1)
    roles = Counter[str]()
    tokens = Counter[str]()
    fetched_tokens = Counter[str]()
    model_replies = Counter[str]()
    model_latency: dict[str, list[int]] = {}
    for g in kept:
        roles.update(g.roles)
        tokens.update(g.tokens_by_role)
        fetched_tokens.update(g.fetched_tokens)
        for model, latency in g.replies:
            model_replies[model] += 1
            if latency is not None:
                model_latency.setdefault(model, []).append(latency)
    fetched_items = Counter({t: sum(len(g.fetched.get(t, [])) for g in kept)
                             for g in kept for t in g.fetched})  # fmt: skip
    fetched_urls = Counter[str]()
    cited_by_type = Counter[str]()
    for g in kept:
        type_of: dict[str, str] = {}
        for t, urls in g.fetched.items():
            for url in urls:
                type_of.setdefault(url, t)
        fetched_urls.update(type_of.values())
        cited_by_type.update(type_of[u] for u in g.cited if u in type_of)
    n_fetched_urls = sum(fetched_urls.values())
    n_cited_fetched = sum(cited_by_type.values())
    calls, results, errors = Counter[str](), Counter[str](), Counter[str]()
    for g in kept:
        calls.update(g.tool_calls)
        results.update(g.tool_results)
        errors.update(g.tool_errors)
    sections = {
        "system_prompt": sum(g.system_tokens for g in kept),
        "history": sum(tokens.values()),
        "fetched_sources": sum(fetched_tokens.values()),
    }
    return {
        "schema": SCHEMA,
        "filters": {
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "mode": mode,
        },
        "sessions": {
            "scanned": scanned,
            "unreadable": 0,
            "matched": len(kept),
            "empty": len(kept) - active,
            "one_turn": one_turn,
            "abandoned_rate": ratio(one_turn, active),
        },
        "turns": {"total": sum(turns), "per_active_session": ratio(sum(turns), active)},
        "messages": {"total": sum(roles.values()), "by_role": {r: roles[r] for r in ROLES}},
        "by_day": by_day,
        "tokens": {
            "total": sum(sections.values()),
            "by_role": {r: tokens[r] for r in ROLES},
            "by_section": sections,
            "by_source_type": ranked(fetched_tokens),
        },
        "models": [
            {"model": m, "replies": n, "latency_ms": figures(model_latency.get(m, []))}
            for m, n in ranked(model_replies).items()
        ],
        "latency_ms": {
            "recorded": figures([v for values in model_latency.values() for v in values]),
            "estimated": figures([v for g in kept for v in g.estimated]),
        },
        "sources": {
            "fetched_items": sum(fetched_items.values()),
            "fetched_urls": n_fetched_urls,
            "used_urls": sum(len(g.used) for g in kept),
            "cited_urls": sum(len(g.cited) for g in kept),
            "cited_fetched_urls": n_cited_fetched,
            "citation_rate": ratio(n_cited_fetched, n_fetched_urls),
            "citations": sum(g.citations for g in kept),
            "replies_with_sources": sum(g.replies_with_sources for g in kept),
            "replies_citing": sum(g.replies_citing for g in kept),
            "by_type": {
                t: {"items": n, "urls": fetched_urls[t], "cited_urls": cited_by_type[t]}
                for t, n in ranked(fetched_items).items()
            },
        },
        "tools": [
            {"tool": t, "calls": calls[t], "results": results[t], "errors": errors[t]}
            for t in ranked(Counter({t: calls[t] for t in calls | results}))
        ],
        "modes": ranked(Counter(g.mode for g in kept)),
        "skipped_timestamps": 0,
    }


def _figures(report: AnalyticsReport) -> dict[str, Any]:
    out = report.as_dict()
    del out["generated_at"]
    return out


@pytest.fixture
def manager() -> Iterator[ContextManager]:
    with ContextManager(store=InMemoryStore(), token_counter="approximate") as cm:
        yield cm


@pytest.fixture
def data(manager: ContextManager) -> list[Gen]:
    return build(manager)


# --------------------------------------------------------------------------- the figures


def test_the_data_set_exercises_every_figure(data: list[Gen]) -> None:
    """The generator produces every case the figures tell apart (else the tests prove less)."""
    report = expected(data, scanned=len(data))
    assert report["sessions"]["empty"] > 0
    assert report["sessions"]["one_turn"] > 0
    assert (
        report["sessions"]["matched"] - report["sessions"]["empty"] > report["sessions"]["one_turn"]
    )
    assert 10 <= len(report["by_day"]) <= 13  # starts over 10 days, turns up to 2 days later
    assert all(report["messages"]["by_role"].values())
    assert report["latency_ms"]["recorded"]["count"] > 20
    assert report["latency_ms"]["estimated"]["count"] > 5
    assert any(m["model"] == "planner-model" for m in report["models"])
    assert 0 < report["sources"]["cited_fetched_urls"] < report["sources"]["fetched_urls"]
    assert report["sources"]["used_urls"] > report["sources"]["cited_urls"]
    assert report["sources"]["fetched_items"] > report["sources"]["fetched_urls"]
    assert all(t["errors"] > 0 for t in report["tools"])
    assert set(report["modes"]) == set(MODES)
    assert report["tokens"]["by_section"]["system_prompt"] > 0


def test_every_figure_matches_the_data_set(manager: ContextManager, data: list[Gen]) -> None:
    assert _figures(analyze(manager)) == expected(data, scanned=len(data))


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentiles([float(v) for v in values]).as_dict() == figures(values)
    assert percentiles([7.0]).as_dict() == figures([7])
    assert percentiles([]).as_dict() == figures([])
    assert (percentiles([5.0, 1.0, 3.0]).p50, percentiles([5.0, 1.0, 3.0]).p90) == (3.0, 5.0)


@pytest.mark.parametrize("mode", [*MODES, "unheard-of"])
def test_filter_by_mode(manager: ContextManager, data: list[Gen], mode: str) -> None:
    report = analyze(manager, mode=mode)
    assert _figures(report) == expected(data, scanned=len(data), mode=mode)


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (DAY0 + timedelta(days=3), None),
        (None, DAY0 + timedelta(days=5)),
        (DAY0 + timedelta(days=2, hours=12), DAY0 + timedelta(days=6, hours=6)),
        (DAY0 + timedelta(days=30), None),  # nothing left
    ],
)
def test_filter_by_time(
    manager: ContextManager, data: list[Gen], since: datetime | None, until: datetime | None
) -> None:
    report = analyze(manager, since=since, until=until)
    want = expected(data, scanned=len(data), since=since, until=until)
    assert 0 < want["sessions"]["matched"] < len(data) or since == DAY0 + timedelta(days=30)
    assert _figures(report) == want


def test_time_and_mode_filters_combine(manager: ContextManager, data: list[Gen]) -> None:
    since, until = DAY0 + timedelta(days=2), DAY0 + timedelta(days=8)
    report = analyze(manager, since=since, until=until, mode="research")
    assert _figures(report) == expected(
        data, scanned=len(data), since=since, until=until, mode="research"
    )


def test_naive_datetimes_are_utc(manager: ContextManager, data: list[Gen]) -> None:
    naive = analyze(manager, since=datetime(2026, 3, 4), until=datetime(2026, 3, 7))
    aware = analyze(manager, since=DAY0 + timedelta(days=3), until=DAY0 + timedelta(days=6))
    assert _figures(naive) == _figures(aware)
    assert naive.as_dict()["filters"]["since"] == "2026-03-04T00:00:00+00:00"


def test_a_session_starts_at_its_first_message_or_creation() -> None:
    """The first message dates a session, whenever it was created; else ``created_at`` does."""
    aggregator = Aggregator(since=datetime(2026, 1, 2, tzinfo=UTC))
    created = "2026-01-05T00:00:00+00:00"

    def session(*timestamps: str) -> dict[str, Any]:
        history = [{"role": "user", "content": "q", "timestamp": t} for t in timestamps]
        return {"metadata": {"created_at": created}, "conversation_history": history}

    aggregator.add(session("2026-01-01T23:00:00-02:00"))  # imported: older than created_at
    aggregator.add(session("2026-01-07T10:00:00Z", "2026-01-01T10:00:00Z"))  # opened earlier
    aggregator.add(session())  # no message
    aggregator.add(session("garbled"))  # no readable first timestamp
    aggregator.add(session("2026-01-01T21:00:00-02:00"))  # 23:00Z on the 1st: before since
    report = aggregator.report()
    assert (report.sessions_scanned, report.sessions) == (5, 4)
    assert [(d.date, d.sessions, d.turns) for d in report.days] == [
        ("2026-01-01", 0, 1), ("2026-01-02", 1, 1), ("2026-01-03", 0, 0), ("2026-01-04", 0, 0),
        ("2026-01-05", 2, 0), ("2026-01-06", 0, 0), ("2026-01-07", 1, 1),
    ]  # fmt: skip
    assert report.skipped_timestamps == 1


def test_unparseable_timestamps_are_counted_not_fatal() -> None:
    aggregator = Aggregator()
    aggregator.add({"metadata": {"created_at": "yesterday"}, "conversation_history": [
        {"role": "user", "content": "q", "timestamp": "not a time"},
        {"role": "assistant", "content": "a", "timestamp": "later"},
    ]})  # fmt: skip
    report = aggregator.report()
    assert (report.sessions, report.turns, report.skipped_timestamps) == (1, 1, 2)
    assert report.days == ()
    # Filtering by time needs a start: a session without one is not selected.
    timed = Aggregator(since=DAY0)
    timed.add({"metadata": {"created_at": "yesterday"}, "conversation_history": []})
    assert timed.report().sessions == 0


@pytest.mark.parametrize(
    "stamp",
    ["yesterday, around noon Z", "2026-13-45T10:00:00Z", "2026-02-30T10:00:00+00:00",
     "2026-03-01T25:00:00+00:00", "2026-03-01T10:61:00Z"],
)  # fmt: skip
def test_text_that_looks_utc_but_is_no_timestamp_is_skipped(stamp: str) -> None:
    """A text ending like a UTC timestamp is parsed, not trusted: skipped, never a crash."""
    aggregator = Aggregator()
    aggregator.add({"metadata": {"created_at": "2026-03-01T09:00:00Z"}, "conversation_history": [
        {"role": "user", "content": "q", "timestamp": "2026-03-01T09:00:00Z"},
        {"role": "assistant", "content": "a", "timestamp": stamp},
        {"role": "user", "content": "q2", "timestamp": stamp},
    ]})  # fmt: skip
    report = aggregator.report()
    assert (report.turns, report.skipped_timestamps) == (2, 2)
    assert [(d.date, d.turns) for d in report.days] == [("2026-03-01", 1)]


# --------------------------------------------------------------------------- adapters


def test_contextual_chat_turns_are_counted(manager: ContextManager) -> None:
    manager.add_fetched_context(
        "chat", "web_search", "Orly is 13 km south.", url="https://o.example"
    )
    manager.add_fetched_context(
        "chat", "web_search", "CDG is 25 km north.", url="https://c.example"
    )
    model = GenericFakeChatModel(messages=iter([AIMessage("Orly [1]."), AIMessage("Thanks.")]))
    chat = ContextualChat(manager, model, model_name="fake-model", max_tokens=4000)
    config: RunnableConfig = {"configurable": {"session_id": "chat"}}
    chat.invoke("Which airport is closest, Orly or CDG?", config)
    chat.invoke("Thanks", config)
    report = analyze(manager)
    assert report.turns == 2
    assert [(m.model, m.replies, m.latency_ms.count) for m in report.models] == [
        ("fake-model", 2, 2)
    ]
    assert report.latency_estimated_ms.count == 0  # ContextualChat records its latency
    cited = [
        r["metadata"]["cited"] for r in manager.get_history("chat") if r["role"] == "assistant"
    ]
    assert cited[0]
    assert not cited[1]
    s = report.sources
    assert (s.fetched_urls, s.cited_urls, s.cited_fetched_urls, s.replies_citing) == (2, 1, 1, 1)


# --------------------------------------------------------------------------- reading the store


def test_pages_through_a_paged_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ctx_memory.stores.sqlite import SqliteStore

    with ContextManager(
        store=SqliteStore(str(tmp_path / "a.sqlite3")), token_counter="approximate"
    ) as cm:
        gens = build(cm, sessions=23)
        calls: list[dict[str, Any]] = []
        real = cm.list_sessions

        def spy(*args: Any, **kwargs: Any) -> list[str]:
            calls.append(kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(cm, "list_sessions", spy)
        monkeypatch.setattr(scan_module, "PAGE_SIZE", 5)
        monkeypatch.setattr(scan_module.session_ids, "__defaults__", (5,))
        assert _figures(analyze(cm)) == expected(gens, scanned=23)
        assert [c["limit"] for c in calls] == [5] * 5  # 5+5+5+5+3: the short page ends it
        assert [c["cursor"] for c in calls] == [None, "s004", "s009", "s014", "s019"]


def test_a_session_gone_between_listing_and_reading_is_passed_over(
    manager: ContextManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager.add_user_message("a", "hi")
    manager.add_user_message("b", "hi")
    real = manager.list_sessions

    def list_then_delete(*args: Any, **kwargs: Any) -> list[str]:
        ids = real(*args, **kwargs)
        manager.delete_context("a")
        return ids

    monkeypatch.setattr(manager, "list_sessions", list_then_delete)
    report = analyze(manager)
    assert (report.sessions_scanned, report.sessions, report.turns) == (1, 1, 1)


def test_session_ids_of_an_empty_store(manager: ContextManager) -> None:
    assert list(session_ids(manager)) == []
    report = analyze(manager)
    assert (report.sessions, report.days, report.models) == (0, (), ())
    assert report.as_dict()["sessions"]["abandoned_rate"] == 0.0
    assert "nothing recorded" in report.to_html()


def test_progress_bar_is_optional(manager: ContextManager, data: list[Gen]) -> None:
    assert _figures(analyze(manager, progress=True)) == _figures(analyze(manager))


# --------------------------------------------------------------------------- output


def test_as_dict_is_json_with_stable_keys(manager: ContextManager, data: list[Gen]) -> None:
    out = analyze(manager).as_dict()
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert list(out) == [
        "schema", "generated_at", "filters", "sessions", "turns", "messages", "by_day",
        "tokens", "models", "latency_ms", "sources", "tools", "modes", "skipped_timestamps",
    ]  # fmt: skip
    assert list(out["tokens"]["by_section"]) == ["system_prompt", "history", "fetched_sources"]
    assert list(out["messages"]["by_role"]) == list(ROLES)
    assert datetime.fromisoformat(out["generated_at"]).tzinfo is not None


HOSTILE = '<script>alert("x")</script>'


def _hostile_manager() -> ContextManager:
    cm = ContextManager(store=InMemoryStore(), token_counter="approximate")
    cm.add_fetched_context(HOSTILE, HOSTILE, "text", url="javascript:alert(1)")
    cm.add_user_message(HOSTILE, HOSTILE, timestamp="2026-03-01T10:00:00+00:00")
    cm.add_messages(HOSTILE, [
        {"role": "assistant", "content": "", "timestamp": "2026-03-01T10:00:01+00:00",
         "tool_calls": [{"name": HOSTILE, "args": {}, "id": "c1", "type": "tool_call"}]},
        {"role": "tool", "content": "x", "tool_call_id": "c1", "name": HOSTILE,
         "timestamp": "2026-03-01T10:00:02+00:00"},
    ])  # fmt: skip
    cm.add_assistant_message(
        HOSTILE, "a [1]", model=HOSTILE, response_time_ms=5,
        sources_used=["javascript:alert(1)"], metadata={"cited": [1]},
    )  # fmt: skip
    return cm


def test_html_escapes_everything_from_the_store() -> None:
    with _hostile_manager() as cm:
        report = analyze(cm)
        page = report.to_html()
    assert [m.model for m in report.models] == ["(unknown)", HOSTILE]  # 1 reply each: by name
    assert "<script" not in page.lower()
    assert "javascript:" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert page.count("<svg") >= 5
    assert page.startswith('<div class="ctxm-an">')
    assert page.endswith("</div>")
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no asset
    assert report._repr_html_() == page


def test_markdown_cannot_break_its_tables() -> None:
    with ContextManager(store=InMemoryStore(), token_counter="approximate") as cm:
        cm.add_user_message("s", "q", timestamp="2026-03-01T10:00:00+00:00")
        cm.add_assistant_message("s", "a", model="evil | model\n| injected | row |")
        text = analyze(cm).to_markdown()
    assert "| evil \\| model \\| injected \\| row \\| | 1 |" in text
    assert "\n| injected" not in text


def test_charts_escape_labels_and_scale_series_apart() -> None:
    svg = bar_chart([("<b>", [10, 1000]), ("x", [5, 10])], series=["n", "tokens"], title="<t>")
    assert "<b>" not in svg
    assert "&lt;b&gt;" in svg
    assert "&lt;t&gt;" in svg
    widths = [float(w) for w in re.findall(r'<rect[^>]*width="([\d.]+)"', svg)]
    assert widths[0] == widths[1]  # both series' largest bars are full length
    many = bar_chart([(f"m{i}", [i + 1]) for i in range(20)], series=["n"], title="t")
    assert "(9 more)" in many
    assert ">m10<" in many
    assert ">m11<" not in many
    line = line_chart(["2026-03-01", "2026-03-02"], {"a": [0, 4]}, title="t")
    assert line.count("<circle") == 2
    assert "2026-03-02" in line
    assert "nothing recorded" in line_chart([], {}, title="t")


# --------------------------------------------------------------------------- command line


def test_cli_json_matches_analyze(manager: ContextManager, data: list[Gen]) -> None:
    result = CliRunner().invoke(app, ["analytics", "--json"], obj=manager)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    del out["generated_at"]
    assert out == expected(data, scanned=len(data))


def test_cli_filters(manager: ContextManager, data: list[Gen]) -> None:
    args = ["analytics", "--json", "--mode", "thinking", "--since", "2026-03-03",
            "--until", "2026-03-08T00:00:00Z"]  # fmt: skip
    result = CliRunner().invoke(app, args, obj=manager)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    del out["generated_at"]
    assert out == expected(
        data, scanned=len(data), mode="thinking",
        since=DAY0 + timedelta(days=2), until=DAY0 + timedelta(days=7),
    )  # fmt: skip


def test_cli_tables_and_html_file(manager: ContextManager, data: list[Gen], tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["analytics", "--html", str(target)], obj=manager)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Analytics (all sessions)")
    assert f"| sessions matched | {len(data)} |" in result.stdout
    assert f"wrote {target}" in result.stderr
    page = target.read_text("utf-8")
    assert page.startswith("<!doctype html>")
    assert "<svg" in page
    assert "<script" not in page


def test_cli_escapes_terminal_control_characters() -> None:
    with ContextManager(store=InMemoryStore(), token_counter="approximate") as cm:
        cm.add_user_message("s", "q")
        cm.add_assistant_message("s", "a", model="red\x1b[31m")
        result = CliRunner().invoke(app, ["analytics"], obj=cm)
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_cli_refuses_a_bad_date(manager: ContextManager, option: str) -> None:
    result = CliRunner().invoke(app, ["analytics", option, "last tuesday"], obj=manager)
    assert result.exit_code == 2
    assert "not an ISO date" in result.stderr


def test_cli_reports_an_unwritable_html_file(manager: ContextManager, tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "r.html"
    result = CliRunner().invoke(app, ["analytics", "--html", str(target)], obj=manager)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot write")


def test_estimated_latency_needs_a_user_message_right_before() -> None:
    def message(role: str, second: int, **extra: Any) -> dict[str, Any]:
        return {
            "role": role,
            "content": "",
            "timestamp": f"2026-03-01T10:00:{second:02d}Z",
            **extra,
        }

    aggregator = Aggregator()
    aggregator.add({"metadata": {}, "conversation_history": [
        message("user", 0), message("assistant", 0),  # same instant: 0 ms
        message("user", 5), message("tool", 6), message("assistant", 9),  # not after a user
        message("user", 20), message("assistant", 19),  # clock skew: negative, passed over
        message("user", 30), message("assistant", 32, metadata={"response_time_ms": 7}),
    ]})  # fmt: skip
    report = aggregator.report()
    assert (report.latency_estimated_ms.count, report.latency_estimated_ms.max) == (1, 0.0)
    assert (report.latency_ms.count, report.latency_ms.p50) == (1, 7.0)
    assert report.turns == 4


@pytest.mark.parametrize("name", ["analyze", "percentiles", "bar_chart"])
def test_function_examples_run(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The ``Example:`` blocks of the module's functions (classes are run by another test)."""
    import ctx_memory.analytics as module

    monkeypatch.chdir(tmp_path)
    doc = getattr(module, name).__doc__
    code = textwrap.dedent(doc.split(".. code-block:: python\n", 1)[1])
    exec(compile(code, f"<{name} example>", "exec"), {"__name__": "__example__"})


def test_malformed_parts_of_a_document_are_passed_over() -> None:
    aggregator = Aggregator()
    aggregator.add({
        "metadata": {"mode": None, "system_prompt_tokens": "many"},
        "conversation_history": ["junk", None, {"role": "critic", "content": "?"},
                                 {"role": "user", "content": "q", "token_count": True}],
        "fetched_context": {"web": "not a list", "docs": ["not an item", {"url": 3}]},
    })  # fmt: skip
    report = aggregator.report()
    assert (report.sessions, report.turns, report.total_tokens) == (1, 1, 0)
    assert dict(report.modes) == {"(none)": 1}
    assert (report.sources.fetched_items, report.sources.fetched_urls) == (2, 0)
    assert aggregator.add({}) is False  # a session gone before it was read
    assert aggregator.report().sessions_scanned == 1


def test_an_unreadable_session_is_logged_and_counted(
    manager: ContextManager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    manager.add_user_message("bad", "hi")
    manager.add_user_message("good", "hi")
    real = manager.get_context

    def refuse_bad(session_id: str) -> dict[str, Any]:
        if session_id == "bad":
            raise ValidationError("session id 'bad' is not valid any more")
        return real(session_id)

    monkeypatch.setattr(manager, "get_context", refuse_bad)
    report = analyze(manager)
    assert (report.sessions_unreadable, report.sessions_scanned, report.sessions) == (1, 1, 1)
    assert report.as_dict()["sessions"]["unreadable"] == 1
    assert "session 'bad' unreadable" in caplog.text
