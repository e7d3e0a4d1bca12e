"""HTML views: escaping, links, folding, the budget bar, the assembly report, SessionView."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from travel import travel_session

from ctx_memory import (
    ContextManager,
    InMemoryStore,
    SessionView,
    render_assembly_html,
    render_session_html,
    show_session,
)
from ctx_memory.display import PREVIEW_CHARS, budget_segments

if TYPE_CHECKING:
    from collections.abc import Iterator


class _Checker(HTMLParser):
    """Collects tags, links and text; fails on unbalanced structural tags."""

    VOID = frozenset({"br", "hr", "img", "meta", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href") or "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"stray </{tag}>"
        assert self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1]}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(markup: str) -> _Checker:
    checker = _Checker()
    checker.feed(markup)
    checker.close()
    assert checker.stack == [], f"unclosed: {checker.stack}"
    return checker


@pytest.fixture
def cm() -> Iterator[ContextManager]:
    with ContextManager(store=InMemoryStore()) as manager:
        travel_session(manager)
        yield manager


def test_session_html_has_every_section(cm: ContextManager) -> None:
    document = cm.get_context("demo-session")
    markup = render_session_html(document, cm.get_memory_stats("demo-session"))
    checker = parse(markup)
    text = " ".join(checker.text)
    n_messages = len(document["conversation_history"])
    n_sources = sum(len(items) for items in document["fetched_context"].values())
    headings = ("Metadata", "System prompt", f"Sources ({n_sources})")
    for heading in (*headings, f"Conversation ({n_messages} messages)"):
        assert heading in text
    assert "https://travel.example/booking-guide" in checker.hrefs
    assert "Booking flights: a practical guide" in text
    assert "Travel Example" in text  # site name
    assert "2026-10-02" in text  # published date
    assert "scripted-demo-model" in text
    assert text.count("assistant") >= 2
    assert "store: memory" in text


def test_budget_bar_legend_matches_stats(cm: ContextManager) -> None:
    stats = cm.get_memory_stats("demo-session")
    markup = render_session_html(cm.get_context("demo-session"), stats)
    sources = sum(stats["fetched_tokens"].values())
    assert f"system <b>{stats['system_prompt_tokens']}</b>" in markup
    assert f"sources <b>{sources}</b>" in markup
    assert f"history <b>{stats['token_count']}</b>" in markup
    # without stats, the counts cached in the document give the same bar
    assert _legend(render_session_html(cm.get_context("demo-session"))) == _legend(markup)


def _legend(markup: str) -> list[str]:
    return re.findall(r"</i>([a-z ]+) <b>([\d,]+)</b>", markup)  # type: ignore[arg-type]


def test_budget_shows_reserve_and_left_out(cm: ContextManager) -> None:
    markup = render_session_html(cm.get_context("demo-session"), budget=150, reserve_tokens=30)
    labels = [label for label, _ in _legend(markup)]
    assert labels == ["system", "sources", "history", "reserve", "left out"]
    assert "(30 reserved for the reply)" in markup


def test_everything_is_escaped(cm: ContextManager) -> None:
    evil = '<script>alert("x")</script>'
    cm.add_user_message("evil", evil, metadata={"model": evil})
    cm.update_metadata("evil", current_url="javascript:alert(1)", note=evil)
    cm.set_system_prompt("evil", evil)
    cm.add_fetched_context(
        "evil", "web_search", evil, url="javascript:alert(2)", extracted_data={"title": evil}
    )
    cm.set_context("evil", evil, evil)
    markup = render_session_html(cm.get_context("evil"), cm.get_memory_stats("evil"))
    checker = parse(markup)
    assert "script" not in checker.tags
    assert "<script" not in markup
    assert all(h.startswith(("http://", "https://")) for h in checker.hrefs)
    assert "&lt;script&gt;" in markup


def test_long_content_is_folded(cm: ContextManager) -> None:
    cm.add_assistant_message("long", "word " * 1000)
    markup = render_session_html(cm.get_context("long"))
    parse(markup)
    assert "<details><summary>show all (5,000 characters)</summary>" in markup
    assert PREVIEW_CHARS < 5000


def test_max_messages_shows_newest(cm: ContextManager) -> None:
    for i in range(10):
        cm.add_user_message("many", f"message number {i}")
    markup = render_session_html(cm.get_context("many"), max_messages=3)
    assert "7 older messages not shown" in markup
    assert "message number 9" in markup
    assert "message number 6" not in markup


def test_content_blocks_and_tool_calls(cm: ContextManager) -> None:
    cm.add_messages(
        "blocks",
        [
            HumanMessage(content=[{"type": "text", "text": "look at this"}, {"type": "image"}]),
            AIMessage(
                content="", tool_calls=[{"name": "search", "args": {"q": "paris"}, "id": "c1"}]
            ),
        ],
    )
    markup = render_session_html(cm.get_context("blocks"))
    parse(markup)
    assert "look at this" in markup
    assert "[image]" in markup
    assert "<code>search</code>" in markup


@pytest.mark.parametrize(
    ("meta", "chips", "shown"),
    [
        ({"tools_used": 7}, ["tool: 7"], []),
        ({"tools_used": "web_search"}, ["tool: web_search"], []),
        ({"sources_used": 5}, [], ["5"]),
        ({"sources_used": "https://a.example/x"}, [], ['href="https://a.example/x"']),
        ({"sources_used": [{"url": "https://b.example/", "title": "B"}]}, [],
         ['href="https://b.example/"', ">B</a>"]),
    ],
)  # fmt: skip
def test_free_form_tools_and_sources_metadata_renders(
    meta: dict[str, object], chips: list[str], shown: list[str]
) -> None:
    """Metadata is free-form: one value is one chip or source, never iterated or a crash."""
    cm = ContextManager()
    cm.add_assistant_message("free", "ok", metadata=meta)
    markup = render_session_html(cm.get_context("free"))
    parse(markup)
    assert re.findall(r'class="chip">(tool: [^<]*)<', markup) == chips
    for text in shown:
        assert text in markup


def test_session_document_model_renders_like_the_dict(cm: ContextManager) -> None:
    from ctx_memory.schema import parse_document

    document = cm.get_context("demo-session")
    assert render_session_html(parse_document(document)) == render_session_html(document)


def test_missing_session_renders_a_note() -> None:
    assert "No such session" in render_session_html({})


def test_budget_segments_arithmetic() -> None:
    assert budget_segments({"system": 5, "history": 10}) == budget_segments(
        {"system": 5, "history": 10}, budget=None
    )
    fits = budget_segments({"system": 10, "history": 20}, budget=100, reserve_tokens=10)
    assert [(s.label, s.tokens) for s in fits] == [
        ("system", 10),
        ("history", 20),
        ("free", 60),
        ("reserve", 10),
    ]
    over = budget_segments({"system": 50, "sources": 50, "history": 50}, budget=100)
    assert [(s.label, s.tokens) for s in over] == [
        ("system", 50),
        ("sources", 50),
        ("left out", 50),
    ]
    assert sum(s.tokens for s in over if s.label != "left out") == 100


def test_assembly_html_from_the_real_assembler(cm: ContextManager) -> None:
    from ctx_memory.prompt import ContextPromptAssembler

    for i in range(40):
        cm.add_user_message("demo-session", f"older question {i} " * 20)
        cm.add_assistant_message("demo-session", f"older answer {i} " * 20)
    assembler = ContextPromptAssembler(cm, max_tokens=1200, reserve_tokens=300)
    result = assembler.assemble("demo-session", "When should I book? <b>")
    report = result.report
    assert report.history_left_out_messages > 0

    markup = render_assembly_html(result)
    checker = parse(markup)
    text = " ".join(checker.text)
    assert f"Assembled prompt: {report.total_tokens:,} tokens of 900 allowed" in text
    legend = dict(_legend(markup))
    assert legend["system"] == f"{report.system_tokens + report.priming_tokens:,}"
    assert legend["sources"] == f"{report.sources_tokens:,}"
    assert legend["history"] == f"{report.history_tokens:,}"
    assert legend["question"] == f"{report.question_tokens:,}"
    assert legend["reserve"] == "300"
    assert legend["left out"] == f"{report.history_left_out_tokens:,}"
    assert "history messages left out" in text
    assert f"Messages ({len(result.messages)})" in text
    assert "When should I book? &lt;b&gt;" in markup
    assert set(report.source_urls) <= set(checker.hrefs)
    # the report alone, its dict, and the objects' own _repr_html_ render the same numbers
    assert _legend(render_assembly_html(report)) == _legend(markup)
    assert _legend(render_assembly_html(report.as_dict())) == _legend(markup)
    assert result._repr_html_() == markup
    assert report._repr_html_() == render_assembly_html(report)


def test_assembly_html_duck_typed_mapping() -> None:
    markup = render_assembly_html(
        {"system_tokens": 10, "question_tokens": 5, "total_tokens": 18, "max_tokens": 100}
    )
    parse(markup)
    assert dict(_legend(markup)) == {"system": "13", "question": "5", "free": "82"}


def test_session_view_renders_fresh_each_time(cm: ContextManager) -> None:
    view = show_session(cm, "demo-session", budget=8000, reserve_tokens=1000)
    assert isinstance(view, SessionView)
    before = view._repr_html_()
    cm.add_user_message("demo-session", "one more question")
    after = view._repr_html_()
    assert "one more question" not in before
    assert "one more question" in after


def test_session_view_repr_is_short_and_hides_secrets() -> None:
    secret_url = "redis://user:hunter2@redis.example:6379/0"
    with ContextManager(store=InMemoryStore(), redis_url=secret_url) as cm:
        cm.add_user_message("s" * 200, "private content " * 100)
        text = repr(SessionView(cm, "s" * 200))
        assert "hunter2" not in text
        assert "private" not in text
        assert len(text) < 120
        assert text.endswith(": 1 messages, 0 sources>")
        assert (
            repr(SessionView(cm, "missing")) == "<SessionView 'missing' on memory: no such session>"
        )


def test_session_view_reads_only_the_newest_messages(cm: ContextManager) -> None:
    for i in range(120):
        cm.add_user_message("long-chat", f"message number {i}")
    view = SessionView(cm, "long-chat", max_messages=5)
    document = view.document()
    assert len(document["conversation_history"]) == 5
    markup = view._repr_html_()
    assert "Conversation (120 messages)" in markup
    assert "115 older messages not shown" in markup
    assert '<span class="muted">#116</span>' in markup
    assert "message number 119" in markup
    assert "message number 114" not in markup
    # the same as rendering the whole document
    assert markup == render_session_html(
        cm.get_context("long-chat"), cm.get_memory_stats("long-chat"), max_messages=5
    )
