"""The system message: the session header and the numbered sources, cut to a budget.

Pure functions that touch no store. :func:`format_header` writes the short header (mode,
current URL, the user's local time); :func:`plan_sources` chooses, most relevant first,
the sources that fit the system message's allowance, each cut to a per-source token cap,
and counts the finished message exactly once; :func:`format_sources` writes the numbered
block the model cites as ``[n]``. Ranking itself lives in :mod:`ctx_memory.ranking`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ctx_memory.ranking import item_key, item_title

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping, Sequence
    from datetime import datetime

    from ctx_memory.tokens import TokenCounter

__all__ = [
    "SOURCES_HEADING",
    "SourcePlan",
    "format_header",
    "format_sources",
    "head_text",
    "plan_sources",
    "system_text",
]

SOURCES_HEADING = "Sources (most relevant first; cite as [n]):"
"""The line that opens the numbered sources block."""


def format_header(
    metadata: Mapping[str, Any] | None,
    *,
    now: datetime | None = None,
    part: Literal["all", "stable", "volatile"] = "all",
) -> str:
    """The short session header: mode, current URL and the user's local time.

    Only what is known is shown; the default ``normal`` mode is not. The user's local
    time is ``metadata.user_time`` (with ``user_timezone`` in brackets); without it, but
    with a timezone, it is ``now`` converted to that zone. ``part="stable"`` gives the
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
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415 - rarely needed

    try:
        return now.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _source_heading(number: int, item: Mapping[str, Any]) -> str:
    data = item.get("extracted_data") or {}
    line = f"[{number}] {item_title(item)}"
    if item.get("url") and item.get("url") != item_title(item):
        line += f" - {item['url']}"
    extras = [str(data[k]) for k in ("site_name", "published_date") if data.get(k)]
    if extras:
        line += f" ({', '.join(extras)})"
    return line


def format_sources(sources: Sequence[tuple[Mapping[str, Any], str]]) -> str:
    """The numbered sources block for ``(item, content)`` pairs, or ``""`` for none."""
    if not sources:
        return ""
    parts = [SOURCES_HEADING]
    parts.extend(
        f"{_source_heading(n, item)}\n{content}" for n, (item, content) in enumerate(sources, 1)
    )
    return "\n\n".join(parts)


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
        chosen: ``(item, content)`` pairs in prompt order; content cut to the cap.
        truncated: How many of ``chosen`` were cut to the per-source cap.
        dropped: How many ranked sources were left out (over ``max_sources`` or budget).
        system_tokens: Exact tokens of the system message holding ``chosen``
            (0 when there is no system message at all).
        text: The system message text.
    """

    chosen: tuple[tuple[Mapping[str, Any], str], ...]
    truncated: int
    dropped: int
    system_tokens: int
    text: str


def plan_sources(
    head: str,
    ranked: Sequence[Mapping[str, Any]],
    *,
    counter: TokenCounter,
    allowance: int,
    per_source_tokens: int,
    max_sources: int | None,
    cache: MutableMapping[tuple[Any, ...], str] | None = None,
) -> SourcePlan:
    """Choose sources, most relevant first, so the system message fits ``allowance``.

    ``allowance`` bounds the whole system message (overhead, system prompt, header and
    sources). Each source is cut to ``per_source_tokens``. Sources are added while their
    estimated cost fits; the finished system message is then counted exactly once and
    the least relevant source is dropped until it fits. An empty ``head`` and no sources
    give no system message (0 tokens).
    """
    base_tokens = counter.count_message("system", head) if head else 0
    chosen: list[tuple[Mapping[str, Any], str, int]] = []
    limit = len(ranked) if max_sources is None else min(max_sources, len(ranked))
    estimate = (base_tokens or counter.count_message("system", "")) + counter.count(
        "\n\n" + SOURCES_HEADING
    )
    for item in ranked[:limit]:
        content, cut = _cut(item, counter, per_source_tokens, cache)
        if not content.strip():
            continue
        cost = counter.count(_source_heading(len(chosen) + 1, item)) + 3  # + separators
        cost += min(int(item.get("token_count") or counter.count(content)), per_source_tokens)
        if estimate + cost > allowance:
            break
        estimate += cost
        chosen.append((item, content, cut))
    while True:
        pairs = [(item, content) for item, content, _ in chosen]
        text = system_text(head, format_sources(pairs))
        tokens = counter.count_message("system", text) if text else 0
        if tokens <= allowance or not chosen:
            break
        chosen.pop()  # the least relevant source goes first
    truncated = sum(cut for _, _, cut in chosen)
    return SourcePlan(tuple(pairs), truncated, len(ranked) - len(chosen), tokens, text)


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
