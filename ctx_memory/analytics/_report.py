"""The analytics report: typed figures, their JSON form and a Markdown rendering (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

__all__ = [
    "MAX_DENSE_DAYS",
    "SCHEMA",
    "AnalyticsReport",
    "DayCount",
    "ModelUsage",
    "Percentiles",
    "SourceUsage",
    "ToolUsage",
    "percentiles",
]

SCHEMA = "ctx_memory.analytics/1"
"""The ``schema`` value of :meth:`AnalyticsReport.as_dict`; bumped when a key changes."""

MAX_DENSE_DAYS = 3660
"""The longest span (in days, about ten years) whose every day the per-day list holds.

Past it, the list holds only the days with activity, so its length follows the data, not
the dates: one session dated year 1 among sessions of 2026 would otherwise make it 739,677
days long.
"""

SPARSE_DAYS_NOTE = (
    f"Only days with activity are listed: the days span over {MAX_DENSE_DAYS:,} days."
)
"""What the Markdown and HTML renderings say under a sparse per-day list."""

ROLE_ORDER = ("user", "assistant", "system", "tool")
SECTION_ORDER = ("system_prompt", "history", "fetched_sources")


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Nearest-rank percentiles of a set of values (milliseconds for latencies).

    ``pN`` is the smallest value that at least N % of the values are less than or equal
    to: the value at 1-based rank ``ceil(N / 100 * count)`` of the sorted values. Every
    figure is ``None`` when there are no values.

    Attributes:
        count: How many values.
        p50: The median (nearest rank).
        p90: The 90th percentile.
        p99: The 99th percentile.
        mean: The arithmetic mean.
        max: The largest value.

    Example:
        .. code-block:: python

            from ctx_memory.analytics import Percentiles, percentiles

            assert percentiles([]) == Percentiles()
            assert percentiles([1.0, 2.0]).as_dict()["p50"] == 1.0
    """

    count: int = 0
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """``{"count", "p50", "p90", "p99", "mean", "max"}``."""
        return {
            "count": self.count,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "mean": self.mean,
            "max": self.max,
        }


def percentiles(values: Sequence[float]) -> Percentiles:
    """Nearest-rank p50 / p90 / p99, mean and max of ``values`` (any order).

    Example:
        .. code-block:: python

            from ctx_memory.analytics import percentiles

            figures = percentiles([30.0, 10.0, 20.0, 40.0])
            assert (figures.p50, figures.p90, figures.max) == (20.0, 40.0, 40.0)
    """
    if not values:
        return Percentiles()
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: int) -> float:
        return ordered[max(1, math.ceil(q * n / 100)) - 1]

    return Percentiles(
        count=n,
        p50=rank(50),
        p90=rank(90),
        p99=rank(99),
        mean=round(math.fsum(ordered) / n, 3),
        max=ordered[-1],
    )


@dataclass(frozen=True, slots=True)
class DayCount:
    """Activity of one UTC calendar day.

    Attributes:
        date: ``YYYY-MM-DD`` (UTC).
        sessions: Selected sessions that started that day.
        turns: User messages sent that day (in the selected sessions).

    Example:
        .. code-block:: python

            from ctx_memory.analytics import Aggregator

            aggregator = Aggregator()
            aggregator.add({"metadata": {"created_at": "2026-03-01T12:00:00Z"}})
            assert [(d.date, d.sessions, d.turns) for d in aggregator.report().days] == [
                ("2026-03-01", 1, 0)
            ]
    """

    date: str
    sessions: int
    turns: int


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """Replies of one model and their recorded latency.

    Attributes:
        model: The model name recorded on the reply (``"(unknown)"`` when none).
        replies: Assistant messages recorded with this model.
        latency_ms: Percentiles of their recorded ``response_time_ms``.

    Example:
        .. code-block:: python

            from ctx_memory.analytics import Aggregator

            aggregator = Aggregator()
            aggregator.add({"metadata": {}, "conversation_history": [
                {"role": "assistant", "content": "hi",
                 "metadata": {"model": "gpt-4o-mini", "response_time_ms": 640}},
            ]})
            usage = aggregator.report().models[0]
            assert (usage.model, usage.replies, usage.latency_ms.p50) == ("gpt-4o-mini", 1, 640)
    """

    model: str
    replies: int
    latency_ms: Percentiles


@dataclass(frozen=True, slots=True)
class ToolUsage:
    """One tool's calls and results.

    Attributes:
        tool: The tool's name.
        calls: Times an assistant message asked for it (its ``tool_calls``, or
            ``metadata.tools_used`` on a reply without ``tool_calls``).
        results: Tool messages answering it.
        errors: Of those, results with ``status: "error"``.

    Example:
        .. code-block:: python

            from ctx_memory.analytics import Aggregator

            aggregator = Aggregator()
            aggregator.add({"metadata": {}, "conversation_history": [
                {"role": "assistant", "content": "",
                 "tool_calls": [{"name": "search", "args": {}, "id": "c1"}]},
                {"role": "tool", "content": "timeout", "tool_call_id": "c1", "status": "error"},
            ]})
            tool = aggregator.report().tools[0]
            assert (tool.tool, tool.calls, tool.results, tool.errors) == ("search", 1, 1, 1)
    """

    tool: str
    calls: int
    results: int
    errors: int


@dataclass(frozen=True, slots=True)
class SourceUsage:
    """Sources fetched into sessions against sources the replies used and cited.

    URLs are counted once per session: a URL fetched twice in one session is one
    fetched URL; fetched in two sessions it is two.

    Attributes:
        fetched_items: Items in ``fetched_context`` (every source type).
        fetched_urls: Distinct (session, URL) pairs among them.
        used_urls: Distinct (session, URL) pairs some reply had in its prompt
            (``metadata.sources_used``).
        cited_urls: Distinct (session, URL) pairs some reply cited (``metadata.cited``,
            the 1-based numbers of ``sources_used`` the reply cites as ``[n]``).
        cited_fetched_urls: Of ``fetched_urls``, those cited.
        citations: Citations over all replies (a reply citing ``[1][2]`` counts 2).
        replies_with_sources: Replies whose prompt held at least one source.
        replies_citing: Replies that cite at least one source.
        by_type: Per source type: ``items``, ``urls`` and ``cited_urls`` (cited URLs
            fetched under that type). A URL fetched under two types counts for each.

    Example:
        .. code-block:: python

            from ctx_memory.analytics import Aggregator

            aggregator = Aggregator()
            aggregator.add({
                "metadata": {},
                "fetched_context": {"web_search": [
                    {"url": "https://a.example", "token_count": 50},
                    {"url": "https://b.example", "token_count": 40},
                ]},
                "conversation_history": [{"role": "assistant", "content": "A [1].", "metadata": {
                    "sources_used": ["https://a.example", "https://b.example"], "cited": [1]}}],
            })
            sources = aggregator.report().sources
            assert (sources.fetched_urls, sources.cited_fetched_urls) == (2, 1)
            assert sources.citation_rate == 0.5
    """

    fetched_items: int = 0
    fetched_urls: int = 0
    used_urls: int = 0
    cited_urls: int = 0
    cited_fetched_urls: int = 0
    citations: int = 0
    replies_with_sources: int = 0
    replies_citing: int = 0
    by_type: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def citation_rate(self) -> float:
        """Share of fetched URLs that some reply cited (0.0 when nothing was fetched)."""
        return _ratio(self.cited_fetched_urls, self.fetched_urls)

    def as_dict(self) -> dict[str, Any]:
        """The figures above plus ``citation_rate``."""
        return {
            "fetched_items": self.fetched_items,
            "fetched_urls": self.fetched_urls,
            "used_urls": self.used_urls,
            "cited_urls": self.cited_urls,
            "cited_fetched_urls": self.cited_fetched_urls,
            "citation_rate": self.citation_rate,
            "citations": self.citations,
            "replies_with_sources": self.replies_with_sources,
            "replies_citing": self.replies_citing,
            "by_type": {t: dict(v) for t, v in self.by_type.items()},
        }


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class AnalyticsReport:
    """Figures over the sessions of a store, as :func:`~ctx_memory.analytics.analyze` found them.

    Build one with :func:`~ctx_memory.analytics.analyze` (reads a store) or
    :meth:`Aggregator.report <ctx_memory.analytics.Aggregator.report>` (documents you
    feed it). :meth:`as_dict` is the stable JSON form (documented key by key in the
    guide's *Analytics* page), :meth:`to_html` a self-contained HTML fragment with SVG
    charts, :meth:`to_markdown` text for a terminal or a pull request.

    Attributes:
        since: Sessions that started at or after this instant (UTC), or ``None``.
        until: Sessions that started before this instant (UTC), or ``None``.
        mode: Only sessions with this ``metadata.mode``, or ``None``.
        generated_at: When the report was made (ISO 8601, UTC).
        sessions_scanned: Sessions read from the store (before the filters).
        sessions_unreadable: Listed sessions that could not be read (an id the store
            holds but the manager refuses today; logged, not counted).
        sessions: Sessions selected by the filters.
        sessions_empty: Selected sessions without a user message.
        sessions_one_turn: Selected sessions with exactly one user message (abandoned
            after one turn).
        turns: User messages in the selected sessions.
        messages_by_role: Messages per role (all four roles always present).
        tokens_by_role: Stored tokens per role (the messages' cached ``token_count``).
        tokens_by_section: ``system_prompt``, ``history`` and ``fetched_sources`` tokens.
        tokens_by_source_type: Fetched-source tokens per source type.
        days: One entry per UTC day from the first to the last active day (zeros kept);
            only the active days when that would be more than :data:`MAX_DENSE_DAYS`
            entries (see :attr:`days_sparse`).
        models: Replies per model, most replies first.
        latency_ms: Recorded ``response_time_ms`` of every reply that has one.
        latency_estimated_ms: For replies without a recorded latency that directly follow
            a user message: the time between the two messages' timestamps.
        sources: Sources fetched against sources used and cited.
        tools: Tool usage, most calls first.
        modes: Selected sessions per ``metadata.mode``, most first.
        skipped_timestamps: Message timestamps that are there but could not be read:
            not ISO 8601, or outside UTC's range once their offset is applied. Each counts
            once, whatever the message's role (the message still counts, but not on the
            day chart or in the estimated latency).

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager
            from ctx_memory.analytics import analyze

            with ContextManager() as manager:
                manager.add_user_message("s1", "Which airport is closest?")
                manager.add_assistant_message(
                    "s1", "Orly [1].", model="gpt-4o-mini", response_time_ms=420,
                    sources_used=["https://a.example"], metadata={"cited": [1]},
                )
                report = analyze(manager)
                assert report.sessions == report.sessions_one_turn == 1
                assert report.as_dict()["models"][0]["latency_ms"]["p50"] == 420
                assert "<svg" in report.to_html()
    """

    since: datetime | None
    until: datetime | None
    mode: str | None
    generated_at: str
    sessions_scanned: int
    sessions_unreadable: int
    sessions: int
    sessions_empty: int
    sessions_one_turn: int
    turns: int
    messages_by_role: Mapping[str, int]
    tokens_by_role: Mapping[str, int]
    tokens_by_section: Mapping[str, int]
    tokens_by_source_type: Mapping[str, int]
    days: tuple[DayCount, ...]
    models: tuple[ModelUsage, ...]
    latency_ms: Percentiles
    latency_estimated_ms: Percentiles
    sources: SourceUsage
    tools: tuple[ToolUsage, ...]
    modes: Mapping[str, int]
    skipped_timestamps: int = 0

    @property
    def abandoned_rate(self) -> float:
        """Share of sessions with at least one turn that stopped after exactly one."""
        return _ratio(self.sessions_one_turn, self.sessions - self.sessions_empty)

    @property
    def days_sparse(self) -> bool:
        """Whether :attr:`days` lists only active days: they span over :data:`MAX_DENSE_DAYS`."""
        if not self.days:
            return False
        first, last = date.fromisoformat(self.days[0].date), date.fromisoformat(self.days[-1].date)
        return (last - first).days + 1 > MAX_DENSE_DAYS

    @property
    def total_tokens(self) -> int:
        """All stored tokens of the selected sessions (the sum of the sections)."""
        return sum(self.tokens_by_section.values())

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-native data with stable keys (see the guide for each key)."""
        active = self.sessions - self.sessions_empty
        return {
            "schema": SCHEMA,
            "generated_at": self.generated_at,
            "filters": {"since": _iso(self.since), "until": _iso(self.until), "mode": self.mode},
            "sessions": {
                "scanned": self.sessions_scanned,
                "unreadable": self.sessions_unreadable,
                "matched": self.sessions,
                "empty": self.sessions_empty,
                "one_turn": self.sessions_one_turn,
                "abandoned_rate": self.abandoned_rate,
            },
            "turns": {
                "total": self.turns,
                "per_active_session": _ratio(self.turns, active),
            },
            "messages": {
                "total": sum(self.messages_by_role.values()),
                "by_role": dict(self.messages_by_role),
            },
            "by_day": [
                {"date": d.date, "sessions": d.sessions, "turns": d.turns} for d in self.days
            ],
            "tokens": {
                "total": self.total_tokens,
                "by_role": dict(self.tokens_by_role),
                "by_section": dict(self.tokens_by_section),
                "by_source_type": dict(self.tokens_by_source_type),
            },
            "models": [
                {"model": m.model, "replies": m.replies, "latency_ms": m.latency_ms.as_dict()}
                for m in self.models
            ],
            "latency_ms": {
                "recorded": self.latency_ms.as_dict(),
                "estimated": self.latency_estimated_ms.as_dict(),
            },
            "sources": self.sources.as_dict(),
            "tools": [
                {"tool": t.tool, "calls": t.calls, "results": t.results, "errors": t.errors}
                for t in self.tools
            ],
            "modes": dict(self.modes),
            "skipped_timestamps": self.skipped_timestamps,
        }

    def to_html(self) -> str:
        """A self-contained HTML fragment: summary tables and inline SVG charts.

        No script, no external asset; every value taken from the store is escaped.
        """
        from ctx_memory.analytics._charts import render_report_html  # noqa: PLC0415

        return render_report_html(self)

    def _repr_html_(self) -> str:
        return self.to_html()

    def to_markdown(self) -> str:
        """The report as Markdown tables (what ``ctx-memory analytics`` prints)."""
        return _markdown(self)


# --------------------------------------------------------------------------- markdown


def _cell(value: object) -> str:
    """A Markdown table cell: ``|`` escaped, line breaks and control characters as spaces."""
    text = "" if value is None else str(value)
    text = "".join(" " if ord(c) < 32 or 0x7F <= ord(c) < 0xA0 else c for c in text)
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|",
    ]
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return [*lines, ""]


def _markdown(report: AnalyticsReport) -> str:
    filters = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("since", _iso(report.since)),
            ("until", _iso(report.until)),
            ("mode", report.mode),
        )
        if value is not None
    )
    out = [f"# Analytics ({_cell(filters) or 'all sessions'})", ""]
    out += _table(
        ["figure", "value"],
        [
            ("sessions scanned", _num(report.sessions_scanned)),
            ("sessions matched", _num(report.sessions)),
            ("sessions without a turn", _num(report.sessions_empty)),
            ("abandoned after one turn", _num(report.sessions_one_turn)),
            ("abandoned rate", f"{report.abandoned_rate:.1%}"),
            ("turns", _num(report.turns)),
            ("tokens", _num(report.total_tokens)),
        ],
    )
    out += ["## Tokens", ""]
    out += _table(
        ["section", "tokens"], [(k, _num(v)) for k, v in report.tokens_by_section.items()]
    )
    out += _table(
        ["role", "messages", "tokens"],
        [(r, _num(report.messages_by_role[r]), _num(report.tokens_by_role[r])) for r in ROLE_ORDER],
    )
    out += ["## Models and latency (ms)", ""]
    rows: list[Sequence[object]] = [
        (m.model, _num(m.replies), _num(m.latency_ms.count), _num(m.latency_ms.p50),
         _num(m.latency_ms.p90), _num(m.latency_ms.p99))
        for m in report.models
    ]  # fmt: skip
    replies = sum(m.replies for m in report.models)
    for label, total, p in (
        ("all, recorded", _num(replies), report.latency_ms),
        ("all, estimated from timestamps", "", report.latency_estimated_ms),
    ):
        rows.append((label, total, _num(p.count), _num(p.p50), _num(p.p90), _num(p.p99)))
    out += _table(["model", "replies", "timed", "p50", "p90", "p99"], rows)
    s = report.sources
    out += ["## Sources", ""]
    out += _table(
        ["figure", "value"],
        [
            ("fetched items", _num(s.fetched_items)),
            ("fetched URLs", _num(s.fetched_urls)),
            ("used in prompts", _num(s.used_urls)),
            ("cited", _num(s.cited_urls)),
            ("fetched and cited", _num(s.cited_fetched_urls)),
            ("citation rate", f"{s.citation_rate:.1%}"),
        ],
    )
    if s.by_type:
        out += _table(
            ["source type", "items", "URLs", "cited"],
            [
                (t, _num(v["items"]), _num(v["urls"]), _num(v["cited_urls"]))
                for t, v in s.by_type.items()
            ],
        )
    if report.tools:
        out += ["## Tools", ""]
        out += _table(
            ["tool", "calls", "results", "errors"],
            [(t.tool, _num(t.calls), _num(t.results), _num(t.errors)) for t in report.tools],
        )
    out += ["## Modes", ""]
    out += _table(["mode", "sessions"], [(k, _num(v)) for k, v in report.modes.items()])
    if report.days:
        out += ["## Per day (UTC)", ""]
        if report.days_sparse:
            out += [SPARSE_DAYS_NOTE, ""]
        out += _table(
            ["date", "sessions", "turns"],
            [(d.date, _num(d.sessions), _num(d.turns)) for d in report.days],
        )
    return "\n".join(out).rstrip() + "\n"
