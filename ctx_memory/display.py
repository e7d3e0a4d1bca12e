"""Notebook display: a session and an assembled prompt as self-contained HTML.

Plain HTML and CSS strings, no plotting library and no JavaScript: the output renders the
same in Jupyter, VS Code, GitHub's notebook viewer and a static HTML file. Every value
taken from a session is escaped with :func:`html.escape`; only ``http(s)`` URLs become
links.

* :func:`render_session_html` renders a session document (what
  :meth:`~ctx_memory.manager.ContextManager.get_context` returns): metadata, the system
  prompt, sources with links, the history with roles and timestamps (long content
  collapsed), shared state and a token-budget bar.
* :func:`render_assembly_html` renders what the prompt assembler produced: the per-section
  token report as a budget bar and the assembled messages.
* :class:`SessionView` (or :func:`show_session`) wraps a manager and a session id; Jupyter
  calls its ``_repr_html_`` and gets a fresh rendering each time the cell runs.

The budget arithmetic (:func:`budget_segments`) is pure and separate from the markup.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctx_memory.assembly.compacted import COMPACTIONS_KEY, compactions_of, producer_label

if TYPE_CHECKING:
    from ctx_memory.manager import ContextManager
    from ctx_memory.schema import SessionDocument

__all__ = [
    "BudgetSegment",
    "SessionView",
    "budget_segments",
    "render_assembly_html",
    "render_session_html",
    "show_session",
]

#: Characters of a message or source shown before the rest is folded away.
PREVIEW_CHARS = 600

_COLORS = {
    "system": "#7b5ea7",
    "sources": "#2f7ebc",
    "history": "#3a9a5b",
    "question": "#e08a1e",
    "free": "#e9ecef",
    "reserve": "#9aa0a6",
    "left out": "#d9534f",
}
_ROLE_COLORS = {
    "user": "#2f7ebc",
    "assistant": "#3a9a5b",
    "system": "#7b5ea7",
    "tool": "#b8860b",
}

_CSS = """
.ctxm{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 font-size:13px;line-height:1.45;color:#1f2328;background:#fff;border:1px solid #d0d7de;
 border-radius:8px;padding:12px 16px;max-width:1000px}
.ctxm h3{margin:0 0 6px;font-size:16px}
.ctxm h4{margin:14px 0 6px;font-size:13px;text-transform:uppercase;letter-spacing:.04em;
 color:#57606a;border-bottom:1px solid #eaeef2;padding-bottom:2px}
.ctxm code,.ctxm pre{font-family:"SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono",monospace;
 font-size:12px}
.ctxm pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;background:#f6f8fa;
 padding:6px 8px;border-radius:6px}
.ctxm table{border-collapse:collapse;width:100%;margin:2px 0}
.ctxm th,.ctxm td{text-align:left;vertical-align:top;padding:3px 8px;
 border-bottom:1px solid #eaeef2}
.ctxm th{color:#57606a;font-weight:600;white-space:nowrap}
.ctxm table.kv th{width:13em}
.ctxm .txt{white-space:pre-wrap;word-break:break-word;margin:4px 0;background:#f6f8fa;
 padding:6px 8px;border-radius:6px}
.ctxm .num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ctxm .muted{color:#6e7781}
.ctxm .badge{display:inline-block;padding:0 7px;border-radius:10px;font-size:11px;
 font-weight:600;color:#fff;margin-right:4px}
.ctxm .chip{display:inline-block;padding:0 6px;border-radius:10px;font-size:11px;
 background:#eaeef2;color:#24292f;margin-right:4px}
.ctxm .bar{display:flex;height:18px;border-radius:4px;overflow:hidden;margin:4px 0;
 background:#f6f8fa;border:1px solid #d0d7de}
.ctxm .bar span{display:block;height:100%}
.ctxm .bar .out{background-image:repeating-linear-gradient(45deg,rgba(255,255,255,.45) 0 4px,
 transparent 4px 8px)}
.ctxm .legend span{margin-right:14px;white-space:nowrap}
.ctxm .sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;
 vertical-align:-1px}
.ctxm .msg{border-left:3px solid #d0d7de;padding:2px 10px;margin:6px 0}
.ctxm .msg .head{font-size:12px}
.ctxm details summary{cursor:pointer;color:#0969da}
.ctxm a{color:#0969da;text-decoration:none}
.ctxm a:hover{text-decoration:underline}
"""


def _e(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def _int(value: object) -> int:
    if isinstance(value, (int, float, str)):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def _fmt(n: int) -> str:
    return f"{n:,}"


def _link(url: object, text: object | None = None) -> str:
    """An ``<a>`` for http(s) URLs; anything else (``javascript:``…) is shown as text."""
    label = _e(text if text not in (None, "") else url)
    if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
        return f'<a href="{_e(url)}" target="_blank" rel="noopener noreferrer">{label}</a>'
    return label


def _listed(value: object) -> list[Any]:
    """A metadata list (``tools_used``, ``sources_used``) as items; one value is one item.

    Metadata is free-form: a string or a number there is shown as itself, not iterated.
    """
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _source_link(entry: object) -> str:
    """A ``sources_used`` entry: a URL, or a dict with ``url`` (and maybe ``title``).

    ``None`` is a source the prompt held without a URL (what ``ContextualChat`` records).
    """
    if entry is None:
        return "(no URL)"
    if isinstance(entry, Mapping):
        return _link(entry.get("url"), entry.get("title") or entry.get("url"))
    return _link(entry)


def _fold(text: str, limit: int = PREVIEW_CHARS, *, pre: bool = True) -> str:
    """``text`` escaped; past ``limit`` characters the rest folds into ``<details>``."""
    wrap = ('<div class="txt">', "</div>") if pre else ("<div>", "</div>")
    if len(text) <= limit:
        return f"{wrap[0]}{_e(text)}{wrap[1]}"
    head, rest = text[:limit], text[limit:]
    return (
        f"{wrap[0]}{_e(head)}…{wrap[1]}<details><summary>show all "
        f"({_fmt(len(text))} characters)</summary>{wrap[0]}{_e(head)}{_e(rest)}{wrap[1]}"
        "</details>"
    )


def _content_text(content: object) -> str:
    """Readable text of a message's content: a string, or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts: list[str] = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping):
                kind = block.get("type", "block")
                if kind == "text" and isinstance(block.get("text"), str):
                    parts.append(block["text"])
                else:
                    parts.append(f"[{kind}]")
            else:
                parts.append(str(block))
        return "\n".join(parts)
    return "" if content is None else str(content)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def _short_time(value: object) -> str:
    """``2026-11-21T06:28:39.534+00:00`` → ``2026-11-21 06:28:39`` (full value on hover)."""
    if not isinstance(value, str) or not value:
        return ""
    short = value.replace("T", " ")[:19]
    return f'<span class="muted" title="{_e(value)}">{_e(short)}</span>'


# --------------------------------------------------------------------------- budget bar


@dataclass(frozen=True)
class BudgetSegment:
    """One coloured part of a token-budget bar.

    Attributes:
        label: ``system``, ``sources``, ``history``, ``question``, ``free``, ``reserve``
            or ``left out``.
        tokens: Tokens in this part.

    Example:
        .. code-block:: python

            from ctx_memory.display import BudgetSegment

            segment = BudgetSegment("history", 120)
            assert segment.color.startswith("#")
    """

    label: str
    tokens: int

    @property
    def color(self) -> str:
        """The segment's CSS colour."""
        return _COLORS.get(self.label, "#6e7781")


def budget_segments(
    sections: Mapping[str, int],
    *,
    budget: int | None = None,
    reserve_tokens: int = 0,
    left_out_tokens: int = 0,
) -> list[BudgetSegment]:
    """Split a token budget into bar segments (pure arithmetic, no markup).

    ``sections`` are the included parts in prompt order (e.g. system, sources, history).
    Without a ``budget`` the bar is just those parts plus ``left_out_tokens``. With one,
    the parts fill ``budget - reserve_tokens`` in order; whatever does not fit is counted
    as *left out* (the oldest history goes first when a prompt is assembled), the unused
    rest is *free*, and the reserve kept for the reply closes the bar.

    Args:
        sections: Tokens per included section, in order.
        budget: The model's token budget (context window), if known.
        reserve_tokens: Tokens kept free for the model's reply.
        left_out_tokens: Tokens already known to have been left out.

    Returns:
        Segments with positive token counts, in display order.

    Example:
        .. code-block:: python

            from ctx_memory.display import budget_segments

            parts = budget_segments({"system": 10, "history": 100}, budget=80, reserve_tokens=20)
            assert [(s.label, s.tokens) for s in parts] == [
                ("system", 10), ("history", 50), ("reserve", 20), ("left out", 50)
            ]
    """
    segments: list[BudgetSegment] = []
    left_out = max(0, left_out_tokens)
    reserve = max(0, reserve_tokens)
    if budget is None:
        segments = [BudgetSegment(k, max(0, v)) for k, v in sections.items()]
        if reserve:
            segments.append(BudgetSegment("reserve", reserve))
    else:
        room = max(0, budget - reserve)
        for label, tokens in sections.items():
            fits = min(max(0, tokens), room)
            room -= fits
            left_out += max(0, tokens) - fits
            segments.append(BudgetSegment(label, fits))
        segments.append(BudgetSegment("free", room))
        segments.append(BudgetSegment("reserve", min(reserve, budget)))
    segments.append(BudgetSegment("left out", left_out))
    return [s for s in segments if s.tokens > 0]


def _span(segment: BudgetSegment, total: int) -> str:
    return (
        f'<span class="{"out" if segment.label == "left out" else ""}" '
        f'style="width:{100 * segment.tokens / total:.3f}%;background-color:{segment.color}" '
        f'title="{_e(segment.label)}: {_fmt(segment.tokens)} tokens"></span>'
    )


def _bar_html(segments: Sequence[BudgetSegment], *, caption: str) -> str:
    """The bar, its caption and legend.

    What was left out is drawn on a second row at the same scale (capped at the bar's
    width), so a long history does not squash the budget itself.
    """
    inside = [s for s in segments if s.label != "left out"]
    out = [s for s in segments if s.label == "left out"]
    total = sum(s.tokens for s in inside) or sum(s.tokens for s in out) or 1
    rows = f'<div class="bar">{"".join(_span(s, total) for s in inside)}</div>'
    if out:
        left = out[0].tokens
        width = min(100.0, 100 * left / total)
        note = f"{left / total:.1f} times the bar, not to scale" if left > total else "same scale"
        rows += (
            f'<div class="bar" style="width:{width:.3f}%">{_span(out[0], left)}</div>'
            f'<div class="muted">left out of the prompt: {_fmt(left)} tokens ({note})</div>'
        )
    legend = "".join(
        f'<span><i class="sw" style="background:{s.color}"></i>{_e(s.label)} '
        f"<b>{_fmt(s.tokens)}</b></span>"
        for s in segments
    )
    return (
        f'<div class="muted">{caption}</div>{rows}'
        f'<div class="legend">{legend or "<span class=muted>empty</span>"}</div>'
    )


# --------------------------------------------------------------------------- session


def _session_tokens(
    document: Mapping[str, Any], stats: Mapping[str, Any] | None
) -> tuple[int, int, int]:
    """(system, sources, history) tokens from stats, else from the document's counts."""
    meta = document.get("metadata") or {}
    if stats and stats.get("exists", True) and "token_count" in stats:
        sources = sum(_int(v) for v in (stats.get("fetched_tokens") or {}).values())
        return _int(stats.get("system_prompt_tokens")), sources, _int(stats.get("token_count"))
    fetched = document.get("fetched_context") or {}
    sources = sum(_int(i.get("token_count")) for items in fetched.values() for i in items)
    history = _int(meta.get("token_count")) or sum(
        _int(m.get("token_count")) for m in document.get("conversation_history") or []
    )
    return _int(meta.get("system_prompt_tokens")), sources, history


def _metadata_html(meta: Mapping[str, Any]) -> str:
    rows = []
    for key, value in meta.items():
        if value is None:
            shown = '<span class="muted">—</span>'
        elif key == "current_url":
            shown = _link(value)
        elif isinstance(value, (Mapping, list)):
            shown = f"<code>{_e(json.dumps(value, ensure_ascii=False, default=str))}</code>"
        else:
            shown = _e(value)
        rows.append(f"<tr><th>{_e(key)}</th><td>{shown}</td></tr>")
    return f'<table class="kv">{"".join(rows)}</table>'


def _sources_html(fetched: Mapping[str, Any]) -> str:
    rows = []
    n = 0
    for source_type, items in fetched.items():
        for item in items or []:
            n += 1
            data = item.get("extracted_data") or {}
            url = item.get("url")
            title = data.get("title") or url or "(untitled)"
            site = data.get("site_name") or ""
            published = data.get("published_date") or ""
            url_line = f'<div class="muted">{_link(url)}</div>' if url else ""
            rows.append(
                f'<tr><td class="num">[{n}]</td>'
                f'<td><span class="chip">{_e(source_type)}</span></td>'
                f"<td><b>{_link(url, title)}</b>{url_line}"
                f"{_fold(str(item.get('content', '')), 300, pre=False)}</td>"
                f"<td>{_e(site)}</td><td>{_e(published)}</td>"
                f'<td class="num">{_fmt(_int(item.get("token_count")))}</td></tr>'
            )
    if not rows:
        return '<div class="muted">No fetched sources.</div>'
    head = (
        "<tr><th>#</th><th>type</th><th>title / URL / content</th><th>site</th>"
        '<th>published</th><th class="num">tokens</th></tr>'
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _message_html(record: Mapping[str, Any], index: int) -> str:
    role = str(record.get("role", "?"))
    color = _ROLE_COLORS.get(role, "#6e7781")
    meta = record.get("metadata") or {}
    extras: list[str] = []
    if record.get("name"):
        extras.append(f'<span class="chip">name: {_e(record["name"])}</span>')
    if meta.get("model"):
        extras.append(f'<span class="chip">{_e(meta["model"])}</span>')
    if meta.get("response_time_ms") is not None:
        extras.append(f'<span class="chip">{_e(meta["response_time_ms"])} ms</span>')
    extras.extend(
        f'<span class="chip">tool: {_e(t)}</span>' for t in _listed(meta.get("tools_used"))
    )
    if record.get("tool_call_id"):
        extras.append(f'<span class="chip">reply to {_e(record["tool_call_id"])}</span>')
    body = _fold(_content_text(record.get("content")))
    calls = record.get("tool_calls") or []
    if calls:
        body += "".join(
            f"<div>→ calls <code>{_e(c.get('name'))}</code>"
            f"<code>({_e(json.dumps(c.get('args', {}), ensure_ascii=False, default=str))})"
            "</code></div>"
            for c in calls
            if isinstance(c, Mapping)
        )
    used = _listed(meta.get("sources_used"))
    if used:
        body += '<div class="muted">sources: ' + ", ".join(map(_source_link, used)) + "</div>"
    return (
        f'<div class="msg" style="border-left-color:{color}"><div class="head">'
        f'<span class="muted">#{index}</span> '
        f'<span class="badge" style="background:{color}">{_e(role)}</span>'
        f"{_short_time(record.get('timestamp'))} "
        f'<span class="muted">{_fmt(_int(record.get("token_count")))} tokens</span> '
        f"{''.join(extras)}</div>{body}</div>"
    )


def render_session_html(
    document: Mapping[str, Any] | SessionDocument,
    stats: Mapping[str, Any] | None = None,
    *,
    budget: int | None = None,
    reserve_tokens: int = 0,
    max_messages: int | None = 50,
) -> str:
    """Render a session document as a self-contained HTML fragment.

    Args:
        document: The session document (``ContextManager.get_context``), or a
            :class:`~ctx_memory.schema.SessionDocument`.
        stats: ``ContextManager.get_memory_stats(session_id)``, if at hand; token counts
            come from it, else from the counts cached in the document.
        budget: A token budget (e.g. the model's context window) to draw the bar against;
            what would not fit in ``budget - reserve_tokens`` shows as *left out*.
        reserve_tokens: Tokens kept free for the reply.
        max_messages: Show only the newest this many messages (``None``: all).

    Returns:
        An HTML ``<div>`` with its own scoped ``<style>``.
    """
    if not isinstance(document, Mapping):
        document = document.model_dump(mode="json")
    if not document:
        return (
            f'<style>{_CSS}</style><div class="ctxm"><span class="muted">'
            "No such session (never created, deleted or expired).</span></div>"
        )
    meta = dict(document.get("metadata") or {})
    session_id = meta.get("session_id", "?")
    history = list(document.get("conversation_history") or [])
    # the document may hold only the newest messages (SessionView reads just those)
    n_messages = max(len(history), _int(meta.get("message_count")))
    fetched = document.get("fetched_context") or {}
    system, sources, hist = _session_tokens(document, stats)
    n_sources = sum(len(v or []) for v in fetched.values())
    segments = budget_segments(
        {"system": system, "sources": sources, "history": hist},
        budget=budget,
        reserve_tokens=reserve_tokens,
    )
    caption = (
        f"Token budget: {_fmt(system + sources + hist)} stored tokens"
        + (
            f" against a budget of {_fmt(budget)} ({_fmt(reserve_tokens)} reserved for the reply)"
            if budget is not None
            else ""
        )
        + f" · encoding {_e(meta.get('token_encoding', '?'))}"
    )
    mode = meta.get("mode")
    badges = (
        (f'<span class="badge" style="background:#57606a">{_e(mode)}</span>' if mode else "")
        + f'<span class="chip">{_fmt(n_messages)} messages</span>'
        + f'<span class="chip">{_fmt(n_sources)} sources</span>'
        + (f'<span class="chip">store: {_e(stats["store"])}</span>' if stats else "")
    )
    shown = history if max_messages is None else history[len(history) - max_messages :]
    skipped = n_messages - len(shown)
    first_index = skipped + 1
    messages = "".join(_message_html(r, first_index + i) for i, r in enumerate(shown))
    if skipped:
        messages = f'<div class="muted">… {_fmt(skipped)} older messages not shown</div>' + messages
    system_prompt = document.get("system_prompt")
    shared = dict(document.get("shared") or {})
    compactions = compactions_of(shared)
    shared.pop(COMPACTIONS_KEY, None)  # shown as compactions below
    parts = [
        f"<style>{_CSS}</style>",
        '<div class="ctxm">',
        f"<h3>Session <code>{_e(session_id)}</code> {badges}</h3>",
        _bar_html(segments, caption=caption),
        "<h4>Metadata</h4>",
        _metadata_html(meta),
        "<h4>System prompt</h4>",
        _fold(system_prompt) if system_prompt else '<div class="muted">None.</div>',
        f"<h4>Sources ({_fmt(n_sources)})</h4>",
        _sources_html(fetched),
        f"<h4>Conversation ({_fmt(n_messages)} messages)</h4>",
        messages or '<div class="muted">No messages yet.</div>',
    ]
    if compactions:
        parts += [
            f"<h4>Compactions ({_fmt(len(compactions))})</h4>",
            _compactions_html(compactions),
        ]
    if shared:
        parts += [
            f"<h4>Shared state ({_fmt(len(shared))} keys)</h4>",
            f"<details><summary>{_e(', '.join(map(str, shared)))}</summary>"
            f"<pre>{_e(_json(shared))}</pre></details>",
        ]
    parts.append("</div>")
    return "".join(parts)


def _compactions_html(compactions: Sequence[Mapping[str, Any]]) -> str:
    """One folded row per compaction: range, kind, tokens, producer, time, summary."""
    rows = []
    for entry in compactions:
        name = producer_label(entry.get("producer"))
        head = (
            f"messages {_e(entry.get('first_index'))}-{_e(entry.get('last_index'))} · "
            f"{_e(entry.get('kind', '?'))} · {_fmt(_num(entry.get('tokens_covered')))} → "
            f"{_fmt(_num(entry.get('summary_tokens')))} tokens · {_e(name)} · "
            f"{_e(entry.get('created_at', ''))}"
        )
        rows.append(
            f"<details><summary>{head}</summary><pre>{_e(entry.get('summary', ''))}</pre></details>"
        )
    return "".join(rows)


def _num(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# --------------------------------------------------------------------------- assembly


def _get(obj: object, *names: str, default: Any = None) -> Any:
    """The first present attribute (or mapping key) among ``names``."""
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if not isinstance(obj, Mapping) and hasattr(obj, name):
            return getattr(obj, name)
    return default


def _message_parts(message: object) -> tuple[str, str]:
    """(role, text) of a LangChain message or an OpenAI-style dict."""
    if isinstance(message, Mapping):
        return str(message.get("role", "?")), _content_text(message.get("content"))
    kind = str(getattr(message, "type", "?"))
    role = {"human": "user", "ai": "assistant"}.get(kind, kind)
    return role, _content_text(getattr(message, "content", ""))


def render_assembly_html(result: object) -> str:
    """Render an assembled prompt and its token report as HTML.

    Accepts an :class:`~ctx_memory.prompt.AssembledPrompt` (report and messages), an
    :class:`~ctx_memory.prompt.AssemblyReport` alone, or a mapping with the report's
    field names (``report.as_dict()``). The bar spans the model's ``max_tokens``: system,
    sources, history and question (reply priming is drawn with the system part), the free
    rest of the budget, the reserve kept for the reply, and what was left out.

    Args:
        result: The assembly result or its report.

    Returns:
        An HTML ``<div>`` with its own scoped ``<style>``.
    """
    report = _get(result, "report", default=result)
    sections = {
        "system": _int(_get(report, "system_tokens")),
        "sources": _int(_get(report, "sources_tokens")),
        "history": _int(_get(report, "history_tokens")),
        "question": _int(_get(report, "question_tokens")),
    }
    total = _int(_get(report, "total_tokens")) or sum(sections.values())
    framing = max(0, total - sum(sections.values()))  # reply priming
    sections["system"] += framing
    reserve = _int(_get(report, "reserve_tokens"))
    max_tokens = _get(report, "max_tokens")
    allowed = _get(report, "budget")
    if max_tokens is None and allowed is not None:
        max_tokens = _int(allowed) + reserve
    full = None if max_tokens is None else _int(max_tokens)
    allowed_n = _int(allowed) if allowed is not None else (None if full is None else full - reserve)
    left_tokens = _int(_get(report, "history_left_out_tokens", "left_out_tokens"))
    left_messages = _int(_get(report, "history_left_out_messages", "left_out_messages"))
    dropped_sources = _int(_get(report, "sources_dropped", "left_out_sources"))
    segments = budget_segments(
        sections, budget=full, reserve_tokens=reserve, left_out_tokens=left_tokens
    )
    caption = f"Assembled prompt: {_fmt(total)} tokens" + (
        f" of {_fmt(allowed_n)} allowed (context {_fmt(full)}, {_fmt(reserve)} reserved "
        "for the reply)"
        if full is not None and allowed_n is not None
        else ""
    )
    encoding = _get(report, "encoding")
    if encoding:
        caption += f" · encoding {_e(encoding)}"
    rows: list[tuple[str, object]] = [
        ("system prompt + header", sections["system"] - framing),
        ("sources", sections["sources"]),
        ("history", sections["history"]),
        ("question", sections["question"]),
        ("reply priming", framing),
        ("total", total),
    ]
    if allowed_n is not None:
        rows.append(("remaining in budget", max(0, allowed_n - total)))
    rows += [
        ("reserved for the reply", reserve),
        ("sources included", _get(report, "sources_included", default="—")),
        ("… cut to the per-source cap", _get(report, "sources_truncated", default="—")),
        ("sources left out", dropped_sources),
        ("history messages included", _get(report, "history_messages", default="—")),
        ("history messages left out", left_messages),
        ("history tokens left out", left_tokens),
    ]
    table = "".join(
        f'<tr><th>{_e(k)}</th><td class="num">{_fmt(v) if isinstance(v, int) else _e(v)}</td></tr>'
        for k, v in rows
    )
    parts = [
        f"<style>{_CSS}</style>",
        '<div class="ctxm">',
        "<h3>Assembled prompt"
        + (f" <code>{_e(_get(report, 'session_id'))}</code>" if _get(report, "session_id") else "")
        + "</h3>",
        _bar_html(segments, caption=caption),
        f'<h4>Report</h4><table style="width:auto">{table}</table>',
    ]
    urls = _get(report, "source_urls", default=())
    if isinstance(urls, Sequence) and not isinstance(urls, str) and urls:
        items = "".join(f"<li>{_link(u)}</li>" for u in urls)
        parts.append(f"<h4>Sources in the prompt</h4><ol>{items}</ol>")
    messages = _get(result, "messages", default=None)
    if isinstance(messages, Sequence) and not isinstance(messages, (str, bytes)):
        blocks = []
        for i, message in enumerate(messages, 1):
            role, text = _message_parts(message)
            color = _ROLE_COLORS.get(role, "#6e7781")
            blocks.append(
                f'<div class="msg" style="border-left-color:{color}"><div class="head">'
                f'<span class="muted">#{i}</span> '
                f'<span class="badge" style="background:{color}">{_e(role)}</span></div>'
                f"{_fold(text)}</div>"
            )
        parts += [f"<h4>Messages ({len(blocks)})</h4>", "".join(blocks)]
    parts.append("</div>")
    return "".join(parts)


# --------------------------------------------------------------------------- live view


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SessionView:
    """A live, notebook-friendly view of one session.

    Jupyter renders it with :meth:`_repr_html_`, reading the session afresh each time; the
    plain ``repr`` is one short line that never shows content, URLs or passwords.

    Args:
        manager: The manager holding the session.
        session_id: The session to show.
        budget: Optional token budget to draw the bar against.
        reserve_tokens: Tokens kept free for the reply (with ``budget``).
        max_messages: Show only the newest this many messages (``None``: all).

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager, SessionView

            with ContextManager() as cm:
                cm.add_user_message("s1", "Hello <b>there</b>")
                view = SessionView(cm, "s1", budget=4096)
                assert "&lt;b&gt;there&lt;/b&gt;" in view._repr_html_()
                assert repr(view) == "<SessionView 's1' on memory: 1 messages, 0 sources>"
    """

    def __init__(
        self,
        manager: ContextManager,
        session_id: str,
        *,
        budget: int | None = None,
        reserve_tokens: int = 0,
        max_messages: int | None = 50,
    ) -> None:
        self.manager = manager
        self.session_id = session_id
        self.budget = budget
        self.reserve_tokens = reserve_tokens
        self.max_messages = max_messages

    def document(self) -> dict[str, Any]:
        """The session as shown: header, sources and only the newest ``max_messages``.

        Reads the newest messages alone (O(k)), so a view of a 100,000-message session
        costs what its last page costs. ``{}`` if the session does not exist.
        """
        header = self.manager.get_header(self.session_id)
        if header is None:
            return {}
        return {
            "system_prompt": header["system_prompt"],
            "metadata": header["metadata"],
            "fetched_context": self.manager.get_fetched_context(self.session_id),
            "conversation_history": self.manager.get_history(
                self.session_id, last_k=self.max_messages
            ),
            "shared": header["shared"],
        }

    def to_html(self) -> str:
        """The session rendered now (see :func:`render_session_html`)."""
        document = self.document()
        stats = self.manager.get_memory_stats(self.session_id) if document else None
        return render_session_html(
            document,
            stats,
            budget=self.budget,
            reserve_tokens=self.reserve_tokens,
            max_messages=self.max_messages,
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        store = self.manager.store.name
        sid = _clip(self.session_id)
        try:
            stats = self.manager.get_memory_stats(self.session_id)
        except Exception:  # noqa: BLE001 - a repr must not raise (e.g. server down)
            return f"<SessionView {sid!r} on {store}>"
        if not stats.get("exists"):
            return f"<SessionView {sid!r} on {store}: no such session>"
        return (
            f"<SessionView {sid!r} on {store}: {stats['message_count']} messages, "
            f"{stats['fetched_item_count']} sources>"
        )


def show_session(
    manager: ContextManager,
    session_id: str,
    *,
    budget: int | None = None,
    reserve_tokens: int = 0,
    max_messages: int | None = 50,
) -> SessionView:
    """A :class:`SessionView` of ``session_id``: make it a cell's last expression to see it."""
    return SessionView(
        manager,
        session_id,
        budget=budget,
        reserve_tokens=reserve_tokens,
        max_messages=max_messages,
    )
