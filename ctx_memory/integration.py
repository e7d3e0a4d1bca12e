"""ContextIntegration: the bridge between web requests and the ContextManager (seed 001).

It reads the session id and mode from whatever the web framework hands over — a Django or
DRF request, a Starlette/FastAPI request, a Flask request, or a plain mapping — and turns
search results and scraped page text into fetched-context items.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ctx_memory.errors import InvalidSessionIdError, ValidationError
from ctx_memory.manager import ContextManager, get_context_manager
from ctx_memory.schema import ContextMode

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["ContextIntegration", "get_context_integration", "reset_context_integration"]

SESSION_KEYS = ("session_id", "sessionId", "session")
SESSION_HEADERS = ("X-Session-ID", "X-Session-Id", "x-session-id")
_MAPPING_ATTRS = ("GET", "POST", "data", "query_params", "args", "form", "json")


def _sources(request: Any) -> list[Mapping[str, Any]]:
    """The mappings of a request to look parameters up in, most specific first."""
    if isinstance(request, Mapping):
        return [request]
    found: list[Mapping[str, Any]] = []
    for attr in _MAPPING_ATTRS:
        value = getattr(request, attr, None)
        if isinstance(value, Mapping):
            found.append(value)
    headers = getattr(request, "headers", None)
    if headers is not None and hasattr(headers, "get"):
        found.append({key: headers.get(key) for key in SESSION_HEADERS if headers.get(key)})
    return found


def _lookup(request: Any, keys: Sequence[str]) -> Any:
    for source in _sources(request):
        for key in keys:
            value = source.get(key)
            if value not in (None, ""):
                return value
    return None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class ContextIntegration:
    """Request parsing and source formatting on top of a ContextManager.

    Args:
        manager: The manager to write to (default: :func:`get_context_manager`).

    Example:
        .. code-block:: python

            from ctx_memory import ContextIntegration, ContextManager

            integration = ContextIntegration(ContextManager())
            request = {"session_id": "s1", "mode": "research"}
            session_id = integration.get_session_id(request)
            integration.add_search_results(session_id, [
                {"title": "Latest News", "snippet": "...", "url": "https://news.example",
                 "body": "Full text"},
            ])
            item = integration.manager.get_fetched_context("s1")["web_search"][0]
            assert item["extracted_data"]["title"] == "Latest News"
    """

    def __init__(self, manager: ContextManager | None = None) -> None:
        self.manager = manager if manager is not None else get_context_manager()

    def get_session_id(self, request: Any, default: str | None = None) -> str:
        """The session id from a request or mapping.

        Looks at ``session_id`` / ``sessionId`` / ``session`` parameters (query, form, JSON
        body or mapping keys), then the ``X-Session-ID`` header, then the framework
        session (``request.session.session_key`` or ``request.session["session_id"]``).

        Raises:
            InvalidSessionIdError: None was found and no ``default`` was given.
        """
        value = _lookup(request, (*SESSION_KEYS, *SESSION_HEADERS))
        if value is None and not isinstance(request, Mapping):
            session = getattr(request, "session", None)
            value = getattr(session, "session_key", None)
            if value is None and isinstance(session, Mapping):
                value = session.get("session_id")
        if value is None:
            value = default
        if value is None:
            msg = (
                "no session id in the request "
                "(session_id parameter, X-Session-ID header or session)"
            )
            raise InvalidSessionIdError(msg)
        return str(value)

    def get_mode(self, request: Any) -> ContextMode:
        """The context mode: a ``mode`` parameter, else ``research``/``thinking`` flags."""
        value = _lookup(request, ("mode", "context_mode"))
        if value is not None:
            try:
                return ContextMode(str(value).lower())
            except ValueError:
                modes = ", ".join(m.value for m in ContextMode)
                msg = f"unknown mode {value!r}: expected one of {modes}"
                raise ValidationError(msg) from None
        if _truthy(_lookup(request, ("research", "deep_research"))):
            return ContextMode.RESEARCH
        if _truthy(_lookup(request, ("thinking",))):
            return ContextMode.THINKING
        return ContextMode.NORMAL

    def prepare_request(self, request: Any) -> str:
        """Record the request's mode, current URL and user time zone; return the session id."""
        session_id = self.get_session_id(request)
        fields: dict[str, Any] = {"mode": self.get_mode(request)}
        url = _lookup(request, ("current_url", "url", "page_url"))
        if url:
            fields["current_url"] = str(url)
        tz = _lookup(request, ("user_timezone", "timezone", "tz"))
        if tz:
            fields["user_timezone"] = str(tz)
        user_time = _lookup(request, ("user_time",))
        if user_time:
            fields["user_time"] = str(user_time)
        self.manager.update_metadata(session_id, **fields)
        return session_id

    @staticmethod
    def search_result_items(
        results: Sequence[Mapping[str, Any]], *, source_type: str = "web_search"
    ) -> list[dict[str, Any]]:
        """Turn search results (``title``/``snippet``/``url``/``body``) into fetched items.

        The content is the body when there is one, else the snippet; ``extracted_data``
        keeps title, site name, published date and snippet. Pure: writes nothing.
        """
        items = []
        for index, result in enumerate(results):
            if not isinstance(result, Mapping):
                msg = f"results[{index}] must be a mapping, got {type(result).__name__}"
                raise ValidationError(msg)
            content = result.get("body") or result.get("content") or result.get("snippet") or ""
            extracted = {
                "title": result.get("title"),
                "site_name": result.get("site_name") or result.get("source"),
                "published_date": result.get("published_date") or result.get("date"),
                "snippet": result.get("snippet"),
            }
            items.append(
                {
                    "source_type": source_type,
                    "content": str(content),
                    "url": result.get("url") or result.get("link") or result.get("href"),
                    "extracted_data": {k: v for k, v in extracted.items() if v is not None},
                }
            )
        return items

    def add_search_results(
        self,
        session_id: str,
        results: Sequence[Mapping[str, Any]],
        *,
        source_type: str = "web_search",
        dedupe: bool = True,
    ) -> int:
        """Store search results under ``fetched_context[source_type]``; return how many were new."""
        return self.manager.add_fetched_items(
            session_id, self.search_result_items(results, source_type=source_type), dedupe=dedupe
        )

    async def aadd_search_results(
        self,
        session_id: str,
        results: Sequence[Mapping[str, Any]],
        *,
        source_type: str = "web_search",
        dedupe: bool = True,
    ) -> int:
        """Async :meth:`add_search_results`."""
        return await self.manager.aadd_fetched_items(
            session_id, self.search_result_items(results, source_type=source_type), dedupe=dedupe
        )

    def add_web_content(
        self,
        request: Any = None,
        text_content: str = "",
        current_url: str | None = None,
        source_type: str = "js_scraping",
        *,
        session_id: str | None = None,
        title: str | None = None,
        timestamp: str | datetime | None = None,
    ) -> dict[str, Any]:
        """Store text scraped from the user's page (seed 001); return the stored item.

        The session comes from ``session_id`` or the ``request``; the page URL is also
        recorded as the session's ``current_url``.
        """
        sid = session_id if session_id is not None else self.get_session_id(request)
        extracted = {"title": title} if title else {}
        item = self.manager.add_fetched_context(
            sid,
            source_type,
            text_content,
            url=current_url,
            extracted_data=extracted,
            timestamp=timestamp,
            dedupe=True,
        )
        if current_url:
            self.manager.update_metadata(sid, current_url=current_url)
        return item


_default: ContextIntegration | None = None
_default_lock = threading.Lock()


def get_context_integration() -> ContextIntegration:
    """The process-wide ContextIntegration over :func:`get_context_manager` (seed 001)."""
    global _default  # noqa: PLW0603 - the seed's process-wide singleton
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = ContextIntegration()
    return _default


def reset_context_integration() -> None:
    """Forget the process-wide ContextIntegration."""
    global _default  # noqa: PLW0603
    with _default_lock:
        _default = None
