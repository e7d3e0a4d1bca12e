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

Reading a request is written once, as a flow that yields each part of the request it needs
(:class:`_Part`); :func:`_read` feeds it synchronously and :func:`_aread` with ``await``, so a
helper and its ``a`` twin differ by ``await`` only. A Starlette/FastAPI body can only be read
with ``await``: the sync helpers use it when it has already been read (FastAPI reads the body
of an endpoint that declares body parameters) and otherwise raise
:class:`~ctx_memory.errors.RequestBodyNotReadError` naming the async twins.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from ctx_memory.errors import InvalidSessionIdError, RequestBodyNotReadError, ValidationError
from ctx_memory.manager import ContextManager, get_context_manager
from ctx_memory.schema import ContextMode, validate_session_id

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator
    from datetime import datetime

__all__ = ["ContextIntegration", "get_context_integration", "reset_context_integration"]

T = TypeVar("T")

SESSION_KEYS = ("session_id", "sessionId", "session")
"""Default names of the session id in the query string, body, form and server session."""
SESSION_HEADERS = ("X-Session-ID",)
"""Default headers carrying the session id."""
MODE_KEYS = ("mode", "context_mode")
"""Default names of the mode in the query string, body, form and server session."""
MODE_HEADERS = ("X-Context-Mode",)
"""Default headers carrying the mode."""

_JSON = "application/json"
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
_NEEDS_AWAIT = (
    "the {what} of this Starlette/FastAPI request has not been read yet, and it can only be "
    "read with await: call the async twin (aget_session_id, aget_mode, aprepare_request, "
    "aadd_web_content) from an `async def` endpoint, or declare the body as a parameter of "
    "the endpoint so that FastAPI reads it first"
)


class _Values(Protocol):
    """What a part of a request is read into: anything with ``get`` (dicts, multidicts)."""

    def get(self, key: str, /) -> Any: ...


@dataclass(frozen=True)
class _Part:
    """One part of a request that carries values, and how to read it.

    ``kind`` says which names to look up: parameter ``keys``, ``headers``, or both for a
    plain ``mapping``. ``aload`` is set only when reading the part needs ``await``.
    """

    where: str
    kind: Literal["keys", "headers", "mapping"]
    load: Callable[[], _Values | None]
    aload: Callable[[], Awaitable[_Values | None]] | None = None

    async def aread(self) -> _Values | None:
        return self.load() if self.aload is None else await self.aload()


@dataclass(frozen=True)
class _Field:
    """The names one value goes by: parameter keys and header names."""

    keys: tuple[str, ...]
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Found:
    value: Any
    origin: str  # e.g. "query parameter 'session_id'", for error messages


_RESEARCH = _Field(("research", "deep_research"))
_THINKING = _Field(("thinking",))
_METADATA = (
    ("current_url", _Field(("current_url", "url", "page_url"))),
    ("user_timezone", _Field(("user_timezone", "timezone", "tz"))),
    ("user_time", _Field(("user_time",))),
)


class _Request:
    """The parts of one request in precedence order; each is read at most once."""

    def __init__(self, parts: list[_Part]) -> None:
        self.parts = parts
        self.values: dict[int, _Values | None] = {}


# --------------------------------------------------------------------------- pure lookups


def _media_type(content_type: object) -> str:
    """``"application/json"`` from ``"Application/JSON; charset=utf-8"``; ``""`` if none."""
    if not isinstance(content_type, str):
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type == _JSON or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _json_object(raw: bytes | str) -> _Values | None:
    """The JSON object in a body; ``None`` when it is malformed or not an object."""
    try:
        value = json.loads(raw)
    except ValueError:  # malformed JSON or bytes that are not text: the body holds nothing
        return None
    return value if isinstance(value, dict) else None


def _object(value: object) -> _Values | None:
    """``value`` if it can be looked up by key (a parsed JSON list or number cannot)."""
    return value if isinstance(value, Mapping) else None


def _header_in(mapping: Mapping[Any, Any], name: str) -> Any:
    """A header of a mapping, in any case (``dict(request.headers)``, a dict of headers)."""
    if name in mapping:
        return mapping[name]
    folded = name.casefold()
    return next(
        (v for k, v in mapping.items() if isinstance(k, str) and k.casefold() == folded), None
    )


def _pick(part: _Part, values: _Values | None, wanted: _Field) -> _Found | None:
    """The first non-empty value ``wanted`` has in one part of a request."""
    if values is None:
        return None
    keys = wanted.keys if part.kind in ("keys", "mapping") else ()
    headers = wanted.headers if part.kind in ("headers", "mapping") else ()
    candidates = [(name, values.get(name)) for name in keys]
    if isinstance(values, Mapping):  # a dict of headers may be spelled in any case
        candidates += [(name, _header_in(values, name)) for name in headers]
    else:
        candidates += [(name, values.get(name)) for name in headers]
    for name, value in candidates:
        if value is not None and not (isinstance(value, str) and value == ""):
            return _Found(value, f"{part.where} {name!r}")
    return None


def _find(request: _Request, wanted: _Field) -> Generator[_Part, _Values | None, _Found | None]:
    """Flow: walk the parts in precedence order, asking for each one not read yet."""
    for index, part in enumerate(request.parts):
        if index not in request.values:
            request.values[index] = yield part
        found = _pick(part, request.values[index], wanted)
        if found is not None:
            return found
    return None


def _read(flow: Generator[_Part, _Values | None, T]) -> T:
    """Run a flow, reading the parts it asks for synchronously."""
    try:
        part = next(flow)
        while True:
            part = flow.send(part.load())
    except StopIteration as done:
        result: T = done.value
        return result


async def _aread(flow: Generator[_Part, _Values | None, T]) -> T:
    """Run a flow, reading the parts it asks for with ``await`` where they need it."""
    try:
        part = next(flow)
        while True:
            part = flow.send(await part.aread())
    except StopIteration as done:
        result: T = done.value
        return result


def _parse_mode(found: _Found) -> ContextMode:
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


# ------------------------------------------------------------- the parts of each framework


def _loaded_class(module: str, name: str) -> type | None:
    """A framework's class if its module is already imported; never imports it.

    A request of that class exists only once the module has been imported.
    """
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


def _loaded_errors(module: str, name: str) -> tuple[type[BaseException], ...]:
    """An exception class of an imported framework, as an ``except`` clause; ``()`` if none."""
    found = _loaded_class(module, name)
    return (found,) if found is not None and issubclass(found, BaseException) else ()


def _is(request: Any, module: str, name: str) -> bool:
    """Whether ``request`` is an instance of a framework's class (never imports it)."""
    cls = _loaded_class(module, name)
    return cls is not None and isinstance(request, cls)


def _parts(request: Any, session_keys: tuple[str, ...]) -> list[_Part]:
    """The parts of ``request`` in precedence order, by framework."""
    if _is(request, "starlette.requests", "HTTPConnection"):  # also a Mapping
        return _starlette_parts(request)
    if isinstance(request, Mapping):
        return [_Part("key", "mapping", lambda: request)]
    if _is(request, "rest_framework.request", "Request"):
        return _drf_parts(request, session_keys)
    if _is(request, "django.http.request", "HttpRequest"):
        return _django_parts(request, session_keys)
    if _is(request, "werkzeug.wrappers.request", "Request"):
        return _werkzeug_parts(request)
    return _generic_parts(request)


def _query_and_headers(query: Callable[[], _Values | None], request: Any) -> list[_Part]:
    return [
        _Part("query parameter", "keys", query),
        _Part("header", "headers", lambda: request.headers),
    ]


def _body_part(media_type: str, load: Callable[[], _Values | None], **kw: Any) -> list[_Part]:
    """The JSON-body or form part for this content type; none for any other body."""
    if _is_json(media_type):
        return [_Part("JSON body key", "keys", load, **kw)]
    if media_type in _FORMS:
        return [_Part("form field", "keys", load, **kw)]
    return []


# Starlette / FastAPI. A Request caches what it has read in ``_json``, ``_body`` and
# ``_form``; FastAPI fills them before calling an endpoint that declares body parameters.


def _starlette_parts(request: Any) -> list[_Part]:
    parts = _query_and_headers(lambda: request.query_params, request)
    if _is(request, "starlette.requests", "Request"):  # a WebSocket has no body
        media_type = _media_type(request.headers.get("content-type"))
        load = functools.partial(_starlette_body, request, media_type)
        aload = functools.partial(_astarlette_body, request, media_type)
        parts += _body_part(media_type, load, aload=aload)
    # ``request.session`` asserts when SessionMiddleware is missing: look at the scope.
    parts.append(_Part("session key", "keys", lambda: _starlette_session(request)))
    return parts


def _starlette_body(request: Any, media_type: str) -> _Values | None:
    if media_type in _FORMS:
        form: _Values | None = getattr(request, "_form", None)
        if form is None:
            raise RequestBodyNotReadError(_NEEDS_AWAIT.format(what="form"))
        return form
    if hasattr(request, "_json"):
        return _object(request._json)
    if hasattr(request, "_body"):
        return _json_object(request._body)
    raise RequestBodyNotReadError(_NEEDS_AWAIT.format(what="JSON body"))


async def _astarlette_body(request: Any, media_type: str) -> _Values | None:
    if media_type in _FORMS:
        form: _Values = await request.form()
        return form
    if hasattr(request, "_json"):
        return _object(request._json)
    return _json_object(await request.body())


def _starlette_session(request: Any) -> _Values | None:
    return request.session if "session" in request.scope else None


# Django and Django REST framework. ``request.session`` exists with SessionMiddleware; its
# async reads (Django >= 5.0) keep a database session backend out of the event loop.


def _django_parts(request: Any, session_keys: tuple[str, ...]) -> list[_Part]:
    parts = _query_and_headers(lambda: request.GET, request)
    media_type = _media_type(getattr(request, "content_type", None))
    load = (lambda: request.POST) if media_type in _FORMS else lambda: _django_json(request)
    parts += _body_part(media_type, load)
    return parts + _django_session_parts(request, session_keys)


def _django_json(request: Any) -> _Values | None:
    try:
        body = request.body
    except _loaded_errors("django.http.request", "RawPostDataException"):
        return None  # the view read the stream itself: the body is not ours to see
    return _json_object(body)


def _drf_parts(request: Any, session_keys: tuple[str, ...]) -> list[_Part]:
    parts = _query_and_headers(lambda: request.query_params, request)
    media_type = _media_type(request.content_type)
    parts += _body_part(media_type, lambda: _drf_data(request))
    return parts + _django_session_parts(request, session_keys)


def _drf_data(request: Any) -> _Values | None:
    """``request.data`` as the view's parsers read it (a malformed body raises DRF's 400)."""
    try:
        return _object(request.data)
    except _loaded_errors("rest_framework.exceptions", "UnsupportedMediaType"):
        return None  # the view has no parser for this body: it holds nothing for us


def _django_session_parts(request: Any, keys: tuple[str, ...]) -> list[_Part]:
    session = getattr(request, "session", None)
    if session is None:
        return []
    load = functools.partial(_django_session, session, keys)
    aload = functools.partial(_adjango_session, session, keys)
    return [_Part("session key", "keys", load, aload)]


def _django_session(session: Any, keys: tuple[str, ...]) -> _Values:
    return {key: session.get(key) for key in keys}


async def _adjango_session(session: Any, keys: tuple[str, ...]) -> _Values:
    if not hasattr(session, "aget"):  # Django < 5.0 has no async session reads
        return _django_session(session, keys)
    return {key: await session.aget(key) for key in keys}


# Flask and Werkzeug. ``get_json(silent=True)`` never answers 415; Flask's session belongs
# to the request context, so it is read only for the request of the current context.


def _werkzeug_parts(request: Any) -> list[_Part]:
    parts = _query_and_headers(lambda: request.args, request)
    media_type = _media_type(request.mimetype)
    if media_type in _FORMS:
        parts += _body_part(media_type, lambda: request.form)
    else:
        parts += _body_part(media_type, lambda: _object(request.get_json(silent=True)))
    parts.append(_Part("session key", "keys", lambda: _flask_session(request)))
    return parts


def _flask_session(request: Any) -> _Values | None:
    flask = sys.modules.get("flask")
    if flask is None or not flask.has_request_context():
        return None
    unwrap = getattr(request, "_get_current_object", None)  # ``flask.request`` is a proxy
    if flask.request._get_current_object() is not (request if unwrap is None else unwrap()):
        return None
    session: _Values = flask.session
    return session


# Anything else: the attributes the frameworks above use, in the same precedence.

_GENERIC: tuple[tuple[str, Literal["keys", "headers"], tuple[str, ...]], ...] = (
    ("query parameter", "keys", ("GET", "query_params", "args")),
    ("header", "headers", ("headers",)),
    ("body key", "keys", ("json", "data")),
    ("form field", "keys", ("POST", "form")),
    ("session key", "keys", ("session",)),
)


def _generic_parts(request: Any) -> list[_Part]:
    return [
        _Part(where, kind, functools.partial(_attribute, request, name))
        for where, kind, names in _GENERIC
        for name in names
    ]


def _attribute(request: Any, name: str) -> _Values | None:
    value = getattr(request, name, None)
    return value if callable(getattr(value, "get", None)) else None


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
        self._session = _Field(_names(session_keys), _names(session_headers))
        self._mode = _Field(_names(mode_keys), _names(mode_headers))
        fields = [self._session, self._mode, _RESEARCH, _THINKING] + [f for _, f in _METADATA]
        self._session_keys = tuple(dict.fromkeys(k for f in fields for k in f.keys))

    # ------------------------------------------------------------ flows (no I/O of their own)

    def _request(self, request: Any) -> _Request:
        return _Request(_parts(request, self._session_keys))

    def _session_id_flow(
        self, request: _Request, default: str | None
    ) -> Generator[_Part, _Values | None, str]:
        found = yield from _find(request, self._session)
        if found is None:
            if default is not None:
                return default
            keys = "/".join(self._session.keys) or "-"
            headers = "/".join(self._session.headers) or "-"
            msg = (
                f"no session id in the request: looked for {keys} in the query string, "
                f"the JSON body, the form and the server session, and for the {headers} header"
            )
            raise InvalidSessionIdError(msg)
        value = found.value
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
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
    ) -> Generator[_Part, _Values | None, str]:
        if session_id is not None:  # an explicit argument comes first
            return session_id
        return (yield from self._session_id_flow(self._request(request), None))

    def _mode_flow(self, request: _Request) -> Generator[_Part, _Values | None, ContextMode]:
        found = yield from _find(request, self._mode)
        if found is not None:
            return _parse_mode(found)
        research = yield from _find(request, _RESEARCH)
        if research is not None and _truthy(research.value):
            return ContextMode.RESEARCH
        thinking = yield from _find(request, _THINKING)
        if thinking is not None and _truthy(thinking.value):
            return ContextMode.THINKING
        return ContextMode.NORMAL

    def _prepare_flow(
        self, request: _Request
    ) -> Generator[_Part, _Values | None, tuple[str, dict[str, Any]]]:
        session_id = yield from self._session_id_flow(request, None)
        mode = yield from self._mode_flow(request)
        fields: dict[str, Any] = {"mode": mode}
        for name, wanted in _METADATA:
            found = yield from _find(request, wanted)
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
        return _read(self._session_id_flow(self._request(request), default))

    async def aget_session_id(self, request: Any, default: str | None = None) -> str:
        """Async :meth:`get_session_id`: reads a Starlette/FastAPI body too."""
        return await _aread(self._session_id_flow(self._request(request), default))

    def get_mode(self, request: Any) -> ContextMode:
        """The context mode: a ``mode`` key or ``X-Context-Mode`` header, else the flags.

        Without a mode, a truthy ``research`` / ``deep_research`` means research and a
        truthy ``thinking`` means thinking; otherwise the mode is normal.

        Raises:
            ValidationError: The mode is not one of ``normal``, ``research``, ``thinking``.
            RequestBodyNotReadError: As :meth:`get_session_id`, for an unread Starlette body.
        """
        return _read(self._mode_flow(self._request(request)))

    async def aget_mode(self, request: Any) -> ContextMode:
        """Async :meth:`get_mode`: reads a Starlette/FastAPI body too."""
        return await _aread(self._mode_flow(self._request(request)))

    def prepare_request(self, request: Any) -> str:
        """Record the request's mode, current URL, time zone and time; return the session id.

        The URL comes from ``current_url`` / ``url`` / ``page_url``, the time zone from
        ``user_timezone`` / ``timezone`` / ``tz`` and the time from ``user_time``. The
        request is read whole before anything is written.
        """
        session_id, fields = _read(self._prepare_flow(self._request(request)))
        self.manager.update_metadata(session_id, **fields)
        return session_id

    async def aprepare_request(self, request: Any) -> str:
        """Async :meth:`prepare_request`."""
        session_id, fields = await _aread(self._prepare_flow(self._request(request)))
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
        sid = _read(self._explicit_or_request_flow(request, session_id))
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
        sid = await _aread(self._explicit_or_request_flow(request, session_id))
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
