"""The aggregator: session documents in, an :class:`AnalyticsReport` out (pure, no I/O)."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, overload

from ctx_memory.analytics._report import (
    MAX_DENSE_DAYS,
    ROLE_ORDER,
    AnalyticsReport,
    DayCount,
    ModelUsage,
    SourceUsage,
    ToolUsage,
    percentiles,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["NO_MODE", "UNKNOWN", "Aggregator", "as_utc"]

UNKNOWN = "(unknown)"
"""The model (or tool) name counted for a reply (or tool result) that records none."""

NO_MODE = "(none)"
"""The mode counted for a session whose ``metadata.mode`` is missing or null."""

_UTC_TEXT = re.compile(
    r"(\d{4}-[01]\d-[0-3]\d)T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?(?:Z|\+00:00)",
    re.ASCII,
)
"""A UTC timestamp as the manager writes it (``now_iso``): its date needs no conversion."""

_VALID_DAYS: dict[str, bool] = {}
"""Whether each ``YYYY-MM-DD`` seen is a real date (a cache of at most 4,096 days)."""


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
@overload
def as_utc(value: datetime | None) -> datetime | None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime (a naive one is taken to be UTC already).

    Raises:
        ValueError: ``value`` has no UTC equivalent: its offset takes it out of the years
            1 to 9999 a datetime holds (``0001-01-01T00:00:00+05:00`` is in year 0 in UTC).
    """
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        msg = f"{value.isoformat()} is outside the range of UTC datetimes (years 1 to 9999)"
        raise ValueError(msg) from None


def _parse(value: object) -> datetime | None:
    """An ISO-8601 timestamp as an aware UTC datetime; ``None`` if it is not one.

    A timestamp whose offset takes it out of UTC's range is not one either.
    """
    if not isinstance(value, str):
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _day(value: object) -> str | None:
    """The UTC date (``YYYY-MM-DD``) of an ISO timestamp; ``None`` if it is not one."""
    match = _UTC_TEXT.fullmatch(value) if isinstance(value, str) else None
    if match is not None:  # already UTC: what the manager writes (now_iso)
        day = match[1]
        valid = _VALID_DAYS.get(day)
        if valid is None:
            valid = _parse(day) is not None
            if len(_VALID_DAYS) < 4096:
                _VALID_DAYS[day] = valid
        return day if valid else None
    parsed = _parse(value)
    return None if parsed is None else parsed.date().isoformat()


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _latency(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _url(entry: object) -> str | None:
    """The URL of a ``sources_used`` entry: a string, or a dict with ``url``."""
    if isinstance(entry, str):
        return entry or None
    if isinstance(entry, dict):
        url = entry.get("url")
        return url if isinstance(url, str) and url else None
    return None


def _bump(counts: dict[str, int], key: str, by: int = 1) -> None:
    counts[key] = counts.get(key, 0) + by


def _ranked(counts: Mapping[str, int]) -> dict[str, int]:
    """``counts`` most first, ties by name: a stable order for JSON and charts."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class Aggregator:
    """Adds up session documents into an :class:`AnalyticsReport`; touches no store.

    Feed it documents (what :meth:`~ctx_memory.manager.ContextManager.get_context`
    returns) with :meth:`add`, then call :meth:`report`. The filters select sessions: a
    session *starts* with its first message (its ``timestamp``), or, without one, when it
    was created (``metadata.created_at``); it is counted when ``since <= start < until``
    and, with ``mode``, when ``metadata.mode == mode``. A selected session counts whole
    (all its messages and sources). Timestamps without a time zone are taken as UTC.

    Args:
        since: Keep sessions that started at or after this instant.
        until: Keep sessions that started before this instant.
        mode: Keep sessions whose ``metadata.mode`` is this (``normal``, ``thinking``,
            ``research`` or any other string).

    Raises:
        ValueError: ``since`` or ``until`` has no UTC equivalent (its offset takes it out
            of the years 1 to 9999).

    Example:
        .. code-block:: python

            from ctx_memory.analytics import Aggregator

            aggregator = Aggregator(mode="research")
            aggregator.add({
                "metadata": {"mode": "research", "created_at": "2026-01-05T09:00:00+00:00"},
                "conversation_history": [
                    {"role": "user", "content": "hi", "timestamp": "2026-01-05T09:00:01+00:00",
                     "token_count": 8},
                ],
            })
            report = aggregator.report()
            assert (report.sessions, report.turns, report.sessions_one_turn) == (1, 1, 1)
            assert report.days[0].date == "2026-01-05"
    """

    def __init__(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        mode: str | None = None,
    ) -> None:
        self.since = as_utc(since)
        self.until = as_utc(until)
        self.mode = mode
        self.scanned = 0
        self.unreadable = 0
        self.sessions = 0
        self.empty = 0
        self.one_turn = 0
        self.turns = 0
        self.skipped_timestamps = 0
        self.messages_by_role: dict[str, int] = dict.fromkeys(ROLE_ORDER, 0)
        self.tokens_by_role: dict[str, int] = dict.fromkeys(ROLE_ORDER, 0)
        self.system_tokens = 0
        self.fetched_tokens: dict[str, int] = {}
        self.sessions_by_day: dict[str, int] = {}
        self.turns_by_day: dict[str, int] = {}
        self.model_replies: dict[str, int] = {}
        self.model_latency: dict[str, list[float]] = {}
        self.estimated_latency: list[float] = []
        self.modes: dict[str, int] = {}
        self.tool_calls: dict[str, int] = {}
        self.tool_results: dict[str, int] = {}
        self.tool_errors: dict[str, int] = {}
        self.fetched_items: dict[str, int] = {}
        self.fetched_urls = 0
        self.fetched_urls_by_type: dict[str, int] = {}
        self.cited_by_type: dict[str, int] = {}
        self.used_urls = 0
        self.cited_urls = 0
        self.cited_fetched = 0
        self.citations = 0
        self.replies_with_sources = 0
        self.replies_citing = 0

    # ------------------------------------------------------------------ selection

    def _start(self, metadata: Mapping[str, Any], history: list[Any]) -> datetime | None:
        """The first message's timestamp; for a session without one, ``created_at``."""
        first = history[0] if history and isinstance(history[0], dict) else None
        start = _parse(first.get("timestamp")) if first is not None else None
        return start if start is not None else _parse(metadata.get("created_at"))

    def selects(self, document: Mapping[str, Any]) -> bool:
        """Whether the filters keep this session (without counting it)."""
        return self._select(document) is not False

    def _select(self, document: Mapping[str, Any]) -> datetime | bool | None:
        """``False`` if filtered out, else the session's start (``None`` if unknown)."""
        metadata = document.get("metadata") or {}
        if self.mode is not None and metadata.get("mode") != self.mode:
            return False
        start = self._start(metadata, document.get("conversation_history") or [])
        if self.since is not None or self.until is not None:
            if start is None:
                return False
            if self.since is not None and start < self.since:
                return False
            if self.until is not None and start >= self.until:
                return False
        return start

    # ------------------------------------------------------------------ counting

    def add(self, document: Mapping[str, Any]) -> bool:
        """Count one session document if the filters select it; return whether they did.

        An empty mapping (a session deleted or expired between listing and reading) is
        not counted and not scanned.
        """
        if not document:
            return False
        self.scanned += 1
        start = self._select(document)
        if start is False:
            return False
        metadata = document.get("metadata") or {}
        self.sessions += 1
        mode = metadata.get("mode")
        _bump(self.modes, mode if isinstance(mode, str) else NO_MODE)
        self.system_tokens += _int(metadata.get("system_prompt_tokens"))
        if isinstance(start, datetime):
            _bump(self.sessions_by_day, start.date().isoformat())
        fetched_urls = self._add_fetched(document.get("fetched_context") or {})
        turns = self._add_history(document.get("conversation_history") or [], fetched_urls)
        self.turns += turns
        if turns == 0:
            self.empty += 1
        elif turns == 1:
            self.one_turn += 1
        return True

    def add_all(self, documents: Iterable[Mapping[str, Any]]) -> None:
        """:meth:`add` each document."""
        for document in documents:
            self.add(document)

    def _add_fetched(self, fetched: Mapping[str, Any]) -> dict[str, list[str]]:
        """Count fetched items; return the session's fetched URLs with their source types.

        A URL counts once for the session, and once for each source type that fetched it
        (a page the extension scraped that a search found too is in both types' ``urls``).
        """
        types_of: dict[str, list[str]] = {}
        for source_type, items in fetched.items():
            if not isinstance(items, list):
                continue
            _bump(self.fetched_items, source_type, len(items))
            tokens = 0
            urls: set[str] = set()
            for item in items:
                if not isinstance(item, dict):
                    continue
                tokens += _int(item.get("token_count"))
                url = item.get("url")
                if isinstance(url, str) and url and url not in urls:
                    urls.add(url)
                    types_of.setdefault(url, []).append(source_type)
            _bump(self.fetched_urls_by_type, source_type, len(urls))
            _bump(self.fetched_tokens, source_type, tokens)
        self.fetched_urls += len(types_of)
        return types_of

    def _add_history(self, history: list[Any], fetched_urls: Mapping[str, list[str]]) -> int:
        """Count one session's messages; return its turns (user messages).

        Every counted message's ``timestamp`` is read once, whatever its role: one that
        is there but unreadable adds one to ``skipped_timestamps``.
        """
        turns = 0
        used: set[str] = set()
        cited: set[str] = set()
        call_names: dict[str, str] = {}
        messages_by_role = self.messages_by_role
        tokens_by_role = self.tokens_by_role
        turns_by_day = self.turns_by_day
        previous: Mapping[str, Any] | None = None
        for message in history:
            if not isinstance(message, dict):  # not a message record: nothing to count
                continue
            role = message.get("role")
            if role not in messages_by_role:
                previous = message
                continue
            messages_by_role[role] += 1
            tokens = message.get("token_count")
            if type(tokens) is int:  # the hot loop: no call for the common case
                tokens_by_role[role] += tokens
            stamp = message.get("timestamp")
            if role == "user":
                turns += 1
                day = _day(stamp)
                if day is not None:
                    turns_by_day[day] = turns_by_day.get(day, 0) + 1
                elif stamp is not None:
                    self.skipped_timestamps += 1
            elif stamp is not None and _parse(stamp) is None:  # other roles: is it readable?
                self.skipped_timestamps += 1
            if role == "assistant":
                self._add_reply(message, previous, used, cited, call_names)
            elif role == "tool":
                self._add_tool_result(message, call_names)
            previous = message
        self.used_urls += len(used)
        self._add_cited(cited, fetched_urls)
        return turns

    def _add_cited(self, cited: set[str], fetched_urls: Mapping[str, list[str]]) -> None:
        """A session's cited URLs; a fetched one counts for each type that fetched it."""
        self.cited_urls += len(cited)
        for url in cited:
            source_types = fetched_urls.get(url)
            if source_types is not None:
                self.cited_fetched += 1
                for source_type in source_types:
                    _bump(self.cited_by_type, source_type)

    def _add_reply(
        self,
        message: Mapping[str, Any],
        previous: Mapping[str, Any] | None,
        used: set[str],
        cited: set[str],
        call_names: dict[str, str],
    ) -> None:
        metadata = message.get("metadata") or {}
        model = metadata.get("model")
        if not isinstance(model, str) or not model:
            response = message.get("response_metadata") or {}
            model = response.get("model_name") or response.get("model")
            if not isinstance(model, str) or not model:
                model = UNKNOWN
        _bump(self.model_replies, model)
        latency = _latency(metadata.get("response_time_ms"))
        if latency is not None:
            self.model_latency.setdefault(model, []).append(latency)
        elif previous is not None and previous.get("role") == "user":
            self._estimate(previous.get("timestamp"), message.get("timestamp"))
        self._add_sources(metadata, used, cited)
        self._add_calls(message, metadata, call_names)

    def _add_sources(self, metadata: Mapping[str, Any], used: set[str], cited: set[str]) -> None:
        """A reply's ``sources_used`` (URLs or ``{"url"}`` dicts) and ``cited`` numbers."""
        sources = metadata.get("sources_used")
        urls = [_url(s) for s in sources] if isinstance(sources, list) else []
        if urls:
            self.replies_with_sources += 1
            used.update(u for u in urls if u is not None)
        numbers = metadata.get("cited")
        if not isinstance(numbers, list) or not numbers:
            return
        self.replies_citing += 1
        self.citations += len(numbers)
        for n in numbers:
            if isinstance(n, int) and 1 <= n <= len(urls):
                url = urls[n - 1]
                if url is not None:
                    cited.add(url)

    def _add_calls(
        self, message: Mapping[str, Any], metadata: Mapping[str, Any], call_names: dict[str, str]
    ) -> None:
        """Tool calls: the reply's ``tool_calls``, else its ``metadata.tools_used``."""
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            for call in calls:
                name = call.get("name") if isinstance(call, dict) else None
                if isinstance(name, str) and name:
                    _bump(self.tool_calls, name)
                    call_id = call.get("id")
                    if isinstance(call_id, str):
                        call_names[call_id] = name
            return
        tools = metadata.get("tools_used")
        if isinstance(tools, list):
            for name in tools:
                if isinstance(name, str) and name:
                    _bump(self.tool_calls, name)

    def _estimate(self, asked: object, answered: object) -> None:
        """The gap between a question and its reply (an unreadable timestamp: none).

        :meth:`_add_history` has counted an unreadable timestamp already, once.
        """
        start, end = _parse(asked), _parse(answered)
        if start is None or end is None:
            return
        gap = (end - start).total_seconds() * 1000
        if gap >= 0:
            self.estimated_latency.append(round(gap, 3))

    def _add_tool_result(self, message: Mapping[str, Any], call_names: Mapping[str, str]) -> None:
        name = message.get("name")
        if not isinstance(name, str) or not name:
            call_id = message.get("tool_call_id")
            name = call_names.get(call_id, UNKNOWN) if isinstance(call_id, str) else UNKNOWN
        _bump(self.tool_results, name)
        if message.get("status") == "error":
            _bump(self.tool_errors, name)

    # ------------------------------------------------------------------ result

    def _days(self) -> tuple[DayCount, ...]:
        """Every day from the first to the last active one, or only the active days.

        Only the active days when they span over :data:`MAX_DENSE_DAYS`: the list's length
        then follows the data, not how far apart its oldest and newest dates are.
        """
        active = sorted(self.sessions_by_day.keys() | self.turns_by_day.keys())
        if not active:
            return ()
        first, last = date.fromisoformat(active[0]), date.fromisoformat(active[-1])
        span = (last - first).days + 1
        if span <= MAX_DENSE_DAYS:
            active = [(first + timedelta(days=offset)).isoformat() for offset in range(span)]
        return tuple(
            DayCount(key, self.sessions_by_day.get(key, 0), self.turns_by_day.get(key, 0))
            for key in active
        )

    def report(self, *, generated_at: datetime | None = None) -> AnalyticsReport:
        """The figures counted so far (the aggregator can go on counting afterwards)."""
        all_latency = [v for values in self.model_latency.values() for v in values]
        models = tuple(
            ModelUsage(name, replies, percentiles(self.model_latency.get(name, [])))
            for name, replies in _ranked(self.model_replies).items()
        )
        tools = tuple(
            ToolUsage(
                name,
                self.tool_calls.get(name, 0),
                self.tool_results.get(name, 0),
                self.tool_errors.get(name, 0),
            )
            for name in _ranked(
                {n: self.tool_calls.get(n, 0) for n in self.tool_calls.keys() | self.tool_results}
            )
        )
        by_type = {
            t: {
                "items": items,
                "urls": self.fetched_urls_by_type.get(t, 0),
                "cited_urls": self.cited_by_type.get(t, 0),
            }
            for t, items in _ranked(self.fetched_items).items()
        }
        sources = SourceUsage(
            fetched_items=sum(self.fetched_items.values()),
            fetched_urls=self.fetched_urls,
            used_urls=self.used_urls,
            cited_urls=self.cited_urls,
            cited_fetched_urls=self.cited_fetched,
            citations=self.citations,
            replies_with_sources=self.replies_with_sources,
            replies_citing=self.replies_citing,
            by_type=by_type,
        )
        now = as_utc(generated_at) or datetime.now(UTC)
        return AnalyticsReport(
            since=self.since,
            until=self.until,
            mode=self.mode,
            generated_at=now.isoformat(),
            sessions_scanned=self.scanned,
            sessions_unreadable=self.unreadable,
            sessions=self.sessions,
            sessions_empty=self.empty,
            sessions_one_turn=self.one_turn,
            turns=self.turns,
            messages_by_role=dict(self.messages_by_role),
            tokens_by_role=dict(self.tokens_by_role),
            tokens_by_section={
                "system_prompt": self.system_tokens,
                "history": sum(self.tokens_by_role.values()),
                "fetched_sources": sum(self.fetched_tokens.values()),
            },
            tokens_by_source_type=_ranked(self.fetched_tokens),
            days=self._days(),
            models=models,
            latency_ms=percentiles(all_latency),
            latency_estimated_ms=percentiles(self.estimated_latency),
            sources=sources,
            tools=tools,
            modes=_ranked(self.modes),
            skipped_timestamps=self.skipped_timestamps,
        )
