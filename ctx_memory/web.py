"""ContextIntegration: the bridge between web requests and the ContextManager (seed 001).

It reads the session id, the mode, the page URL, the user's time zone and time from the
request a web framework hands over, and turns search results and scraped page text into
fetched-context items.

Requests are recognised by type, against the classes of frameworks already imported (a
framework that is not installed is never imported): Starlette and FastAPI
(``starlette.requests.HTTPConnection``), Django REST framework
(``rest_framework.request.Request``), Django (``django.http.HttpRequest``), Flask and
Werkzeug (``werkzeug.wrappers.Request``), a plain mapping, or any other object, read through
its ``GET``/``query_params``/``args``, ``headers``, ``json``/``data``, ``POST``/``form`` and
``session`` attributes.

Each value is looked up in this order, and the first non-empty one wins:

1. an explicit argument (``session_id=`` of :meth:`ContextIntegration.add_web_content`);
2. the query string;
3. a header (``X-Session-ID``, ``X-Context-Mode``; case-insensitive);
4. the JSON body, read only when the content type is JSON (``application/json`` or
   ``application/*+json``); a malformed body or one that is not an object holds nothing;
5. the form (urlencoded or multipart), read only when the content type is a form;
6. the server session: Flask's ``session``, Django's ``request.session`` (with
   ``SessionMiddleware``), Starlette's ``request.session`` (with ``SessionMiddleware``);
   a request without one is fine.

Any other body is never read, so a GET, a header-only request or a plain-text body is never
refused. A plain mapping is one source: its keys, then the header names in any case.

Reading a request lives in ``ctx_memory._requests`` (the parts of each framework's request
and the flows that read them); this module holds what the values mean and what is written.
A Starlette/FastAPI body can only be read with ``await``: the sync helpers use it when it
has already been read (FastAPI reads the body of an endpoint that declares body parameters)
and otherwise raise :class:`~ctx_memory.errors.RequestBodyNotReadError` naming the async
twins.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ctx_memory._requests import (
    Field,
    Found,
    Part,
    RequestParts,
    Values,
    aread,
    find,
    read,
    request_parts,
)
from ctx_memory.errors import InvalidSessionIdError, ValidationError
from ctx_memory.manager import ContextManager, get_context_manager
from ctx_memory.schema import ContextMode, validate_session_id

if TYPE_CHECKING:
    from collections.abc import Generator
    from datetime import datetime

__all__ = ["ContextIntegration", "get_context_integration", "reset_context_integration"]

SESSION_KEYS = ("session_id", "sessionId", "session")
"""Default names of the session id in the query string, body, form and server session."""
SESSION_HEADERS = ("X-Session-ID",)
"""Default headers carrying the session id."""
MODE_KEYS = ("mode", "context_mode")
"""Default names of the mode in the query string, body, form and server session."""
MODE_HEADERS = ("X-Context-Mode",)
"""Default headers carrying the mode."""

_RESEARCH = (Field(("research",)), Field(("deep_research",)))
_THINKING = Field(("thinking",))
_METADATA = (
    ("current_url", Field(("current_url", "url", "page_url"))),
    ("user_timezone", Field(("user_timezone", "timezone", "tz"))),
    ("user_time", Field(("user_time",))),
)


def _parse_mode(found: Found) -> ContextMode:
    try:
        return ContextMode(str(found.value).strip().lower())
    except ValueError:
        modes = ", ".join(m.value for m in ContextMode)
        msg = f"unknown mode {found.value!r} in the {found.origin}: expected one of {modes}"
        raise ValidationError(msg) from None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _names(names: str | Sequence[str]) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else tuple(names)


# ----------------------------------------------------------------------------- the class


class ContextIntegration:
    """Request parsing and source formatting on top of a ContextManager.

    Every helper that reads a request or writes has an ``a`` twin for ``async def``
    endpoints (``aget_session_id``, ``aget_mode``, ``aprepare_request``,
    ``aadd_web_content``, ``aadd_search_results``). The module docstring gives the order in
    which a request's query string, headers, JSON body, form and server session are read.

    Args:
        manager: The manager to write to (default: :func:`get_context_manager`).
        session_keys: Names of the session id in the query string, JSON body, form and
            server session.
        session_headers: Headers carrying the session id.
        mode_keys: Names of the mode in the query string, JSON body, form and server
            session.
        mode_headers: Headers carrying the mode.

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

    def __init__(
        self,
        manager: ContextManager | None = None,
        *,
        session_keys: str | Sequence[str] = SESSION_KEYS,
        session_headers: str | Sequence[str] = SESSION_HEADERS,
        mode_keys: str | Sequence[str] = MODE_KEYS,
        mode_headers: str | Sequence[str] = MODE_HEADERS,
    ) -> None:
        self.manager = manager if manager is not None else get_context_manager()
        self._session = Field(_names(session_keys), _names(session_headers))
        self._mode = Field(_names(mode_keys), _names(mode_headers))
        fields = [self._session, self._mode, *_RESEARCH, _THINKING] + [f for _, f in _METADATA]
        self._session_keys = tuple(dict.fromkeys(k for f in fields for k in f.keys))

    # ------------------------------------------------------------ flows (no I/O of their own)

    def _request(self, request: Any) -> RequestParts:
        return RequestParts(request_parts(request, self._session_keys))

    def _session_id_flow(
        self, request: RequestParts, default: str | None
    ) -> Generator[Part, Values | None, str]:
        found = yield from find(request, self._session)
        if found is None:
            if default is not None:  # checked like any id; "" may stand for "none"
                return default if default == "" else validate_session_id(default)
            keys = "/".join(self._session.keys) or "-"
            headers = "/".join(self._session.headers) or "-"
            msg = (
                f"no session id in the request: looked for {keys} in the query string, "
                f"the JSON body, the form and the server session, and for the {headers} header"
            )
            raise InvalidSessionIdError(msg)
        value = found.value
        if isinstance(value, int) and not isinstance(value, bool):  # a JSON number: its digits
            try:
                value = str(value)
            except ValueError:  # more digits than Python prints (4,300): far too long anyway
                msg = f"the session id in the {found.origin} is a number far too long"
                raise InvalidSessionIdError(msg) from None
        if not isinstance(value, str):
            kind = type(value).__name__
            msg = f"the session id in the {found.origin} must be a string, got {kind}"
            raise InvalidSessionIdError(msg)
        try:
            return validate_session_id(value)
        except InvalidSessionIdError as e:
            msg = f"{e} (in the {found.origin})"
            raise InvalidSessionIdError(msg) from None

    def _explicit_or_request_flow(
        self, request: Any, session_id: str | None
    ) -> Generator[Part, Values | None, str]:
        if session_id:  # an explicit argument comes first (an empty one falls through)
            return session_id
        return (yield from self._session_id_flow(self._request(request), None))

    def _mode_flow(self, request: RequestParts) -> Generator[Part, Values | None, ContextMode]:
        found = yield from find(request, self._mode)
        if found is not None:
            return _parse_mode(found)
        for flag in _RESEARCH:  # either one, truthy: a false "research" hides no "deep_research"
            research = yield from find(request, flag)
            if research is not None and _truthy(research.value):
                return ContextMode.RESEARCH
        thinking = yield from find(request, _THINKING)
        if thinking is not None and _truthy(thinking.value):
            return ContextMode.THINKING
        return ContextMode.NORMAL

    def _prepare_flow(
        self, request: RequestParts
    ) -> Generator[Part, Values | None, tuple[str, dict[str, Any]]]:
        session_id = yield from self._session_id_flow(request, None)
        mode = yield from self._mode_flow(request)
        fields: dict[str, Any] = {"mode": mode}
        for name, wanted in _METADATA:
            found = yield from find(request, wanted)
            if found is not None:
                fields[name] = str(found.value)
        return session_id, fields

    # ------------------------------------------------------------------- reading a request

    def get_session_id(self, request: Any, default: str | None = None) -> str:
        """The session id of a request or mapping.

        Looks for the ``session_id`` / ``sessionId`` / ``session`` keys (``session_keys``)
        in the query string, JSON body, form and server session and for the
        ``X-Session-ID`` header (``session_headers``), in the module's precedence order.

        Raises:
            InvalidSessionIdError: None was found and no ``default`` was given, or the one
                found is not a valid session id (the message says where it was found).
            RequestBodyNotReadError: Only the body of a Starlette/FastAPI request, not read yet, can
                hold it: use :meth:`aget_session_id`.
        """
        return read(self._session_id_flow(self._request(request), default))

    async def aget_session_id(self, request: Any, default: str | None = None) -> str:
        """Async :meth:`get_session_id`: reads a Starlette/FastAPI body too."""
        return await aread(self._session_id_flow(self._request(request), default))

    def get_mode(self, request: Any) -> ContextMode:
        """The context mode: a ``mode`` key or ``X-Context-Mode`` header, else the flags.

        Without a mode, a truthy ``research`` / ``deep_research`` means research and a
        truthy ``thinking`` means thinking; otherwise the mode is normal.

        Raises:
            ValidationError: The mode is not one of ``normal``, ``research``, ``thinking``.
            RequestBodyNotReadError: As :meth:`get_session_id`, for an unread Starlette body.
        """
        return read(self._mode_flow(self._request(request)))

    async def aget_mode(self, request: Any) -> ContextMode:
        """Async :meth:`get_mode`: reads a Starlette/FastAPI body too."""
        return await aread(self._mode_flow(self._request(request)))

    def prepare_request(self, request: Any) -> str:
        """Record the request's mode, current URL, time zone and time; return the session id.

        The URL comes from ``current_url`` / ``url`` / ``page_url``, the time zone from
        ``user_timezone`` / ``timezone`` / ``tz`` and the time from ``user_time``. The
        request is read whole before anything is written.
        """
        session_id, fields = read(self._prepare_flow(self._request(request)))
        self.manager.update_metadata(session_id, **fields)
        return session_id

    async def aprepare_request(self, request: Any) -> str:
        """Async :meth:`prepare_request`."""
        session_id, fields = await aread(self._prepare_flow(self._request(request)))
        await self.manager.aupdate_metadata(session_id, **fields)
        return session_id

    # ------------------------------------------------------------------- writing sources

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
        items = self.search_result_items(results, source_type=source_type)
        return self.manager.add_fetched_items(session_id, items, dedupe=dedupe)

    async def aadd_search_results(
        self,
        session_id: str,
        results: Sequence[Mapping[str, Any]],
        *,
        source_type: str = "web_search",
        dedupe: bool = True,
    ) -> int:
        """Async :meth:`add_search_results`."""
        items = self.search_result_items(results, source_type=source_type)
        return await self.manager.aadd_fetched_items(session_id, items, dedupe=dedupe)

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

        The session comes from ``session_id`` or else the ``request``; the page URL is also
        recorded as the session's ``current_url``.
        """
        sid = read(self._explicit_or_request_flow(request, session_id))
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

    async def aadd_web_content(
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
        """Async :meth:`add_web_content`: reads a Starlette/FastAPI body too."""
        sid = await aread(self._explicit_or_request_flow(request, session_id))
        extracted = {"title": title} if title else {}
        item = await self.manager.aadd_fetched_context(
            sid,
            source_type,
            text_content,
            url=current_url,
            extracted_data=extracted,
            timestamp=timestamp,
            dedupe=True,
        )
        if current_url:
            await self.manager.aupdate_metadata(sid, current_url=current_url)
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
