"""The ``recall`` tool's LangChain side (see :func:`ctx_memory.recall.make_recall_tool`).

Apart from :mod:`ctx_memory.recall` because the tool's functions take a ``ToolRuntime``
that LangChain injects by its annotation: the annotation must be a real class at run
time (no ``from __future__ import annotations`` here), and ``langchain`` is imported
only when a tool is made.

The answer has two clearly labelled sections: the older turns of the conversation
(:data:`HEADING`, found in the session's :class:`~ctx_memory.recall.RecallIndex`), then
the fetched sources that match (:data:`SOURCES_HEADING`, ranked by
:func:`~ctx_memory.ranking.rank_sources` with the recall index's terms; each shown with
its source type, title and URL, and the passage around the query's terms cut to a
token cap: :func:`source_section`). The two kinds of score are not comparable, so they
are not ranked together.
"""

import re
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from ctx_memory._extras import missing_extra

try:
    from langchain.tools import ToolRuntime
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("agents", "ctx_memory.recall.make_recall_tool", e) from e

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool

from ctx_memory.errors import ValidationError
from ctx_memory.prompt import session_id_from
from ctx_memory.ranking import item_title, rank_sources
from ctx_memory.recall import format_turns, recall_terms, tool_ranges

if TYPE_CHECKING:
    from collections import Counter

    from ctx_memory.manager import ContextManager
    from ctx_memory.recall import Recall, RecallIndex
    from ctx_memory.tokens import TokenCounter

__all__ = ["build_recall_tool", "source_excerpt", "source_section"]

HEADING = "Earlier turns of this conversation (positions in the history):"
SOURCES_HEADING = "Fetched sources matching the query (most relevant first):"
DESCRIPTION = (
    "Look up older turns of this conversation that are no longer in view. Pass `query`: "
    "the words to look for (names, numbers, topics). Returns the matching turns with their "
    "positions in the conversation."
)
DESCRIPTION_WITH_SOURCES = (
    "Look up older turns of this conversation that are no longer in view, and the "
    "documents and pages fetched during it. Pass `query`: the words to look for (names, "
    "numbers, topics). Returns the matching turns with their positions in the "
    "conversation, then excerpts of the matching fetched sources (type, title, URL)."
)

# Where a passage may end: after a sentence's end and its spaces, after an ideographic
# full stop (no space follows in Chinese or Japanese), at a line break.
_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[\u3002\uff01\uff1f])\s*|\n\s*")
_ELLIPSIS = "…"
_TERM_CACHE_LIMIT = 4096


def runtime_session(
    runtime: Any,
    default: str | None,
    config: "RunnableConfig | None" = None,
    *,
    owner: str = "the recall tool",
) -> str:
    """The session id as ContextMiddleware finds it: context, configurable, thread, default.

    From the agent's ``runtime``; a tool invoked by hand (no runtime) takes the ``config``
    it was invoked with (LangChain passes it to a tool function that names it).
    """
    context = getattr(runtime, "context", None)
    if isinstance(context, Mapping) and context.get("session_id"):
        return str(context["session_id"])
    if context is not None and getattr(context, "session_id", None):
        return str(context.session_id)
    found = cast("RunnableConfig", getattr(runtime, "config", None) or config or {})
    configurable = found.get("configurable") or {}
    fallback = configurable.get("thread_id") or default
    return session_id_from(found, fallback, owner=owner)


def turn_in_progress(index: "RecallIndex", runtime: Any) -> int | None:
    """Where the agent's turn in progress starts in the history, if it is stored.

    The newest stored user message, when the agent's state holds it (``ContextMiddleware``
    stores the run before its tools run): that turn is in view, and its question (and the
    call to the tool itself) would match the query. ``None`` otherwise.
    """
    users = index.user_positions
    state = getattr(runtime, "state", None)
    messages = state.get("messages") if isinstance(state, Mapping) else None
    if not users or not messages:
        return None
    ids = {str(m.id) for m in messages if getattr(m, "id", None) is not None}
    return users[-1] if index.ids[users[-1]] in ids else None


# ------------------------------------------------------------------ fetched sources


def _passages(text: str) -> list[tuple[int, int]]:
    """``(start, stop)`` character spans of the sentences and lines of ``text``."""
    spans: list[tuple[int, int]] = []
    position = 0
    for match in _BREAK.finditer(text):
        if match.start() > position:
            spans.append((position, match.start()))
        position = max(position, match.end())
    if position < len(text):
        spans.append((position, len(text)))
    return spans


def source_excerpt(
    content: str,
    terms: Sequence[str],
    *,
    counter: "TokenCounter",
    cap: int,
    split: Callable[[str], list[str]] = recall_terms,
    tokens: int | None = None,
) -> str:
    """The passage of ``content`` around ``terms``, at most ``cap`` tokens.

    The whole text when it fits (``tokens``: its cached count). Else the sentence (or
    line) holding the most distinct query terms (the first such), grown by its
    neighbours, the following one first, while it fits; ``…`` marks text left out
    before or after, and a sentence longer than the cap is cut. Counted exactly with
    ``counter``.

    Example:
        .. code-block:: python

            from ctx_memory import TokenCounter
            from ctx_memory._recall_tool import source_excerpt

            text = "Intro. " * 50 + "The gate code is 7788. " + "Outro. " * 50
            excerpt = source_excerpt(text, ["gate", "code"], counter=TokenCounter(), cap=20)
            assert "The gate code is 7788." in excerpt and excerpt.startswith("…")
            assert TokenCounter().count(excerpt) <= 20
    """
    text = content.strip()
    if cap <= 0 or not text:
        return ""
    if (tokens if tokens is not None else counter.count(text)) <= cap:
        return text
    spans = _passages(text)
    wanted = set(terms)
    scores = [len(wanted.intersection(split(text[a:b]))) for a, b in spans]
    best = max(range(len(spans)), key=lambda i: (scores[i], -i))

    def render(first: int, last: int) -> str:
        before = _ELLIPSIS + " " if spans[first][0] > 0 else ""
        after = " " + _ELLIPSIS if spans[last][1] < len(text) else ""
        return before + text[spans[first][0] : spans[last][1]] + after

    first = last = best
    excerpt = render(first, last)
    if counter.count(excerpt) > cap:  # one sentence over the cap: cut it
        room = max(cap - counter.count(_ELLIPSIS + " " + _ELLIPSIS + " "), 0)
        body = counter.truncate(text[spans[best][0] : spans[best][1]], room).rstrip()
        cut = (_ELLIPSIS + " " if spans[best][0] > 0 else "") + body + " " + _ELLIPSIS
        return cut if body and counter.count(cut) <= cap else ""
    grow_after, grow_before = True, True
    while grow_after or grow_before:
        if grow_after:
            grow_after = last + 1 < len(spans) and counter.count(render(first, last + 1)) <= cap
            if grow_after:
                last += 1
        if grow_before:
            grow_before = first > 0 and counter.count(render(first - 1, last)) <= cap
            if grow_before:
                first -= 1
    return render(first, last)


def _entry(item: Mapping[str, Any], excerpt: str) -> str:
    title = item_title(item)
    line = f"[{item.get('source_type') or 'source'}] {title}"
    if item.get("url") and item.get("url") != title:
        line += f" - {item['url']}"
    return f"{line}\n{excerpt}"


def source_section(
    fetched: Mapping[str, Sequence[Mapping[str, Any]]],
    query: str,
    *,
    counter: "TokenCounter",
    k: int,
    cap: int,
    budget: int,
    split: Callable[[str], list[str]] = recall_terms,
    source_types: Sequence[str] | None = None,
    cache: "MutableMapping[tuple[Any, ...], tuple[Counter[str], int]] | None" = None,
) -> tuple[str, int]:
    """The fetched sources matching ``query``, as the tool's labelled section.

    ``(text, tokens)``: up to ``k`` items of ``fetched`` (of ``source_types`` only, when
    given) that share a term with ``query``, most relevant first (BM25 of
    :func:`~ctx_memory.ranking.rank_sources`, terms by ``split``), each with its source
    type, title and URL and its :func:`source_excerpt` of at most ``cap`` tokens; the
    whole section (heading included) counted exactly, at most ``budget`` tokens (the
    least relevant go first). ``("", 0)`` when nothing matches or fits.
    """
    items = [
        item
        for source_type, entries in fetched.items()
        if source_types is None or source_type in source_types
        for item in entries
    ]
    if not items or k <= 0 or budget <= 0:
        return "", 0
    scored = rank_sources(query, items, cache=cache, tokenizer=split)
    terms = split(query)
    entries: list[str] = []
    text, tokens = "", 0
    for score, item in scored:
        if score <= 0 or len(entries) >= k:
            break
        count = item.get("token_count")
        excerpt = source_excerpt(
            str(item.get("content") or ""),
            terms,
            counter=counter,
            cap=cap,
            split=split,
            tokens=int(count) if count is not None else None,
        )
        if not excerpt:
            continue
        candidate = "\n\n".join([SOURCES_HEADING, *entries, _entry(item, excerpt)])
        cost = counter.count(candidate)
        if cost > budget:
            continue  # a shorter, less relevant one may still fit
        entries.append(_entry(item, excerpt))
        text, tokens = candidate, cost
    return text, tokens


# ------------------------------------------------------------------ the tool


def _answer(
    query: str,
    parts: list[tuple[int, list[dict[str, Any]]]],
    sources: str,
    *,
    with_sources: bool,
    too_large: int | None = None,
    brief: bool = False,
) -> str:
    """The tool's answer; ``too_large``: turns match but none fits this many tokens.

    ``brief``: the few words of an answer with nothing to show, without the query (when
    quoting it would not fit ``max_tokens``).
    """
    sections = [format_turns(parts, heading=HEADING)] if parts else []
    if sources:
        sections.append(sources)
    if sections:
        return "\n\n".join(sections)
    if brief:
        return f"Matches, none within {too_large} tokens." if too_large else "No match."
    if too_large is not None:
        return (
            f"Earlier turns match {query!r}, but none fits this tool's answer "
            f"({too_large} tokens): ask about something more specific."
        )
    if with_sources:
        return f"Nothing earlier in this conversation or its fetched sources matches {query!r}."
    return f"Nothing earlier in this conversation matches {query!r}."


def _by_rank(
    found: Sequence[tuple[int, int]], reads: Sequence[list[dict[str, Any]]]
) -> list[list[dict[str, Any]]]:
    """``reads`` (of ``found`` sorted by position) back in the order of ``found``."""
    by_start = dict(zip(sorted(a for a, _ in found), reads, strict=True))
    return [by_start[a] for a, _ in found]


MIN_MAX_TOKENS = 16
"""The least ``max_tokens`` of the tool: its shortest answers ("Matches, none within N
tokens.") fit it."""


def _check_options(*, k: int, max_tokens: int, source_k: int, cap: int) -> None:
    """Refuse options the tool could not keep (``ValidationError`` naming the option)."""
    least = {"k": 1, "max_tokens": MIN_MAX_TOKENS, "source_k": 0, "source_token_cap": 1}
    given = {"k": k, "max_tokens": max_tokens, "source_k": source_k, "source_token_cap": cap}
    for option, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < least[option]:
            msg = f"make_recall_tool: {option} must be an int >= {least[option]}, got {value!r}"
            raise ValidationError(msg)


def build_recall_tool(
    manager: "ContextManager",
    recall: "Recall",
    session_id: str | None,
    *,
    k: int,
    max_tokens: int,
    name: str,
    sources: bool = True,
    source_k: int = 3,
    source_token_cap: int = 300,
    source_types: Sequence[str] | None = None,
) -> BaseTool:
    """The tool (see :func:`ctx_memory.recall.make_recall_tool`).

    The budget: the sources section takes at most half of ``max_tokens`` (counted
    exactly), the turns (cached token counts) the rest; what the turns do not use goes
    to the sources.
    """
    _check_options(k=k, max_tokens=max_tokens, source_k=source_k, cap=source_token_cap)
    counter = manager.token_counter
    split = recall.tokenizer or recall_terms
    term_cache: dict[tuple[Any, ...], tuple[Counter[str], int]] = {}
    wanted_types = tuple(source_types) if source_types is not None else None

    def section(fetched: Mapping[str, Sequence[Mapping[str, Any]]], query: str, budget: int) -> str:
        if len(term_cache) > _TERM_CACHE_LIMIT:
            term_cache.clear()
        text, _ = source_section(
            fetched, query, counter=counter, k=source_k, cap=source_token_cap, budget=budget,
            split=split, source_types=wanted_types, cache=term_cache,
        )  # fmt: skip
        return text

    def plan(
        index: "RecallIndex",
        fetched: Mapping[str, Sequence[Mapping[str, Any]]],
        query: str,
        vector: Sequence[float] | None,
        before: int | None,
    ) -> tuple[list[tuple[int, int]], str]:
        half = max_tokens // 2
        first = section(fetched, query, half) if fetched else ""
        spent = counter.count(first) if first else 0
        found = tool_ranges(
            index, query, k, max_tokens - spent, query_vector=vector, best_first=True,
            before=before,
        )  # fmt: skip
        used = sum(index.cost(a, b) for a, b in found)
        if first and used < half:  # the turns left room: the sources may take it
            first = section(fetched, query, max_tokens - used)
        return found, first

    def fit(
        query: str,
        found: list[tuple[int, int]],
        reads: Sequence[Sequence[dict[str, Any]]],
        text: str,
        matched: bool,
    ) -> str:
        """The answer, counted exactly: the weakest turns go until it fits ``max_tokens``.

        Turns were chosen by their cached counts; the labels, heading and gap lines
        come on top. ``matched``: some turn matches the query (fitting or not).
        """
        parts = [(a, list(records)) for (a, _), records in zip(found, reads, strict=True)]
        while True:
            big = max_tokens if matched else None
            answer = _answer(query, sorted(parts), text, with_sources=sources, too_large=big)
            excess = counter.count(answer) - max_tokens
            if excess <= 0:
                return answer
            if not parts:  # a long query quoted: said without it
                return _answer("", [], text, with_sources=sources, too_large=big, brief=True)
            freed = 0
            while parts and freed < excess:  # the weakest first, enough to cover the excess
                _, records = parts.pop()
                freed += max(sum(int(r.get("token_count") or 0) for r in records), 1)

    def recall_turns(
        query: str,
        runtime: ToolRuntime[Any, Any] = None,  # type: ignore[assignment]
        config: RunnableConfig = None,  # type: ignore[assignment]
    ) -> str:
        sid = runtime_session(runtime, session_id, config, owner=f"the {name} tool")
        index = recall.index(manager, sid, manager.get_header(sid))
        fetched = manager.get_fetched_context(sid) if sources else {}
        before = turn_in_progress(index, runtime)
        found, text = plan(index, fetched, query, recall.embed_query(query, index), before)
        reads = manager.get_message_spans(sid, sorted((a, b - 1) for a, b in found))
        matched = bool(found) or bool(index.search(query, 1, before=before))
        return fit(query, found, _by_rank(found, reads), text, matched)

    async def arecall_turns(
        query: str,
        runtime: ToolRuntime[Any, Any] = None,  # type: ignore[assignment]
        config: RunnableConfig = None,  # type: ignore[assignment]
    ) -> str:
        sid = runtime_session(runtime, session_id, config, owner=f"the {name} tool")
        index = await recall.aindex(manager, sid, await manager.aget_header(sid))
        fetched = await manager.aget_fetched_context(sid) if sources else {}
        before = turn_in_progress(index, runtime)
        vector = await recall.aembed_query(query, index)
        found, text = plan(index, fetched, query, vector, before)
        reads = await manager.aget_message_spans(sid, sorted((a, b - 1) for a, b in found))
        matched = bool(found) or bool(index.search(query, 1, before=before))
        return fit(query, found, _by_rank(found, reads), text, matched)

    return StructuredTool.from_function(
        func=recall_turns,
        coroutine=arecall_turns,
        name=name,
        description=DESCRIPTION_WITH_SOURCES if sources else DESCRIPTION,
    )
