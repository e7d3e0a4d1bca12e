"""Redis clients: Sentinel URLs and connections, closing clients, naming them in errors.

Connection plumbing for :mod:`ctx_memory.stores.redis`, apart from the store's operations:
``redis+sentinel://`` URLs (:func:`parse_sentinel_url`), Sentinel-managed connections
that run their health check, and releasing clients whose event loop is gone. Nothing here
sends a store command.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, unquote

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.connection import parse_url
from typing_extensions import override

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_SENTINEL_PORT",
    "aclose_client",
    "client_url",
    "close_client",
    "is_sentinel",
    "pool_limit",
    "release_client",
    "runs_here",
    "sentinel_master",
    "sentinel_failure",
    "DEFAULT_SENTINEL_SERVICE",
    "SENTINEL_SCHEMES",
    "SentinelURL",
    "parse_sentinel_url",
    "sentinel_url_problem",
]


def runs_here(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def release_client(client: Any) -> None:
    """Shut down the sockets of an asyncio client whose event loop has closed.

    Its connections cannot be closed the asyncio way (that needs their loop), so each
    socket is shut down directly: the server drops the connection at once, and the file
    descriptors go with the client object. redis-py keeps connections in
    ``_available_connections``/``_in_use_connections`` (a pool) or ``_connections`` (a
    cluster node); anything else is left to the garbage collector.
    """
    if hasattr(client, "_initialize"):  # a cluster client: closed, as aclose() leaves it, so
        client._initialize = True  # redis-py does not report it "Unclosed" when collected
    holders = [getattr(client, "connection_pool", None), *getattr(client, "get_nodes", list)()]
    manager = getattr(client, "nodes_manager", None)  # a cluster's startup nodes are apart
    holders += list(getattr(manager, "startup_nodes", {}).values())
    holders += [sentinel.connection_pool for sentinel in _sentinels_of(client)]
    for holder in holders:
        connections = [
            *getattr(holder, "_available_connections", ()),
            *getattr(holder, "_in_use_connections", ()),
            *getattr(holder, "_connections", ()),
        ]
        for connection in connections:
            writer = getattr(connection, "_writer", None)
            sock = writer.get_extra_info("socket") if writer is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            if writer is not None:  # disconnected: nothing left to report or to close later
                connection._reader = connection._writer = None


def client_url(client: Any) -> str:
    """A password-free URL describing an existing client, for error messages."""
    sentinels = _sentinels_of(client)
    if sentinels:
        pool = client.connection_pool
        hosts = ",".join(_host_port(s.connection_pool.connection_kwargs) for s in sentinels)
        db = pool.connection_kwargs.get("db", 0)
        return f"redis+sentinel://{hosts}/{pool.service_name}/{db}"
    try:
        kwargs = client.connection_pool.connection_kwargs
    except AttributeError:
        nodes = getattr(client, "startup_nodes", None) or []
        first = nodes[0] if nodes else None
        if first is None:
            return "redis://<cluster>"
        return f"redis://{first.host}:{first.port}"
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"


# ---------------------------------------------------------------- Sentinel

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_SENTINEL_SERVICE = "mymaster"
_SENTINEL_AUTH = ("sentinel_username", "sentinel_password")
_ENCODE_HINT = "percent-encode '/', '?', '#' and '@' in a user name or password"


class SentinelURL(NamedTuple):
    """A ``redis+sentinel://`` URL read by :func:`parse_sentinel_url`."""

    sentinels: list[tuple[str, int]]
    """``(host, port)`` of each sentinel, in the URL's order."""
    service: str
    """The name the sentinels monitor the master under."""
    connection: dict[str, Any]
    """Connection arguments of the master: credentials, ``db``, TLS, query options."""
    sentinel: dict[str, Any]
    """Connection arguments of the sentinels: credentials and TLS."""


def is_sentinel(url: str | None) -> bool:
    return url is not None and url.startswith(SENTINEL_SCHEMES)


def _sentinel_address(part: str, *, alone: bool) -> tuple[str, int]:
    """``(host, port)`` of one ``host[:port]`` (``[v6]:port``) of the sentinel list."""
    if part.startswith("["):
        host, bracket, port = part[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            msg = "an IPv6 sentinel address is written [address]:port, e.g. [::1]:26379"
            raise ValueError(msg)
        port = port[1:]
    else:
        host, _, port = part.partition(":")
        if ":" in port:
            msg = "an IPv6 sentinel address is written [address]:port, e.g. [::1]:26379"
            raise ValueError(msg)
    if not host and not alone:
        msg = "every sentinel in the comma-separated list needs a host"
        raise ValueError(msg)
    if not port:
        return unquote(host) or "localhost", DEFAULT_SENTINEL_PORT
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        msg = "a sentinel port must be a number from 1 to 65535"
        raise ValueError(msg)
    return unquote(host) or "localhost", int(port)


def parse_sentinel_url(url: str) -> SentinelURL:
    """Read ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...][/service[/db]]``.

    The form langchain-community, LangGraph's Redis saver (redisvl) and LlamaIndex accept:
    one or more sentinels separated by commas (port 26379 when left out; IPv6 in
    brackets), then the service name the sentinels monitor (default ``mymaster``) and
    the database (default 0). ``rediss+sentinel://`` uses TLS to the sentinels and the
    master. The user name and password are the master's and, as in langchain-community,
    the sentinels' too; with the query parameter ``sentinel_password`` (and
    ``sentinel_username``) the sentinels use those instead (``?sentinel_password=``,
    empty: none). Every other query parameter is redis-py's, as in a ``redis://`` URL
    (``?socket_keepalive=true``); ``client_name`` and the TLS ones apply to the sentinel
    connections too.

    Raises:
        ValueError: What is wrong, without quoting the URL (it may hold a password).
    """
    scheme, _, rest = url.partition("://")
    if scheme + "://" not in SENTINEL_SCHEMES:
        msg = "must start with redis+sentinel:// or rediss+sentinel://"
        raise ValueError(msg)
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hostlist = netloc.rpartition("@")
    if "@" in tail:
        msg = f"holds an '@' after the sentinel hosts; {_ENCODE_HINT} (%2F, %3F, %23, %40)"
        raise ValueError(msg)
    if "#" in tail:
        msg = f"holds a '#' (a URL fragment means nothing to Redis); {_ENCODE_HINT}"
        raise ValueError(msg)
    parts = hostlist.split(",")
    sentinels = [_sentinel_address(part, alone=len(parts) == 1) for part in parts]
    path, _, query = tail.partition("?")
    segments = path.split("/")[1:]
    if segments and not segments[-1]:  # a trailing slash
        segments.pop()
    if len(segments) > 2:  # service and database
        msg = "the path is /service_name[/db], e.g. redis+sentinel://host:26379/mymaster/0"
        raise ValueError(msg)
    service = unquote(segments[0]) if segments and segments[0] else DEFAULT_SENTINEL_SERVICE
    db = segments[1] if len(segments) > 1 else ""
    if db and not (db.isascii() and db.isdigit()):
        msg = "the database must be a number, e.g. redis+sentinel://host:26379/mymaster/0"
        raise ValueError(msg)
    auth = {
        name: values[0]
        for name, values in parse_qs(query, keep_blank_values=True).items()
        if name in _SENTINEL_AUTH
    }
    kept = "&".join(p for p in query.split("&") if p and p.split("=", 1)[0] not in _SENTINEL_AUTH)
    # Everything but the hosts and the service is a plain Redis URL's: redis-py reads it.
    plain = "rediss" if scheme == "rediss+sentinel" else "redis"
    plain_url = f"{plain}://{userinfo}{at}localhost/{db}" + (f"?{kept}" if kept else "")
    try:
        connection: dict[str, Any] = parse_url(plain_url)  # type: ignore[no-untyped-call]
    except ValueError as e:  # its text names a query parameter, or quotes the user info
        text = str(e)
        problem = text if text.startswith("Invalid value for '") else "unreadable user info"
        raise ValueError(problem.rstrip(".")) from None
    connection.pop("host", None)
    connection.pop("port", None)
    if connection.pop("connection_class", None) is not None:  # rediss: SSLConnection
        connection["ssl"] = True
    sentinel = {
        k: v
        for k, v in connection.items()
        if k in ("username", "password", "ssl", "client_name") or k.startswith("ssl_")
    }
    if auth:  # the sentinels' own credentials, instead of the master's
        for name in _SENTINEL_AUTH:
            key, value = name.removeprefix("sentinel_"), auth.get(name)
            if value:
                sentinel[key] = value
            else:
                sentinel.pop(key, None)
    return SentinelURL(sentinels, service, connection, sentinel)


def sentinel_url_problem(url: str) -> str | None:
    """What :func:`parse_sentinel_url` finds wrong with ``url``, or ``None``."""
    try:
        parse_sentinel_url(url)
    except ValueError as e:
        return str(e)
    return None


class _SentinelConnection(redis.sentinel.SentinelManagedConnection):
    """A connection to the master that asks the sentinels where it is on every connect.

    redis-py's own reconnects a dropped connection to the address it had, retries
    included (redis/redis-py#3874): after a failover every retry of a write would reach
    the demoted master again (``READONLY``) or the dead one. Each attempt here connects
    once to the master the sentinels name now; the command's ``Retry`` makes the next.
    """

    @override
    def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self.is_connected:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=False)


class _SentinelSSLConnection(_SentinelConnection, redis.sentinel.SentinelManagedSSLConnection):
    """:class:`_SentinelConnection` over TLS (``rediss+sentinel://``)."""


class _AsyncSentinelConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """The asyncio :class:`_SentinelConnection`."""

    @override
    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self.is_connected:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(check_health=check_health, retry_socket_connect=False)


class _AsyncSentinelSSLConnection(
    _AsyncSentinelConnection, redis.asyncio.sentinel.SentinelManagedSSLConnection
):
    """:class:`_AsyncSentinelConnection` over TLS (``rediss+sentinel://``)."""


DEFAULT_MAX_CONNECTIONS = 100
"""redis-py's pool size when none is given (8.x); the store's gate when none is found."""


def pool_limit(client: Any) -> int:
    """How many connections ``client`` may open to one server (its pool's ``max_connections``).

    A cluster client's per-node limit is in its nodes manager's connection options.
    """
    limit = getattr(getattr(client, "connection_pool", None), "max_connections", None)
    if limit is None:
        options = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", None)
        limit = options.get("max_connections") if isinstance(options, dict) else None
    return limit if isinstance(limit, int) and limit > 0 else DEFAULT_MAX_CONNECTIONS


def sentinel_master(url: str, options: dict[str, Any], *, asynchronous: bool) -> Any:
    """A client of the master the sentinels of ``url`` name, following every failover.

    ``options`` (retry, timeouts) apply to the master's connections, as in
    ``redis.Redis.from_url`` the URL's query options win; the sentinels get the
    timeouts only: one sentinel down must not hold up the question to the next.
    """
    target = parse_sentinel_url(url)
    sentinel_kwargs = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel_kwargs.update(target.sentinel)
    tls = bool(target.connection.get("ssl"))
    sentinel_class: Any
    redis_class: type[Any]
    if asynchronous:
        sentinel_class, redis_class = redis.asyncio.sentinel.Sentinel, redis.asyncio.Redis
        connection_class: type[Any] = (
            _AsyncSentinelSSLConnection if tls else _AsyncSentinelConnection
        )
    else:
        sentinel_class, redis_class = redis.sentinel.Sentinel, redis.Redis
        connection_class = _SentinelSSLConnection if tls else _SentinelConnection
    manager = sentinel_class(
        target.sentinels, sentinel_kwargs=sentinel_kwargs, **{**options, **target.connection}
    )
    return manager.master_for(
        target.service, redis_class=redis_class, connection_class=connection_class
    )


_NOT_FOUND = (redis.sentinel.MasterNotFoundError, redis.asyncio.sentinel.MasterNotFoundError)
_SENTINEL_ERROR = re.compile(r"\)> - (.*?)(?=, <redis\.|$)")


def sentinel_failure(error: BaseException) -> str | None:
    """A short text for redis-py's "No master found" error, else ``None``.

    redis-py's message holds each sentinel client's whole repr (kilobytes of pool options)
    before the sentinel's own error; this keeps the errors, once each, and says so when
    the sentinels refused the credentials.
    """
    if not isinstance(error, _NOT_FOUND):
        return None
    head, _, rest = str(error).partition(" : ")
    reasons = list(dict.fromkeys(_SENTINEL_ERROR.findall(rest)))
    text = head
    if reasons:
        text += f" (the sentinels answered: {'; '.join(reasons)})"
    if any("AuthenticationError" in reason for reason in reasons):
        text += (
            "; the sentinels refused the credentials: give theirs as ?sentinel_password= "
            "(the URL's password is the master's, and theirs too when none is given)"
        )
    return text


def _sentinels_of(client: Any) -> list[Any]:
    """The clients of the sentinels behind a client from ``master_for`` (else none)."""
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    return list(getattr(manager, "sentinels", ()))


def close_client(client: Any) -> None:
    """Close a sync client this store made, and its sentinels' connections."""
    client.close()
    for sentinel in _sentinels_of(client):
        sentinel.close()


async def aclose_client(client: Any) -> None:
    """Close an asyncio client this store made, and its sentinels' connections."""
    await client.aclose()
    for sentinel in _sentinels_of(client):
        await sentinel.aclose()


def _host_port(kwargs: Mapping[str, Any]) -> str:
    host, port = str(kwargs.get("host", "localhost")), kwargs.get("port", DEFAULT_SENTINEL_PORT)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
