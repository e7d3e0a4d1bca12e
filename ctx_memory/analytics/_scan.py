"""The store side of analytics: page through the sessions and feed the aggregator."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

from typing_extensions import override

from ctx_memory.analytics._aggregate import Aggregator
from ctx_memory.errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from rich.progress import Progress

    from ctx_memory.analytics._report import AnalyticsReport
    from ctx_memory.manager import ContextManager

__all__ = ["PAGE_SIZE", "analyze", "session_ids"]

logger = logging.getLogger("ctx_memory")

PAGE_SIZE = 1000
"""Session ids asked of the store per ``list_sessions`` page."""

# Stores whose every id already lives in this process: one unpaged listing costs a list
# of references, while each page costs a scan of every id (the in-memory store sorts all
# its ids for each page, so paging 100,000 sessions by 1,000 would cost 100 full sorts).
_LIST_AT_ONCE = frozenset({"memory"})


def session_ids(manager: ContextManager, page_size: int = PAGE_SIZE) -> Iterator[list[str]]:
    """The store's session ids, sorted, one page at a time.

    Pages through ``manager.list_sessions(limit=page_size, cursor=...)``, so at most
    ``page_size`` ids are held at once (an O(page) read on SQLite and Redis). The
    in-memory store, whose ids all live in this process anyway, is listed in one call.
    """
    if manager.store.name in _LIST_AT_ONCE:
        ids = manager.list_sessions()
        if ids:
            yield ids
        return
    cursor: str | None = None
    while True:
        page = manager.list_sessions(limit=page_size, cursor=cursor)
        if page:
            yield page
        if len(page) < page_size:
            return
        cursor = page[-1]


class _Bar:
    """What :func:`analyze` tells the progress bar; does nothing when there is none."""

    def advance(self, sessions: int) -> None:
        """``sessions`` more were read."""

    def total(self, sessions: int) -> None:
        """The store holds this many (known only when it is listed in one call)."""


class _RichBar(_Bar):
    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task = progress.add_task("analytics", total=None)

    @override
    def advance(self, sessions: int) -> None:
        self._progress.advance(self._task, sessions)

    @override
    def total(self, sessions: int) -> None:
        self._progress.update(self._task, total=sessions)


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[_Bar]:
    """A rich progress bar on stderr, shown only when stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield _Bar()
        return
    from rich.console import Console  # noqa: PLC0415 - rich is only needed for the bar
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("analysing sessions"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(show_speed=True),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        yield _RichBar(progress)


def analyze(
    manager: ContextManager,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    mode: str | None = None,
    progress: bool = False,
) -> AnalyticsReport:
    """Read every session of the manager's store once and return the figures.

    Streams: one page of ids and one session document at a time
    (``manager.list_sessions(limit=..., cursor=...)`` then ``manager.get_context``),
    never the whole store. A session deleted or expired between listing and reading is
    passed over. Sessions are selected as :class:`~ctx_memory.analytics.Aggregator`
    describes: by when they started (``since <= start < until``, naive datetimes are
    UTC) and by ``metadata.mode``.

    Args:
        manager: The manager whose store to read.
        since: Only sessions that started at or after this instant.
        until: Only sessions that started before this instant.
        mode: Only sessions with this ``metadata.mode``.
        progress: Show a progress bar on stderr (when stderr is a terminal).

    Returns:
        The report; see :class:`~ctx_memory.analytics.AnalyticsReport`.

    Raises:
        ValueError: ``since`` or ``until`` has no UTC equivalent (its offset takes it out
            of the years 1 to 9999), checked before any session is read.

    Example:
        .. code-block:: python

            from datetime import datetime
            from ctx_memory import ContextManager
            from ctx_memory.analytics import analyze

            with ContextManager() as manager:
                manager.add_user_message("a", "hello", timestamp="2026-03-01T10:00:00+00:00")
                manager.add_user_message("b", "hello", timestamp="2026-03-02T10:00:00+00:00")
                report = analyze(manager, since=datetime(2026, 3, 2))
                assert (report.sessions_scanned, report.sessions) == (2, 1)
    """
    aggregator = Aggregator(since=since, until=until, mode=mode)
    with _progress_bar(progress) as bar:
        for page in session_ids(manager):
            if manager.store.name in _LIST_AT_ONCE:
                bar.total(len(page))
            for session_id in page:
                try:
                    document = manager.get_context(session_id)
                except ValidationError as e:  # an id stored before today's rules refused it
                    logger.warning("ctx_memory analytics: session %r unreadable: %s", session_id, e)
                    aggregator.unreadable += 1
                    continue
                aggregator.add(document)
            bar.advance(len(page))
    return aggregator.report()
