"""The report as HTML: tables and inline SVG charts drawn here (no JS, no external assets).

Two chart kinds cover every figure: :func:`bar_chart` (horizontal bars, one or two series
per row, for counts by name) and :func:`line_chart` (one or more series over days).
Every label comes from the store, so every one goes through :func:`html.escape`, in SVG
text and in ``<title>`` tooltips alike.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from ctx_memory.analytics._report import SPARSE_DAYS_NOTE

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ctx_memory.analytics._report import AnalyticsReport, Percentiles

__all__ = ["bar_chart", "line_chart", "render_report_html"]

PALETTE = ("#2f7ebc", "#e08a1e", "#3a9a5b", "#7b5ea7", "#d9534f", "#b8860b")
MAX_BARS = 12
"""Rows a bar chart shows; the rest are summed into one ``(N more)`` row."""

_CSS = """
.ctxm-an{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 font-size:13px;line-height:1.45;color:#1f2328;background:#fff;border:1px solid #d0d7de;
 border-radius:8px;padding:12px 16px;max-width:1000px}
.ctxm-an h3{margin:0 0 6px;font-size:16px}
.ctxm-an h4{margin:16px 0 6px;font-size:13px;text-transform:uppercase;letter-spacing:.04em;
 color:#57606a;border-bottom:1px solid #eaeef2;padding-bottom:2px}
.ctxm-an table{border-collapse:collapse;margin:2px 0}
.ctxm-an th,.ctxm-an td{text-align:left;padding:3px 10px;border-bottom:1px solid #eaeef2}
.ctxm-an th{color:#57606a;font-weight:600}
.ctxm-an .num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ctxm-an .muted{color:#6e7781}
.ctxm-an .grid{display:flex;flex-wrap:wrap;gap:8px 28px}
.ctxm-an .grid>div{flex:1 1 420px;min-width:0}
.ctxm-an svg{display:block;max-width:100%;height:auto}
.ctxm-an svg text{font-size:11px;fill:#1f2328}
.ctxm-an .sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;
 vertical-align:-1px}
.ctxm-an .legend span{margin-right:14px;white-space:nowrap}
"""


def _e(value: object) -> str:
    """Escape any value for HTML or SVG text and for a quoted attribute."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _clip(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _legend(series: Sequence[str]) -> str:
    spans = "".join(
        f'<span><i class="sw" style="background:{PALETTE[i % len(PALETTE)]}"></i>{_e(name)}</span>'
        for i, name in enumerate(series)
    )
    return f'<div class="legend muted">{spans}</div>'


def _top(rows: Sequence[tuple[str, Sequence[float]]]) -> list[tuple[str, Sequence[float]]]:
    """At most :data:`MAX_BARS` rows; the others summed into one."""
    if len(rows) <= MAX_BARS:
        return list(rows)
    kept, rest = list(rows[: MAX_BARS - 1]), rows[MAX_BARS - 1 :]
    width = len(rows[0][1])
    summed = [sum(r[1][i] for r in rest) for i in range(width)]
    return [*kept, (f"({len(rest)} more)", summed)]


def bar_chart(
    rows: Sequence[tuple[str, Sequence[float]]],
    *,
    series: Sequence[str],
    title: str,
    width: int = 460,
) -> str:
    """Horizontal bars: one row per label, one bar per series in each row.

    Each series is scaled to its own largest value, and every bar is labelled with its
    value.

    Args:
        rows: ``(label, values)`` pairs, one value per series, drawn in this order.
        series: The series names (a legend is drawn when there are two or more).
        title: The chart's accessible title.
        width: The SVG's width in pixels (it scales down with its container).

    Returns:
        An ``<svg>`` element (with its legend), or a short note when there is no row.

    Example:
        .. code-block:: python

            from ctx_memory.analytics import bar_chart

            svg = bar_chart([("<b>", [3])], series=["replies"], title="Models")
            assert "&lt;b&gt;" in svg and "<b>" not in svg
    """
    if not rows:
        return f'<p class="muted">{_e(title)}: nothing recorded.</p>'
    rows = _top(rows)
    label_w, value_w, bar_h, gap = 170, 60, 14, 8
    group_h = bar_h * len(series) + gap
    height = group_h * len(rows) + 4
    # Each series on its own scale (messages and tokens share a chart).
    peaks = [max((values[i] for _, values in rows), default=0) or 1 for i in range(len(series))]
    room = width - label_w - value_w
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>'
    ]
    for row, (label, values) in enumerate(rows):
        top = row * group_h + 2
        middle = top + bar_h * len(series) / 2 + 4
        parts.append(
            f'<text x="{label_w - 6}" y="{middle:.1f}" text-anchor="end">'
            f"<title>{_e(label)}</title>{_e(_clip(label))}</text>"
        )
        for i, value in enumerate(values):
            y = top + i * bar_h
            length = max(1.0, room * value / peaks[i]) if value > 0 else 0.0
            color = PALETTE[i % len(PALETTE)]
            tip = f"{label} · {series[i]}: {_fmt(value)}"
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{bar_h - 2}" '
                f'fill="{color}" rx="2"><title>{_e(tip)}</title></rect>'
                f'<text x="{label_w + length + 4:.1f}" y="{y + bar_h - 4}">{_fmt(value)}</text>'
            )
    parts.append("</svg>")
    legend = _legend(series) if len(series) > 1 else ""
    return legend + "".join(parts)


def line_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    width: int = 920,
    height: int = 200,
) -> str:
    """Lines over ordered labels (days): one polyline per series, dots on each point.

    Args:
        labels: The x-axis labels, in order (the first and last are printed).
        series: Name → one value per label.
        title: The chart's accessible title.
        width: The SVG's width in pixels (it scales down with its container).
        height: The SVG's height in pixels.

    Returns:
        An ``<svg>`` element with its legend, or a short note when there is no label.
    """
    if not labels:
        return f'<p class="muted">{_e(title)}: nothing recorded.</p>'
    left, right, top, bottom = 48, 12, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((v for values in series.values() for v in values), default=0) or 1
    n = len(labels)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h - plot_h * v / peak

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#d0d7de"/>',
        f'<line x1="{left}" y1="{top}" x2="{left + plot_w}" y2="{top}" stroke="#eaeef2"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{_fmt(peak)}</text>',
        f'<text x="{left - 6}" y="{top + plot_h + 4}" text-anchor="end">0</text>',
        f'<text x="{left}" y="{height - 6}">{_e(labels[0])}</text>',
    ]
    if n > 1:
        parts.append(
            f'<text x="{left + plot_w}" y="{height - 6}" text-anchor="end">{_e(labels[-1])}</text>'
        )
    dots = n <= 120
    for s, (name, values) in enumerate(series.items()):
        color = PALETTE[s % len(PALETTE)]
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        if dots:
            parts.extend(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}">'
                f"<title>{_e(f'{labels[i]} · {name}: {_fmt(v)}')}</title></circle>"
                for i, v in enumerate(values)
            )
    parts.append("</svg>")
    return _legend(list(series)) + "".join(parts)


def _kv_table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f'<tr><th>{_e(k)}</th><td class="num">{_e(v)}</td></tr>' for k, v in rows)
    return f"<table>{body}</table>"


def _latency_row(name: str, replies: int | None, p: Percentiles) -> str:
    values = (
        "" if replies is None else _fmt(replies),
        *map(_fmt, (p.count, p.p50, p.p90, p.p99, p.max)),
    )
    cells = "".join(f'<td class="num">{v}</td>' for v in values)
    return f"<tr><td>{_e(name)}</td>{cells}</tr>"


def _latency_table(report: AnalyticsReport) -> str:
    """Replies and latency percentiles per model; ``timed`` is how many had a latency."""
    heads = ("replies", "timed", "p50", "p90", "p99", "max")
    head = "".join(f'<th class="num">{h}</th>' for h in heads)
    rows = [_latency_row(m.model, m.replies, m.latency_ms) for m in report.models]
    replies = sum(m.replies for m in report.models)
    rows.append(_latency_row("all, recorded", replies, report.latency_ms))
    rows.append(_latency_row("all, estimated from timestamps", None, report.latency_estimated_ms))
    return f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


def _section(title: str, *body: str) -> str:
    return f"<div><h4>{_e(title)}</h4>{''.join(body)}</div>"


def render_report_html(report: AnalyticsReport) -> str:
    """The whole report as one self-contained HTML fragment (a ``<div>`` with its style)."""
    d = report.as_dict()
    filters = ", ".join(f"{k} {v}" for k, v in d["filters"].items() if v is not None)
    summary = _kv_table(
        [
            ("sessions (matched / scanned)", f"{report.sessions:,} / {report.sessions_scanned:,}"),
            ("turns", f"{report.turns:,}"),
            ("sessions without a turn", f"{report.sessions_empty:,}"),
            (
                "abandoned after one turn",
                f"{report.sessions_one_turn:,} ({report.abandoned_rate:.1%})",
            ),
            ("tokens stored", f"{report.total_tokens:,}"),
            ("replies citing a source", f"{report.sources.replies_citing:,}"),
        ]
    )
    days = [day.date for day in report.days]
    over_time = line_chart(
        days,
        {
            "sessions started": [day.sessions for day in report.days],
            "turns": [day.turns for day in report.days],
        },
        title="Sessions and turns per day (UTC)",
    )
    if report.days_sparse:
        over_time += f'<p class="muted">{_e(SPARSE_DAYS_NOTE)}</p>'
    sections = bar_chart(
        [(k, [v]) for k, v in report.tokens_by_section.items()],
        series=["tokens"],
        title="Tokens by section",
    )
    roles = bar_chart(
        [
            (r, [report.messages_by_role[r], report.tokens_by_role[r]])
            for r in report.tokens_by_role
        ],
        series=["messages", "tokens"],
        title="Messages and tokens by role",
    )
    models = bar_chart(
        [(m.model, [m.replies]) for m in report.models], series=["replies"], title="Models"
    )
    s = report.sources
    sources = bar_chart(
        [(t, [v["urls"], v["cited_urls"]]) for t, v in s.by_type.items()],
        series=["fetched URLs", "cited"],
        title="Sources fetched vs cited, by source type",
    )
    source_table = _kv_table(
        [
            ("fetched items", f"{s.fetched_items:,}"),
            ("fetched URLs", f"{s.fetched_urls:,}"),
            ("used in prompts", f"{s.used_urls:,}"),
            ("cited", f"{s.cited_urls:,}"),
            ("fetched and cited", f"{s.cited_fetched_urls:,} ({s.citation_rate:.1%})"),
        ]
    )
    tools = bar_chart(
        [(t.tool, [t.calls, t.results, t.errors]) for t in report.tools],
        series=["calls", "results", "errors"],
        title="Tools",
    )
    modes = bar_chart(
        [(k, [v]) for k, v in report.modes.items()], series=["sessions"], title="Modes"
    )
    heading = f"Analytics{' · ' + _e(filters) if filters else ''}"
    return (
        f'<div class="ctxm-an"><style>{_CSS}</style><h3>{heading}</h3>'
        f'<div class="muted">generated {_e(report.generated_at)}</div>'
        f"{_section('Summary', summary)}"
        f"{_section('Sessions and turns per day (UTC)', over_time)}"
        '<div class="grid">'
        f"{_section('Tokens by section', sections)}"
        f"{_section('Messages and tokens by role', roles)}"
        f"{_section('Models', models)}"
        f"{_section('Latency (ms)', _latency_table(report))}"
        f"{_section('Sources fetched vs cited', source_table, sources)}"
        f"{_section('Tools', tools)}"
        f"{_section('Modes', modes)}"
        "</div></div>"
    )
