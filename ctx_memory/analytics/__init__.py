"""Analytics across sessions: what the store holds, in figures and charts.

:func:`analyze` streams over a manager's store (a page of session ids and one session
document at a time) and feeds an :class:`Aggregator`, which is pure: it adds up
documents and knows nothing of stores. The result, an :class:`AnalyticsReport`, holds
sessions and turns per day, tokens by role and by section, models with latency
percentiles, sources fetched against cited, tools, modes and sessions abandoned after one
turn; it renders as JSON (:meth:`~AnalyticsReport.as_dict`), as a self-contained HTML
fragment with inline SVG charts (:meth:`~AnalyticsReport.to_html`) and as Markdown
(:meth:`~AnalyticsReport.to_markdown`). ``ctx-memory analytics`` is the command line.

What each figure means and how it is computed: the guide's *Analytics* page.
"""

from __future__ import annotations

from ctx_memory.analytics._aggregate import NO_MODE, UNKNOWN, Aggregator
from ctx_memory.analytics._charts import bar_chart, line_chart
from ctx_memory.analytics._report import (
    MAX_DENSE_DAYS,
    SCHEMA,
    AnalyticsReport,
    DayCount,
    ModelUsage,
    Percentiles,
    SourceUsage,
    ToolUsage,
    percentiles,
)
from ctx_memory.analytics._scan import PAGE_SIZE, analyze, session_ids

__all__ = [
    "MAX_DENSE_DAYS",
    "NO_MODE",
    "PAGE_SIZE",
    "SCHEMA",
    "UNKNOWN",
    "Aggregator",
    "AnalyticsReport",
    "DayCount",
    "ModelUsage",
    "Percentiles",
    "SourceUsage",
    "ToolUsage",
    "analyze",
    "bar_chart",
    "line_chart",
    "percentiles",
    "session_ids",
]
