"""Reading a web request: its parts in precedence order, and the flows that read them.

Pure I/O-free lookups plus the parts of each framework's request (Starlette and FastAPI,
Django REST framework, Django, Flask and Werkzeug, a plain mapping, any other object), in
the order :mod:`ctx_memory.web` documents. A framework is recognised by the classes of its
already-imported modules and never imported here.

Reading a request is written once, as a flow that yields each part of the request it needs
(:class:`Part`); :func:`read` feeds it synchronously and :func:`aread` with ``await``, so a
helper and its ``a`` twin differ by ``await`` only. A Starlette/FastAPI body can only be read
with ``await``: :func:`read` uses it when it has already been read and otherwise raises
:class:`~ctx_memory.errors.RequestBodyNotReadError` naming the async twins.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from ctx_memory.errors import RequestBodyNotReadError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator

T = TypeVar("T")

_JSON = "application/json"
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
_NEEDS_AWAIT = (
    "the {what} of this Starlette/FastAPI request has not been read yet, and it can only be "
    "read with await: call the async twin (aget_session_id, aget_mode, aprepare_request, "
    "aadd_web_content) from an `async def` endpoint, or declare the body as a parameter of "
    "the endpoint so that FastAPI reads it first"
)


class Values(Protocol):
    """What a part of a request is read into: anything with ``get`` (dicts, multidicts)."""

    def get(self, key: str, /) -> Any: ...


@dataclass(frozen=True)
class Part:
    """One part of a request that carries values, and how to read it.

    ``kind`` says which names to look up: parameter ``keys``, ``headers``, or both for a
    plain ``mapping``. ``aload`` is set only when reading the part needs ``await``.
    """

    where: str
    kind: Literal["keys", "headers", "mapping"]
    load: Callable[[], Values | None]
    aload: Callable[[], Awaitable[Values | None]] | None = None

    def read(self) -> Values | None:
        return self.load()

    async def aread(self) -> Values | None:
        return self.load() if self.aload is None else await self.aload()


@dataclass(frozen=True)
class Field:
    """The names one value goes by: parameter keys and header names."""

    keys: tuple[str, ...]
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Found:
    value: Any
    origin: str  # e.g. "query parameter 'session_id'", for error messages


class RequestParts:
    """The parts of one request in precedence order; each is read at most once."""

    def __init__(self, parts: list[Part]) -> None:
        self.parts = parts
        self.values: dict[int, Values | None] = {}


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


def _json_object(raw: bytes | str) -> Values | None:
    """The JSON object in a body; ``None`` when it is malformed or not an object."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # malformed, not text, or nested past the parser
        return None
    return value if isinstance(value, dict) else None


def _object(value: object) -> Values | None:
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


def _pick(part: Part, values: Values | None, wanted: Field) -> Found | None:
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
            return Found(value, f"{part.where} {name!r}")
    return None


def find(request: RequestParts, wanted: Field) -> Generator[Part, Values | None, Found | None]:
    """Flow: walk the parts in precedence order, asking for each one not read yet."""
    for index, part in enumerate(request.parts):
        if index not in request.values:
            request.values[index] = yield part
        found = _pick(part, request.values[index], wanted)
        if found is not None:
            return found
    return None


def read(flow: Generator[Part, Values | None, T]) -> T:
    """Run a flow, reading the parts it asks for synchronously."""
    try:
        part = next(flow)
        while True:
            part = flow.send(part.read())
    except StopIteration as done:
        result: T = done.value
        return result


async def aread(flow: Generator[Part, Values | None, T]) -> T:
    """Run a flow, reading the parts it asks for with ``await`` where they need it."""
    try:
        part = next(flow)
        while True:
            part = flow.send(await part.aread())
    except StopIteration as done:
        result: T = done.value
        return result


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


def request_parts(request: Any, session_keys: tuple[str, ...]) -> list[Part]:
    """The parts of ``request`` in precedence order, by framework."""
    if _is(request, "starlette.requests", "HTTPConnection"):  # also a Mapping
        return _starlette_parts(request)
    if isinstance(request, Mapping):
        return [Part("key", "mapping", lambda: request)]
    if _is(request, "rest_framework.request", "Request"):
        return _drf_parts(request, session_keys)
    if _is(request, "django.http.request", "HttpRequest"):
        return _django_parts(request, session_keys)
    if _is(request, "werkzeug.wrappers.request", "Request"):
        return _werkzeug_parts(request)
    return _generic_parts(request)


def _query_and_headers(query: Callable[[], Values | None], request: Any) -> list[Part]:
    return [
        Part("query parameter", "keys", query),
        Part("header", "headers", lambda: request.headers),
    ]


def _body_part(media_type: str, load: Callable[[], Values | None], **kw: Any) -> list[Part]:
    """The JSON-body or form part for this content type; none for any other body."""
    if _is_json(media_type):
        return [Part("JSON body key", "keys", load, **kw)]
    if media_type in _FORMS:
        return [Part("form field", "keys", load, **kw)]
    return []


# Starlette / FastAPI. A Request caches what it has read in ``_json``, ``_body`` and
# ``_form``; FastAPI fills them before calling an endpoint that declares body parameters.


def _starlette_parts(request: Any) -> list[Part]:
    parts = _query_and_headers(lambda: request.query_params, request)
    if _is(request, "starlette.requests", "Request"):  # a WebSocket has no body
        media_type = _media_type(request.headers.get("content-type"))
        load = functools.partial(_starlette_body, request, media_type)
        aload = functools.partial(_astarlette_body, request, media_type)
        parts += _body_part(media_type, load, aload=aload)
    # ``request.session`` asserts when SessionMiddleware is missing: look at the scope.
    parts.append(Part("session key", "keys", lambda: _starlette_session(request)))
    return parts


def _starlette_body(request: Any, media_type: str) -> Values | None:
    if media_type in _FORMS:
        form: Values | None = getattr(request, "_form", None)
        if form is None and getattr(request, "_stream_consumed", False):
            return None  # the endpoint read the stream itself
        if form is None:
            raise RequestBodyNotReadError(_NEEDS_AWAIT.format(what="form"))
        return form
    if hasattr(request, "_json"):
        return _object(request._json)
    if hasattr(request, "_body"):
        return _json_object(request._body)
    if getattr(request, "_stream_consumed", False):
        return None  # the endpoint read the stream itself: the body is not ours to see
    raise RequestBodyNotReadError(_NEEDS_AWAIT.format(what="JSON body"))


async def _astarlette_body(request: Any, media_type: str) -> Values | None:
    if media_type in _FORMS:
        if getattr(request, "_stream_consumed", False) and not hasattr(request, "_form"):
            return None
        form: Values = await request.form()
        return form
    if hasattr(request, "_json"):
        return _object(request._json)
    if getattr(request, "_stream_consumed", False) and not hasattr(request, "_body"):
        return None  # the endpoint read the stream itself: the body is not ours to see
    return _json_object(await request.body())


def _starlette_session(request: Any) -> Values | None:
    return request.session if "session" in request.scope else None


# Django and Django REST framework. ``request.session`` exists with SessionMiddleware; its
# async reads (Django >= 5.0) keep a database session backend out of the event loop.


def _django_parts(request: Any, session_keys: tuple[str, ...]) -> list[Part]:
    parts = _query_and_headers(lambda: request.GET, request)
    media_type = _media_type(getattr(request, "content_type", None))
    load = (lambda: request.POST) if media_type in _FORMS else lambda: _django_json(request)
    parts += _body_part(media_type, load)
    return parts + _django_session_parts(request, session_keys)


def _django_json(request: Any) -> Values | None:
    try:
        body = request.body
    except _loaded_errors("django.http.request", "RawPostDataException"):
        return None  # the view read the stream itself: the body is not ours to see
    return _json_object(body)


def _drf_parts(request: Any, session_keys: tuple[str, ...]) -> list[Part]:
    parts = _query_and_headers(lambda: request.query_params, request)
    media_type = _media_type(request.content_type)
    parts += _body_part(media_type, lambda: _drf_data(request))
    return parts + _django_session_parts(request, session_keys)


def _drf_data(request: Any) -> Values | None:
    """``request.data`` as the view's parsers read it (a malformed body raises DRF's 400)."""
    try:
        return _object(request.data)
    except _loaded_errors("rest_framework.exceptions", "UnsupportedMediaType"):
        return None  # the view has no parser for this body: it holds nothing for us


def _django_session_parts(request: Any, keys: tuple[str, ...]) -> list[Part]:
    session = getattr(request, "session", None)
    if session is None:
        return []
    load = functools.partial(_django_session, session, keys)
    aload = functools.partial(_adjango_session, session, keys)
    return [Part("session key", "keys", load, aload)]


def _django_session(session: Any, keys: tuple[str, ...]) -> Values:
    return {key: session.get(key) for key in keys}


async def _adjango_session(session: Any, keys: tuple[str, ...]) -> Values:
    if not hasattr(session, "aget"):  # Django < 5.0 has no async session reads
        return _django_session(session, keys)
    return {key: await session.aget(key) for key in keys}


# Flask and Werkzeug. ``get_json(silent=True)`` never answers 415; Flask's session belongs
# to the request context, so it is read only for the request of the current context.


def _werkzeug_parts(request: Any) -> list[Part]:
    parts = _query_and_headers(lambda: request.args, request)
    media_type = _media_type(request.mimetype)
    if media_type in _FORMS:
        parts += _body_part(media_type, lambda: request.form)
    else:
        parts += _body_part(media_type, lambda: _object(request.get_json(silent=True)))
    parts.append(Part("session key", "keys", lambda: _flask_session(request)))
    return parts


def _flask_session(request: Any) -> Values | None:
    flask = sys.modules.get("flask")
    if flask is None or not flask.has_request_context():
        return None
    unwrap = getattr(request, "_get_current_object", None)  # ``flask.request`` is a proxy
    if flask.request._get_current_object() is not (request if unwrap is None else unwrap()):
        return None
    session: Values = flask.session
    return session


# Anything else: the attributes the frameworks above use, in the same precedence.

_GENERIC: tuple[tuple[str, Literal["keys", "headers"], tuple[str, ...]], ...] = (
    ("query parameter", "keys", ("GET", "query_params", "args")),
    ("header", "headers", ("headers",)),
    ("body key", "keys", ("json", "data")),
    ("form field", "keys", ("POST", "form")),
    ("session key", "keys", ("session",)),
)


def _generic_parts(request: Any) -> list[Part]:
    return [
        Part(where, kind, functools.partial(_attribute, request, name))
        for where, kind, names in _GENERIC
        for name in names
    ]


def _attribute(request: Any, name: str) -> Values | None:
    value = getattr(request, name, None)
    return value if callable(getattr(value, "get", None)) else None
