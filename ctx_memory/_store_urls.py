"""Store URLs and names: validated without quoting a password, shown through :func:`redact_url`.

The Redis and PostgreSQL URLs settings and stores accept, the names ``STORE`` takes, and the
masking every message that shows a URL goes through. :mod:`ctx_memory.config` re-exports the
public names.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, parse_qs, unquote, unquote_plus, urlsplit

from ctx_memory.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "BUILTIN_STORES",
    "hide_in_logs",
    "POSTGRES_SCHEMES",
    "REDIS_SCHEMES",
    "postgres_url_problem",
    "redact_url",
    "redis_url_problem",
    "scrub",
    "scrub_error",
    "store_name_problem",
    "url_secrets",
    "validate_postgres_url",
    "validate_redis_url",
]

REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://")

# --------------------------------------------------------------------------- URLs

# A query parameter: its value runs to the next ``&name=`` (``#``, ``?`` and an ``&`` that
# starts no parameter included, whatever a parser makes of them), so nothing of a secret
# value survives. A name mentions a secret (``password``, ``ssl_password``...) once
# percent-decoded: ``p%61ssword`` logs in as well.
_PARAM = re.compile(r"([?&])([^=&?]*)=((?:[^&]|&(?![^&=]*=))*)")
_SECRET_NAME = re.compile(r"pass|secret|token|auth", re.IGNORECASE)


def _secret_values(text: str) -> list[re.Match[str]]:
    """The query parameters of ``text`` whose (decoded) name mentions a secret."""
    return [m for m in _PARAM.finditer(text) if _SECRET_NAME.search(unquote_plus(m.group(2)))]


_DB_PATH = re.compile(r"/?(?:\d+/?)?")
_ENCODE_HINT = (
    "percent-encode '/', '?', '#' and '@' in a user name or password (%2F, %3F, %23, %40)"
)


def redact_url(url: str) -> str:
    """``url`` with every password replaced by ``***`` (safe to log or print).

    Masks the password of the user-info part (``redis://user:***@host``), up to the last
    ``@``, so an unencoded ``/``, ``?``, ``#`` or ``@`` in it is masked too; and the value
    of any query parameter naming a secret (``?password=***``). Works on malformed URLs
    and on text without ``://`` as well: it never parses, so it never fails.

    Example:
        .. code-block:: python

            from ctx_memory.config import redact_url

            assert redact_url("redis://:p/a#s@h:6379/0") == "redis://:***@h:6379/0"
            assert redact_url("redis://h/0?password=pw") == "redis://h/0?password=***"
    """
    text = str(url)
    for found in reversed(_secret_values(text)):
        text = f"{text[: found.start(3)]}***{text[found.end(3) :]}"
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    at = rest.rfind("@")
    if at < 0:
        return text
    userinfo, host = rest[:at], rest[at + 1 :]
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{userinfo}@{host}"


def url_secrets(url: str) -> list[str]:
    """The passwords a URL holds (as written and percent-decoded), longest first.

    What :func:`redact_url` masks, for scrubbing text that may quote them (a client
    library's error message).
    """
    text = str(url)
    found = [m.group(3) for m in _secret_values(text)]
    found += [part for m in _secret_values(text) for part in m.group(3).split("&")]
    rest = text.partition("://")[2] or text
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        found.append(rest[:at].split(":", 1)[1])
    secrets = {s for value in found for s in (value, unquote(value), unquote_plus(value)) if s}
    return sorted(secrets, key=len, reverse=True)


def scrub(value: object, secrets: list[str]) -> object:
    """``value`` (an exception argument) with every secret (:func:`url_secrets`) as ``***``."""
    if not isinstance(value, str):
        return value if not any(secret in str(value) for secret in secrets) else "***"
    for secret in secrets:
        value = value.replace(secret, "***")
    return value


def scrub_error(error: BaseException, url: str, suffix: str = "") -> str:
    """Mask ``url``'s secrets (:func:`url_secrets`) in ``error``'s arguments as ``***``.

    The error becomes a store error's ``__cause__``: no password may stay in it. Returns
    ``str(error) + suffix``, masked the same way.
    """
    secrets = url_secrets(url)
    if not secrets:
        return f"{error}{suffix}"
    error.args = tuple(scrub(arg, secrets) for arg in error.args)
    return str(scrub(f"{error}{suffix}", secrets))


def redis_url_problem(url: str) -> str | None:  # noqa: PLR0911 - one return per fault
    """What is wrong with a Redis URL (worded for ``invalid setting REDIS_URL: ...``)."""
    if not url.startswith(REDIS_SCHEMES):
        return (
            "must start with redis://, rediss://, unix:// or redis+sentinel:// "
            "(e.g. redis://localhost:6379/0)"
        )
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "must not contain spaces or control characters"
    if "#" in url:
        return f"holds a '#' (a URL fragment means nothing to Redis); {_ENCODE_HINT}"
    if url.startswith(REDIS_SCHEMES[3:]):
        from ctx_memory.stores.redis import sentinel_url_problem  # noqa: PLC0415 - redis-py

        problem, query = sentinel_url_problem(url), url.partition("?")[2]
        if problem is None and query:  # the master's parameters: redis-py's, as below
            plain = "rediss" if url.startswith("rediss") else "redis"
            return _query_problem(query, plain, also=("sentinel_password", "sentinel_username"))
        return problem
    parts = _split(url)
    if isinstance(parts, str):
        return parts
    if parts.scheme == "unix":
        if not parts.path:
            return "unix:// needs a socket path, e.g. unix:///run/redis/redis.sock"
    elif not _DB_PATH.fullmatch(parts.path):
        return "the path must be a database number, e.g. redis://localhost:6379/0"
    return _query_problem(parts.query, parts.scheme) if parts.query else None


def _split(url: str) -> SplitResult | str:
    """``url`` split, or what is wrong with its host and port (an '@' after the host too)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"has no valid host and port; {_ENCODE_HINT}"
    if "@" in parts.path or "@" in parts.query:
        return f"holds an '@' after the host; {_ENCODE_HINT}"
    if port == 0:
        return "the port must be a number from 1 to 65535"
    return parts


def _query_problem(query: str, scheme: str, also: tuple[str, ...] = ()) -> str | None:
    """A query parameter redis-py would refuse when connecting (its value is not shown).

    redis-py parses the parameters it knows and passes any other to the connection
    class, which raises ``TypeError`` on a name it does not take: such a name is refused
    here, when the settings load.
    """
    from redis.connection import URL_QUERY_ARGUMENT_PARSERS  # noqa: PLC0415 - rarely needed

    parsers: dict[str, Callable[[str], object]] = dict(URL_QUERY_ARGUMENT_PARSERS)  # type: ignore[arg-type]
    accepted = _connection_parameters(scheme) | set(also)
    if any(part and "=" not in part for part in query.split("&")):  # maybe a password's end
        return "holds a query part without '=' (not shown): write an '&' in a password as %26"
    for name, values in parse_qs(query, keep_blank_values=True).items():
        parser = parsers.get(name)
        if parser is None and name not in accepted:
            return f"query parameter {name!r} is not one redis-py takes"
        if parser is None or not values:
            continue
        try:
            value = parser(values[0])
        except (TypeError, ValueError):
            return f"query parameter {name!r} has an invalid value"
        if name == "max_connections" and isinstance(value, int) and value < 0:
            return "query parameter 'max_connections' must be 0 (redis-py's default) or more"
    return None


def _connection_parameters(scheme: str) -> frozenset[str]:
    """The keyword arguments redis-py's connection class for ``scheme`` (and its pool) take."""
    import inspect  # noqa: PLC0415 - rarely needed

    from redis import connection  # noqa: PLC0415

    classes: dict[str, type[Any]] = {
        "rediss": connection.SSLConnection,
        "unix": connection.UnixDomainSocketConnection,
    }
    names: set[str] = {"max_connections"}  # the pool's
    for cls in classes.get(scheme, connection.Connection).__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None:
            names.update(inspect.signature(init).parameters)
    return frozenset(names - {"self", "kwargs", "args"})


def validate_redis_url(url: object) -> str:
    """Return ``url`` if redis-py will read it as the server it names, else raise.

    Accepts ``redis://``, ``rediss://`` and ``unix://`` URLs, and ``redis+sentinel://`` /
    ``rediss+sentinel://`` (read by :func:`ctx_memory.stores.redis.parse_sentinel_url`).
    Refuses anything redis-py would misread: no scheme, a ``#``, an ``@`` after the host
    (an unencoded ``/`` or ``?`` in a password), a port or database that is not a number,
    a bad known query value.

    Raises:
        ConfigurationError: Names ``REDIS_URL``; the message shows the URL only through
            :func:`redact_url` and chains no other exception.
    """
    if not isinstance(url, str):
        raise ConfigurationError("REDIS_URL", f"must be a string, got {type(url).__name__}")
    problem = redis_url_problem(url)
    if problem is not None:
        raise ConfigurationError("REDIS_URL", f"{problem} (got {redact_url(url)!r})")
    return url


# --------------------------------------------------------------------------- PostgreSQL
# The PostgreSQL store's settings (POSTGRES_* keys of the Settings class below) and the
# names STORE accepts (built-in stores and third-party stores registered by entry point).

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
BUILTIN_STORES = ("memory", "postgres", "redis", "sqlite")


def postgres_url_problem(url: str) -> str | None:  # noqa: PLR0911 - one return per problem
    """What is wrong with a PostgreSQL URL, or ``None``; never quotes the URL."""
    if not url.startswith(POSTGRES_SCHEMES):
        return "must start with postgresql:// or postgres://"
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "must not contain spaces or control characters"
    if "#" in url:
        return f"holds a '#' (a URL fragment means nothing to PostgreSQL); {_ENCODE_HINT}"
    netloc = re.split(r"[/?]", url.split("://", 1)[1], maxsplit=1)[0]
    hosts = netloc.rpartition("@")[2].split(",")  # libpq takes several: h1,[::1]:5433
    if len(hosts) == 1:  # one host: Python's parser reads it as libpq does
        parts = _split(url)
        if isinstance(parts, str):
            return parts
    if netloc.count("@") > 1:  # libpq and Python split the user info differently
        return f"holds an unencoded '@' in the user name or password; {_ENCODE_HINT}"
    if _BAD_ESCAPE.search(url):  # libpq refuses it, and psycopg's pool logs it verbatim
        return f"holds a '%' that does not start a %XX escape; {_ENCODE_HINT}"
    if "%00" in url:  # libpq refuses a NUL, quoting the value
        return "holds %00 (a NUL character), which no PostgreSQL text or password can hold"
    if not all(_HOST_PORT.fullmatch(h) for h in hosts):
        return "has a host libpq cannot read: host[:port] or [IPv6][:port], comma-separated"
    return _libpq_query_problem(url.split("?", 1)[1] if "?" in url else "")


def _libpq_query_problem(query: str) -> str | None:
    """A query parameter libpq would refuse (when the driver is installed to ask), or None."""
    try:
        from psycopg import pq  # noqa: PLC0415 - the postgres extra, maybe absent
    except ImportError:
        return None
    names = {d.keyword.decode() for d in pq.Conninfo.get_defaults()} | {"ssl"}  # ssl=true
    for name in parse_qs(query, keep_blank_values=True):
        if name not in names:
            hint = (
                " (the schema is POSTGRES_SCHEMA; ?schema= is for ctx-memory migrate's URLs)"
                if name == "schema"
                else ""
            )
            return f"query parameter {name!r} is not one libpq takes{hint}"
    return None


_HOST_PORT = re.compile(r"(?:\[[^\[\]]*\]|[^\[\]:,]*)(?::\d*)?")


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class _SecretFilter(logging.Filter):
    """Masks, in the records of its logger that name one of its tags, that tag's secrets.

    A record names a tag when one of its arguments is that text (psycopg_pool passes its
    pool's name: ``error connecting in %r: %s``); other records are left alone. Each URL
    is replaced by its :func:`redact_url` form, then each password of 4 characters or
    more wherever it stands (a 1-character password would garble the whole line).
    """

    def __init__(self) -> None:
        super().__init__()
        self.urls: dict[str, set[str]] = {}  # tag -> the URLs registered under it

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        urls = {u for arg in args if isinstance(arg, str) for u in self.urls.get(arg, ())}
        if not urls:
            return True
        text = record.getMessage()
        for url in sorted(urls, key=len, reverse=True):
            text = text.replace(url, redact_url(url))
        secrets = {s for url in urls for s in url_secrets(url) if len(s) >= _SHORTEST_MASKED}
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        record.msg, record.args = text, ()
        return True


_SHORTEST_MASKED = 4
_FILTERS: dict[str, _SecretFilter] = {}
_FILTERS_LOCK = threading.Lock()


def hide_in_logs(logger_name: str, url: str, *, tag: str) -> str:
    """Mask the passwords ``url`` holds in the records of ``logger_name`` that name ``tag``.

    For a client library that logs why it could not connect, quoting the connection
    string (psycopg_pool does, for a URL libpq refuses), with a name of ours among the
    record's arguments (the pool's name); returns ``url``.
    """
    if url_secrets(url):
        with _FILTERS_LOCK:
            found = _FILTERS.get(logger_name)
            if found is None:
                found = _FILTERS[logger_name] = _SecretFilter()
                logging.getLogger(logger_name).addFilter(found)
            found.urls = {**found.urls, tag: found.urls.get(tag, set()) | {url}}
    return url


def validate_postgres_url(url: object) -> str:
    """Return ``url`` if it is a ``postgresql://`` URL libpq reads as written, else raise.

    Raises:
        ConfigurationError: Names ``POSTGRES_URL``; the message shows the URL only through
            :func:`redact_url` and chains no other exception.
    """
    if not isinstance(url, str):
        raise ConfigurationError("POSTGRES_URL", f"must be a string, got {type(url).__name__}")
    problem = postgres_url_problem(url)
    if problem is not None and not url.startswith(POSTGRES_SCHEMES):
        # A libpq "key=value" string (or anything else): nothing to mask it by, so not shown.
        raise ConfigurationError("POSTGRES_URL", f"{problem} (the value is not shown)")
    if problem is not None:
        raise ConfigurationError("POSTGRES_URL", f"{problem} (got {redact_url(url)!r})")
    return url


def store_name_problem(name: str) -> str | None:
    """Why ``name`` selects no store (neither built in nor registered), or ``None``."""
    if name in BUILTIN_STORES:
        return None
    from ctx_memory.stores import registered_stores  # noqa: PLC0415 - reads entry points

    registered = registered_stores()
    if name in registered:
        return None
    known = ", ".join(sorted({*BUILTIN_STORES, *registered}))
    return (
        f"no store has that name; known stores: {known} (a third-party store registers "
        "its name in the 'ctx_memory.stores' entry point group)"
    )
