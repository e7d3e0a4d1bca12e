"""The system message: the session header and the numbered sources, cut to a budget.

Pure functions that touch no store. :func:`format_header` writes the short header (mode,
current URL, the user's local time); :func:`plan_sources` chooses, most relevant first,
the sources that fit the system message's allowance, each cut to a per-source token cap,
and counts the finished message exactly once; :func:`format_sources` writes the numbered
block the model cites as ``[n]``. Ranking itself lives in :mod:`ctx_memory.ranking`.

**Pinned sources** are sent whatever the question: a fetched item whose
``extracted_data`` has ``"pinned": true`` (:func:`is_pinned`), or every item of the
source types an assembler pins (``pinned_source_types``). :func:`plan_pinned` takes
them oldest first (:func:`split_pinned`), never re-ranked, each cut to the per-source
cap, while they fit; they go in the system message right after the system prompt and
header, under :data:`PINNED_HEADING`, numbered ``[1]`` to ``[p]``; the sources ranked
for the question follow, numbered on from ``[p + 1]``. A plan's pairs are a
:class:`ChosenSources`, pinned ones first: :func:`format_pinned` writes their pinned
block and :func:`format_sources` their ranked block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any, Literal

from ctx_memory.ranking import instant, item_key, item_title
from ctx_memory.schema import time_zone

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, MutableMapping, Sequence
    from datetime import datetime

    from ctx_memory.tokens import TokenCounter

__all__ = [
    "PINNED_HEADING",
    "SOURCES_HEADING",
    "ChosenSources",
    "SourcePlan",
    "format_header",
    "format_pinned",
    "format_sources",
    "head_text",
    "is_pinned",
    "plan_pinned",
    "plan_sources",
    "sources_block",
    "split_pinned",
    "system_text",
]

SOURCES_HEADING = "Sources (most relevant first; cite as [n]):"
"""The line that opens the numbered sources block."""

PINNED_HEADING = "Pinned sources (always provided; cite as [n]):"
"""The line that opens the pinned sources block (before the ranked one)."""

Pair = tuple[Mapping[str, Any], str]


class ChosenSources(tuple[Pair, ...]):
    """``(item, content)`` pairs in prompt order, the first :attr:`pinned` of them pinned.

    A tuple (equal to the plain tuple of its pairs); :func:`format_pinned` writes the
    pinned ones, :func:`format_sources` the others, numbered on after the pinned ones.
    """

    pinned: int

    def __new__(cls, pairs: Iterable[Pair] = (), pinned: int = 0) -> ChosenSources:
        """The pairs, of which the first ``pinned`` are pinned."""
        self = super().__new__(cls, pairs)
        self.pinned = min(max(pinned, 0), len(self))
        return self


def is_pinned(item: Mapping[str, Any], pinned_types: Collection[str] = ()) -> bool:
    """Whether a fetched item is pinned: ``"pinned": true`` in its data, or a pinned type.

    Pinned: its ``extracted_data`` has ``"pinned"`` set to ``True`` (exactly), or its
    ``source_type`` is in ``pinned_types``.

    Example:
        .. code-block:: python

            from ctx_memory.assembly.sources import is_pinned

            assert is_pinned({"source_type": "docs", "extracted_data": {"pinned": True}})
            assert is_pinned({"source_type": "docs"}, pinned_types=("docs",))
            assert not is_pinned({"source_type": "web_search", "extracted_data": {}})
    """
    data = item.get("extracted_data")
    if isinstance(data, Mapping) and data.get("pinned") is True:
        return True
    return item.get("source_type") in pinned_types


def split_pinned(
    items: Sequence[Mapping[str, Any]], pinned_types: Collection[str] = ()
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """``(pinned, others)``: the pinned items oldest first, the others as given.

    Pinned items are ordered by the instant their ``timestamp`` names (ISO 8601 with its
    offset applied, naive read as UTC; :func:`~ctx_memory.ranking.instant`), not by its
    text, so ``18:00+09:00`` comes before ``10:00+00:00``. Ties keep the order given
    (stored order within a source type); a missing or unreadable timestamp counts as the
    oldest, as in ranking. The order does not depend on the question, and a newly
    pinned item goes last.
    """
    pinned: list[Mapping[str, Any]] = []
    others: list[Mapping[str, Any]] = []
    for item in items:
        (pinned if is_pinned(item, pinned_types) else others).append(item)
    pinned.sort(key=lambda item: instant(item.get("timestamp")))
    return pinned, others


def format_header(
    metadata: Mapping[str, Any] | None,
    *,
    now: datetime | None = None,
    part: Literal["all", "stable", "volatile"] = "all",
) -> str:
    """The short session header: mode, current URL and the user's local time.

    Only what is known is shown; the default ``normal`` mode is not. The user's local
    time is ``metadata.user_time`` (with ``user_timezone`` in brackets); without it, but
    with a timezone, it is ``now`` converted to that zone (a naive ``now`` is UTC, as
    everywhere in ctx_memory, whatever the host's zone). ``part="stable"`` gives the
    mode line alone (what rarely changes), ``part="volatile"`` the current page and
    local time (what changes from request to request; the stable layout sends them last).
    """
    meta = metadata or {}
    lines: list[str] = []
    mode = meta.get("mode")
    if mode and str(mode) != "normal" and part != "volatile":
        lines.append(f"Mode: {mode}")
    if part == "stable":
        return "\n".join(lines)
    if meta.get("current_url"):
        lines.append(f"Current page: {meta['current_url']}")
    zone = meta.get("user_timezone")
    local = meta.get("user_time")
    if not local and zone and now is not None:
        local = _now_in(zone, now)
    if local:
        lines.append(f"User's local time: {local}" + (f" ({zone})" if zone else ""))
    return "\n".join(lines)


def _now_in(zone: str, now: datetime) -> str | None:
    found = time_zone(zone)  # a zone stored before it was checked, or imported: skipped
    if found is None:
        return None
    if now.tzinfo is None:  # naive is UTC, not the host's zone (astimezone's reading)
        now = now.replace(tzinfo=UTC)
    return now.astimezone(found).strftime("%Y-%m-%d %H:%M")


def _source_heading(number: int, item: Mapping[str, Any]) -> str:
    data = item.get("extracted_data") or {}
    line = f"[{number}] {item_title(item)}"
    if item.get("url") and item.get("url") != item_title(item):
        line += f" - {item['url']}"
    extras = [str(data[k]) for k in ("site_name", "published_date") if data.get(k)]
    if extras:
        line += f" ({', '.join(extras)})"
    return line


def _pinned_count(sources: Sequence[Pair]) -> int:
    return int(getattr(sources, "pinned", 0))


def _block(heading: str, pairs: Sequence[Pair], first: int) -> str:
    if not pairs:
        return ""
    parts = [heading]
    parts.extend(
        f"{_source_heading(n, item)}\n{content}" for n, (item, content) in enumerate(pairs, first)
    )
    return "\n\n".join(parts)


def format_sources(sources: Sequence[tuple[Mapping[str, Any], str]]) -> str:
    """The numbered sources block for ``(item, content)`` pairs, or ``""`` for none.

    For a :class:`ChosenSources` with pinned sources: its ranked sources only, numbered
    on after the pinned ones (:func:`format_pinned` writes those).
    """
    pinned = _pinned_count(sources)
    return _block(SOURCES_HEADING, sources[pinned:], pinned + 1)


def format_pinned(sources: Sequence[tuple[Mapping[str, Any], str]]) -> str:
    """The pinned sources block of a :class:`ChosenSources` (numbered from 1), or ``""``."""
    pinned = _pinned_count(sources)
    return _block(PINNED_HEADING, sources[:pinned], 1)


def sources_block(sources: Sequence[tuple[Mapping[str, Any], str]]) -> str:
    """All the numbered sources: the pinned block, then the ranked block (``""`` for none)."""
    return "\n\n".join(p for p in (format_pinned(sources), format_sources(sources)) if p)


def system_text(head: str, sources_block: str) -> str:
    """The system message text: system prompt and header, then the sources block."""
    return "\n\n".join(part for part in (head, sources_block) if part)


def head_text(system_prompt: str | None, header: str) -> str:
    """The system prompt followed by the session header."""
    return "\n\n".join(part for part in (system_prompt or "", header) if part)


@dataclass(frozen=True)
class SourcePlan:
    """The sources chosen for a prompt.

    Attributes:
        chosen: ``(item, content)`` pairs in prompt order, pinned ones first (a
            :class:`ChosenSources` when any are pinned); content cut to the cap.
        truncated: How many of ``chosen`` were cut to the per-source cap.
        dropped: How many sources were left out (over ``max_sources`` or budget),
            pinned ones included.
        system_tokens: Exact tokens of the system message holding ``chosen``
            (0 when there is no system message at all).
        text: The system message text.
        pinned_dropped: Of ``dropped``, how many were pinned.
    """

    chosen: tuple[tuple[Mapping[str, Any], str], ...]
    truncated: int
    dropped: int
    system_tokens: int
    text: str
    pinned_dropped: int = 0

    @property
    def pinned(self) -> int:
        """How many of :attr:`chosen` (the first ones) are pinned."""
        return _pinned_count(self.chosen)


def plan_pinned(
    head: str,
    pinned: Sequence[Mapping[str, Any]],
    *,
    counter: TokenCounter,
    allowance: int,
    per_source_tokens: int,
    max_sources: int | None,
    cache: MutableMapping[tuple[Any, ...], str] | None = None,
) -> SourcePlan:
    """The pinned sources, in the order given, that fit the system message's ``allowance``.

    ``allowance`` bounds the whole system message (``head`` and the pinned block, as in
    :func:`plan_sources`). Each item is cut to ``per_source_tokens``; items are taken in
    order while their estimated cost fits (at most ``max_sources``), the finished
    message is counted exactly once and the newest goes until it fits, so what is kept
    is the oldest that fit and depends only on the items, ``head`` and ``allowance``.
    The rest are counted in ``dropped`` and ``pinned_dropped``. Feed the result to
    :func:`plan_sources` as ``pinned=`` for the ranked sources that follow.
    """
    base_tokens = counter.count_message("system", head) if head else 0
    chosen: list[tuple[Mapping[str, Any], str, int]] = []
    limit = len(pinned) if max_sources is None else min(max(max_sources, 0), len(pinned))
    estimate = (base_tokens or counter.count_message("system", "")) + counter.count(
        "\n\n" + PINNED_HEADING
    )
    for item in pinned[:limit]:
        content, cut = _cut(item, counter, per_source_tokens, cache)
        if not content.strip():
            continue
        cost = counter.count(_source_heading(len(chosen) + 1, item)) + 3  # + separators
        cost += min(int(item.get("token_count") or counter.count(content)), per_source_tokens)
        if estimate + cost > allowance:
            break  # the oldest that fit: a newer item never displaces an older one
        estimate += cost
        chosen.append((item, content, cut))
    while True:
        pairs = ChosenSources(((item, content) for item, content, _ in chosen), len(chosen))
        text = system_text(head, format_pinned(pairs))
        tokens = counter.count_message("system", text) if text else 0
        if tokens <= allowance or not chosen:
            break
        chosen.pop()  # the newest pinned source goes first
    left_out = len(pinned) - len(chosen)
    truncated = sum(cut for _, _, cut in chosen)
    return SourcePlan(pairs, truncated, left_out, tokens, text, left_out)


def plan_sources(
    head: str,
    ranked: Sequence[Mapping[str, Any]],
    *,
    counter: TokenCounter,
    allowance: int,
    per_source_tokens: int,
    max_sources: int | None,
    cache: MutableMapping[tuple[Any, ...], str] | None = None,
    pinned: SourcePlan | None = None,
) -> SourcePlan:
    """Choose sources, most relevant first, so the system message fits ``allowance``.

    ``allowance`` bounds the whole system message (overhead, system prompt, header and
    sources). Each source is cut to ``per_source_tokens``. Sources are added while their
    estimated cost fits; the finished system message is then counted exactly once and
    the least relevant source is dropped until it fits. An empty ``head`` and no sources
    give no system message (0 tokens).

    With ``pinned`` (a :func:`plan_pinned` result for the same ``head``), the pinned
    sources stay first, whatever ``allowance`` (they were chosen within their own), and
    the ranked ones (which must not include them) follow in what ``allowance`` leaves,
    numbered on, at most ``max_sources`` in all.
    """
    first = pinned.chosen if pinned is not None else ()
    count = len(first)
    if pinned is not None and count:
        base_tokens = pinned.system_tokens
    else:
        base_tokens = counter.count_message("system", head) if head else 0
    chosen: list[tuple[Mapping[str, Any], str, int]] = []
    room = len(ranked) if max_sources is None else max(min(max_sources - count, len(ranked)), 0)
    estimate = (base_tokens or counter.count_message("system", "")) + counter.count(
        "\n\n" + SOURCES_HEADING
    )
    for item in ranked[:room]:
        content, cut = _cut(item, counter, per_source_tokens, cache)
        if not content.strip():
            continue
        cost = counter.count(_source_heading(count + len(chosen) + 1, item)) + 3
        cost += min(int(item.get("token_count") or counter.count(content)), per_source_tokens)
        if estimate + cost > allowance:
            break
        estimate += cost
        chosen.append((item, content, cut))
    while True:
        pairs = ChosenSources([*first, *((item, content) for item, content, _ in chosen)], count)
        if pinned is not None and count and not chosen:
            text, tokens = pinned.text, pinned.system_tokens  # counted by plan_pinned
            break
        text = system_text(head, sources_block(pairs))
        tokens = counter.count_message("system", text) if text else 0
        if tokens <= allowance or not chosen:
            break
        chosen.pop()  # the least relevant source goes first
    truncated = sum(cut for _, _, cut in chosen)
    dropped = len(ranked) - len(chosen)
    if pinned is None:
        return SourcePlan(tuple(pairs), truncated, dropped, tokens, text)
    return SourcePlan(
        pairs,
        truncated + pinned.truncated,
        dropped + pinned.dropped,
        tokens,
        text,
        pinned.pinned_dropped,
    )


def _cut(
    item: Mapping[str, Any],
    counter: TokenCounter,
    cap: int,
    cache: MutableMapping[tuple[Any, ...], str] | None,
) -> tuple[str, int]:
    content = (item.get("content") or "").strip()
    tokens = item.get("token_count")
    if tokens is not None and int(tokens) <= cap:
        return content, 0
    key = (*item_key(item), cap)
    cut = cache.get(key) if cache is not None else None
    if cut is None:
        # A token is rarely longer than 12 characters: encoding a prefix is enough, and
        # a shorter cut is still within the cap.
        cut = counter.truncate(content[: cap * 12], cap).rstrip()
        if cache is not None:
            cache[key] = cut
    return cut, int(cut != content)
