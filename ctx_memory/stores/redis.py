r"""The Redis store: one server or a Redis Cluster, sync (redis-py) and native asyncio.

Keys are ``P:{T}:<part>`` (``P`` is ``REDIS_KEY_PREFIX``; ``T`` the hex SHA-256 of the
UTF-8 session id, so no id, whatever characters it holds, can name another session's
keys), plus two index sorted sets ``P:{__index__}:lru`` and ``P:{__index__}:ids`` and the
``P:events`` channel; the one table of every key and field is in the manual
(``docs/stores.md``, "Redis key layout"), and :data:`SESSION_SUFFIXES` lists the parts.

``{T}`` is a hash tag: the keys of a session live in one slot, so one Lua script can
change them atomically on Redis Cluster too. Every write to a session is one call of the
script for that operation (``lua/session/<operation>.lua`` after ``lua/session.lua``: one
script per operation, :class:`~ctx_memory.stores._redis_lua.Script`) that also bumps the counters,
refreshes the TTL of every key (``PEXPIRE``), and — on a single server — updates the index
and evicts the least recently used sessions. Appending messages to a session this object
has written before uses a small dedicated script (``Script.APPEND``, ``lua/append.lua``:
one ``HMGET``, an ``HSETNX`` per message, one ``HSET``, the ``RPUSH`` and the ``PEXPIRE``
calls, one integer back); if the session vanished meanwhile it changes nothing and the
write is repeated with the init header. Reading the history, its length, the header or
the fetched items is a plain ``LRANGE`` / ``LLEN`` / ``HMGET`` (reads never slide the TTL);
with ``max_sessions`` the same round trip carries the session's LRU touch
(``Script.TOUCH``, ``lua/touch.lua``, which touches only a session that exists and is
indexed, so no read puts a deleted or evicted session back). The whole document (one
snapshot) and ``exists`` are read by their session scripts, which touch the index themselves.
The saved recall-index segments (derived data) are the list ``P:{T}:r``: saved by
``Script.RECALL`` (only while the session exists, with the session's remaining TTL),
read with an ``EXISTS`` of the hash in one round trip, neither an access; every script
that removes or changes stored messages, or removes the session, deletes it.
Expired sessions vanish by Redis-native expiry; ``gc()`` and ``list_sessions()``
drop their index entries and report ``session_expired`` (once, whichever process drops
it). On Redis Cluster the
index has its own slot: with ``max_sessions`` a write touches it in a call *before* the
session's script (a read's touch follows the read, when the session exists), and a write
that created the session indexes it in a call after, which chooses the victims of
eviction. Each victim is then marked in its own slot, dropped from the index if its score
is unchanged, and deleted if still marked (every write unmarks): a write landing during an
eviction is never deleted (``RedisOperations._cluster_evict``). A crash between those
calls can leave a session unindexed (not listed until it is recreated or written again
with ``max_sessions`` set; it still expires by TTL) or dropped from the index but alive
until its TTL; the session's own data is never half-written.

Retries are safe. Appends skip every message whose id the session holds, so a retried
append never stores a message twice, however many writes happen in between; each id
remembers the token of the write that stored it, so a retry whose first attempt landed
still answers that attempt's count. Every other write carries a random
token whose result the session keeps for at least ten minutes of server time, so a write
retried by redis-py's ``Retry`` after a dropped connection is applied once and answers
its first result. Tokens are left out only when nothing can re-send a write: the store's
own clients on a single server with ``max_retries=0``.

Layout: the key names are in :mod:`ctx_memory.stores._redis_keys`, what is written and read
back in :mod:`ctx_memory.stores._redis_codec` (both pure, re-exported here where public),
and the scripts in ``ctx_memory/stores/lua/``, composed once at import by
:mod:`ctx_memory.stores._redis_lua`. Scripts run by ``EVALSHA``, one round trip; a server
that lacks one (restarted, failed over, flushed) answers ``NOSCRIPT`` and ``_do`` /
``_ado`` load it there and repeat that command. With a plain client (not a cluster) the
sync calls skip redis-py's command machinery: :mod:`ctx_memory.stores._redis_wire` packs
them and sends them on the client's connections (kept between calls when the store made
the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, TypeVar, Union

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from typing_extensions import override

from ctx_memory._store_urls import scrub_error
from ctx_memory.config import redact_url, validate_redis_url
from ctx_memory.errors import (
    ConfigurationError,
    StoreError,
    StoreUnavailableError,
)
from ctx_memory.stores._gc import GarbageCollector, gc_interval
from ctx_memory.stores._redis_clients import (
    aclose_client,
    client_url,
    close_client,
    is_sentinel,
    parse_sentinel_url,
    pool_limit,
    release_client,
    runs_here,
    sentinel_failure,
    sentinel_master,
    sentinel_url_problem,
)
from ctx_memory.stores._redis_keys import (
    SESSION_SUFFIXES,
    SessionKeys,
    index_key,
    lex_key,
    member_id,
    session_keys,
    session_tag,
)
from ctx_memory.stores._redis_ops import RedisOperations
from ctx_memory.stores._redis_requests import (
    Call,
    Pipeline,
    Prepared,
    Request,
    commands_of,
    script_of,
)
from ctx_memory.stores._redis_wire import MasterWatch, Wire, pack, pack_prepared
from ctx_memory.stores.base import check_limits
from ctx_memory.stores.redis_events import RedisEventPublisher

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    from redis.client import PubSubWorkerThread

    from ctx_memory.config import Settings
    from ctx_memory.stores.ops import StoreOp

__all__ = [
    "EventSubscription",
    "RedisStore",
    # re-exported: key names and Sentinel URLs live in private modules
    "SESSION_SUFFIXES",
    "SessionKeys",
    "index_key",
    "lex_key",
    "member_id",
    "parse_sentinel_url",
    "sentinel_url_problem",
    "session_keys",
    "session_tag",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

SyncClient = Union["redis.Redis", "redis.cluster.RedisCluster"]
AsyncClient = Union["redis.asyncio.Redis", "redis.asyncio.cluster.RedisCluster"]

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_REFUSED_NOW = (redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError)
_REFUSED_FOR_NOW = ("NOREPLICAS", "READONLY", "MASTERDOWN", "LOADING")
"""Error replies of a server that cannot take the call now but may soon (or another server
may): a master without enough replicas (``min-replicas-to-write``), a demoted master, a
replica cut off from its master, a server loading its data. Nothing was written. redis-py
raises some as their own classes (``_REFUSED_NOW``), their code left out of the text."""
_FAILED = (RedisError, redis.exceptions.RedisClusterException, *_UNAVAILABLE)
"""What a call wraps: redis-py's cluster errors ("cannot be connected", a slot no live
node serves) are no ``RedisError``."""


# A server that does not hold a script (restarted, failed over, SCRIPT FLUSH, a cluster
# node) answers NOSCRIPT: the drivers send that command again with the script's body
# (EVAL), which loads it there.


def _unloaded(commands: Sequence[tuple[Any, ...]], replies: list[Any]) -> list[tuple[int, str]]:
    """The replies that are NOSCRIPT errors, with the script to load; raises other errors."""
    missing = []
    for i, reply in enumerate(replies):
        if isinstance(reply, ResponseError):
            script = script_of(commands[i]) if isinstance(reply, NoScriptError) else None
            if script is None:
                raise reply
            missing.append((i, script))
    return missing


def _with_body(command: tuple[Any, ...], script: str) -> tuple[Any, ...]:
    """An ``EVALSHA`` command sent again as ``EVAL`` with its script's body.

    The node that runs it keeps the script, so it is loaded only where the command's keys
    are: ``SCRIPT LOAD`` on a cluster goes to every primary and fails if one is down.
    """
    return ("EVAL", script, *command[2:])


def _closed_under_the_call(error: BaseException) -> bool:
    """Whether ``error`` is redis-py's asyncio connection used after it was closed.

    A connection closed meanwhile (by the server, or by redis-py's cluster client resetting
    a node's connections while others use them) surfaces as an ``AttributeError`` or
    ``TypeError`` raised inside redis-py or asyncio's transport (redis-py issue 4287), not
    as a ``ConnectionError``.
    """
    modules = []
    trace = error.__traceback__
    while trace is not None:
        modules.append(str(trace.tb_frame.f_globals.get("__name__", "")))
        trace = trace.tb_next
    inside = modules[-1].startswith(("redis.", "asyncio.")) if modules else False
    return inside and any(m.startswith("redis.asyncio.") for m in modules)


def _checked(reply: Any) -> Any:
    """``reply``, unless it is an error (then raised)."""
    if isinstance(reply, ResponseError):
        raise reply
    return reply


def _sync_replies(client: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Replies of ``commands`` by redis-py's own command path, errors as values.

    For a cluster, a single-connection client, and a command sent again once its script
    is loaded; a plain client's calls go by :class:`~ctx_memory.stores._redis_wire.Wire`.
    """
    if len(commands) == 1:
        try:
            return [client.execute_command(*commands[0])]
        except ResponseError as error:
            return [error]
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]


async def _async_replies(client: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Replies of ``commands`` on an asyncio client, errors as values."""
    if len(commands) == 1:
        try:
            return [await client.execute_command(*commands[0])]
        except ResponseError as error:
            return [error]
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]


class EventSubscription:
    """A running subscription to a store's published events; :meth:`close` stops it."""

    def __init__(self, pubsub: Any, thread: PubSubWorkerThread) -> None:
        self._pubsub = pubsub
        self._thread = thread
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (the listener stops after its current event)."""
        return self._closed

    def close(self) -> None:
        """Stop listening and release the connection. Idempotent.

        From the listener's own thread (a callback closing its subscription or its store)
        it does not wait for itself: the listener stops after the current callback and
        releases the connection then.
        """
        self._closed = True
        self._thread.stop()
        if self._thread is threading.current_thread():
            return
        self._thread.join(timeout=5)
        self._pubsub.close()

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisStore(RedisOperations):
    """Sessions in Redis (one server or a Redis Cluster), shared by every process using it.

    Each write is one Lua script call, atomic, with its sliding-TTL refresh and counter
    updates; see the module docstring for the key layout. Appends are O(1), reading the
    last ``k`` messages is one ``LRANGE`` of ``k`` elements.

    Args:
        url: ``redis://[[user]:password@]host:port/db``, ``rediss://`` (TLS),
            ``unix:///path.sock``, or through Sentinel
            ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...][/service[/db]]``
            (``rediss+sentinel://`` for TLS; see :func:`parse_sentinel_url`). Ignored when
            ``client`` is given.
        client: An existing sync client (``redis.Redis`` or ``redis.cluster.RedisCluster``)
            to use instead of ``url``; the store does not close it.
        async_client: An existing ``redis.asyncio`` client for the async methods; by
            default one is created from ``url`` on first use.
        cluster: Talk to a Redis Cluster (default: detected from ``client``).
        key_prefix: Prefix of every key (must not contain ``{`` or ``}``).
        ttl_seconds: Sliding time to live; ``None`` for no expiry (Redis-native expiry).
        max_sessions: Most live sessions across every process; ``None`` for no limit.
        max_retries: Retries with exponential backoff when the connection fails.
        socket_timeout: Seconds to wait for Redis before failing.
        publish_events: Also publish every change on the ``<prefix>:events`` channel.
        gc_interval_seconds: Run :meth:`gc` in a background thread at this interval
            (dropping expired sessions from the index); ``None`` for none. A failing
            collection is logged and retried; the thread stops on :meth:`close`.

    Example:
        .. code-block:: python

            # needs a running redis-server
            from ctx_memory import ContextManager
            from ctx_memory.stores.redis import RedisStore

            with RedisStore("redis://localhost:6379/0", ttl_seconds=3600) as store:
                manager = ContextManager(store=store)
                manager.add_user_message("s1", "hi")
                assert store.count_messages("s1") == 1
    """

    name = "redis"
    keeps_recall_segments = True
    imports_if_absent = True

    def __init__(
        self,
        url: str | None = None,
        *,
        client: SyncClient | None = None,
        async_client: AsyncClient | None = None,
        cluster: bool | None = None,
        key_prefix: str = "ctx_memory",
        ttl_seconds: float | None = None,
        max_sessions: int | None = None,
        max_retries: int = 3,
        socket_timeout: float = 5.0,
        publish_events: bool = False,
        gc_interval_seconds: float | None = None,
    ) -> None:
        ttl_seconds = check_limits(ttl_seconds, max_sessions)
        if not key_prefix or "{" in key_prefix or "}" in key_prefix:
            msg = f"must be non-empty without '{{' or '}}' (hash tags), got {key_prefix!r}"
            raise ConfigurationError("REDIS_KEY_PREFIX", msg)
        if client is None and url is None:
            url = "redis://localhost:6379/0"
        if client is None:  # malformed: ConfigurationError naming REDIS_URL, password masked
            url = validate_redis_url(url)
        if cluster is None:
            cluster = client is not None and isinstance(client, redis.cluster.RedisCluster)
        if cluster and client is None and is_sentinel(url):
            msg = "a Redis Cluster is not reached through Sentinel: give one of its nodes' URL"
            raise ConfigurationError("REDIS_CLUSTER", msg)
        self.cluster = cluster
        self.prefix = key_prefix
        self.ttl_seconds = ttl_seconds
        self.max_sessions = max_sessions
        self.publish_events = publish_events
        self.channel = f"{key_prefix}:events"
        self._ttl_ms = str(max(1, round(ttl_seconds * 1000))) if ttl_seconds else "0"
        self._max = str(max_sessions or 0)
        self._limits = f"{self._ttl_ms}:{self._max}"
        # Sessions this object has written, each with the start of its APPEND_SCRIPT call
        # (EVALSHA, sha, key count, keys; bytes, and packed once): their writes skip sending
        # the init header (the script asks for it, costing a second round trip, if the
        # session vanished since). The keys are H, M and IDS, plus F and FP once the session
        # has fetched items (always with the index keys, which come with max_sessions).
        self._known: OrderedDict[str, Call] = OrderedDict()
        self._idx_arg: tuple[str, ...] = (
            (index_key(key_prefix), lex_key(key_prefix)) if max_sessions and not cluster else ()
        )
        self._url = url if client is None else client_url(client)
        self._max_retries = max_retries
        self._socket_timeout = socket_timeout
        self._owns_client = client is None
        self._client: SyncClient | None = None
        self._wire: Wire | None = None  # how a plain client's commands go (_redis_wire)
        self._gate: threading.BoundedSemaphore | None = None  # the other clients' calls
        self._wait = socket_timeout  # the longest a call waits for a free connection
        # per event loop: its gate (at most the pool's connections at once) and where the
        # sentinels say the master is (None: no Sentinel)
        self._agates: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[asyncio.Semaphore, MasterWatch | None]
        ] = weakref.WeakKeyDictionary()
        if client is not None:
            self._use(client)
        self._owns_async = async_client is None
        self._aclient: AsyncClient | None = async_client
        # Clients this store made, one per event loop that used it (a redis.asyncio client
        # is bound to the loop it first ran on): reused by that loop, closed by aclose().
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        # Write tokens make a write retried by redis-py's Retry apply once; they are only
        # left out when no retry can happen (our own single-server clients, max_retries=0).
        self._tokens = bool(
            max_retries > 0 or cluster or client is not None or async_client is not None
        )
        self._idx = index_key(key_prefix)
        self._lex = lex_key(key_prefix)
        self._closed = False
        self._layout_checked = False
        self._publish_with(
            RedisEventPublisher(lambda: self.client, self.channel, describe=lambda: self.url)
            if publish_events
            else None
        )
        self._collector = (
            GarbageCollector(self.gc, gc_interval_seconds, name=repr(self))
            if gc_interval_seconds is not None
            else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStore:
        """A store configured from :class:`~ctx_memory.config.Settings`."""
        return cls(
            settings.redis_url,
            cluster=settings.redis_cluster,
            key_prefix=settings.redis_key_prefix,
            ttl_seconds=settings.ttl_seconds,
            max_sessions=settings.max_sessions,
            max_retries=settings.redis_max_retries,
            socket_timeout=settings.redis_socket_timeout,
            publish_events=settings.redis_publish_events,
            gc_interval_seconds=gc_interval(settings),
        )

    @property
    def url(self) -> str:
        """The server's URL with any password replaced by ``***``."""
        return redact_url(self._url or "")

    def __repr__(self) -> str:
        return (
            f"RedisStore(url={self.url!r}, cluster={self.cluster}, prefix={self.prefix!r}, "
            f"ttl_seconds={self.ttl_seconds}, max_sessions={self.max_sessions})"
        )

    # ------------------------------------------------------------ clients

    def _retry_kwargs(self, retry_cls: type[Any]) -> dict[str, Any]:
        return {
            "retry": retry_cls(ExponentialBackoff(cap=1.0, base=0.05), self._max_retries),
            "socket_timeout": self._socket_timeout,
            "socket_connect_timeout": self._socket_timeout,
        }

    def _use(self, client: SyncClient) -> None:
        """Send with ``client``: by its pool directly if it is a plain (pooled) client.

        Calls beyond the pool's ``max_connections`` at once wait for a connection (the
        wire's own wait; a semaphore on a cluster's) instead of failing with redis-py's
        "Too many connections".
        """
        self._wire = None
        self._gate = None
        if isinstance(client, redis.Redis) and not self.cluster and client.connection is None:
            # Not a single-connection client: its pool's connections, kept if it is ours.
            self._wire = Wire(client.connection_pool, keep=self._owns_client, wait=self._wait)
        else:
            self._gate = threading.BoundedSemaphore(pool_limit(client))
        self._client = client

    @property
    def client(self) -> SyncClient:
        """The sync client (created from the URL on first use)."""
        if self._client is None:
            with self._lock:
                if self._closed:
                    raise self._closed_error()
                if self._client is None:
                    kwargs = self._retry_kwargs(redis.retry.Retry)
                    assert self._url is not None
                    try:
                        if self.cluster:
                            client: SyncClient = redis.cluster.RedisCluster.from_url(
                                self._url, **kwargs
                            )
                        elif is_sentinel(self._url):
                            client = sentinel_master(self._url, kwargs, asynchronous=False)
                        else:
                            client = redis.Redis.from_url(self._url, **kwargs)
                    except _FAILED as e:
                        raise self._wrap(e) from e
                    self._use(client)
        assert self._client is not None
        return self._client

    @property
    def async_client(self) -> AsyncClient:
        """The asyncio client for the running event loop (created on its first use).

        Each event loop gets its own client (a redis.asyncio connection belongs to the
        loop it was opened on) and keeps it; clients of loops that have closed since are
        released when another loop asks, and every client is closed by :meth:`aclose`.
        """
        if not self._owns_async:
            assert self._aclient is not None
            if self._closed:
                raise self._closed_error()
            return self._aclient
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is not None:
            return client
        with self._lock:
            if self._closed:
                raise self._closed_error()
            for old in [old for old in self._aclients if old.is_closed()]:
                release_client(self._aclients.pop(old))
            kwargs = self._retry_kwargs(redis.asyncio.retry.Retry)
            assert self._url is not None
            if self.cluster:
                client = redis.asyncio.cluster.RedisCluster.from_url(
                    self._url, startup_nodes=self._known_nodes(), **kwargs
                )
            elif is_sentinel(self._url):
                client = sentinel_master(self._url, kwargs, asynchronous=True)
            else:
                client = redis.asyncio.Redis.from_url(self._url, **kwargs)
            self._aclients[loop] = client
        return client

    def _known_nodes(self) -> list[redis.asyncio.cluster.ClusterNode]:
        """The cluster nodes this store's clients know, to start a new loop's client from.

        ``REDIS_URL`` names one node: a client started from it alone fails while that node
        is down, though the cluster promoted its replica. The nodes the sync client and
        the other loops' clients found are tried too.
        """
        known: dict[tuple[str, int], None] = {}
        clients = [self._client, *self._aclients.values()]
        for client in clients:
            with contextlib.suppress(AttributeError, RuntimeError, TypeError):
                for node in client.get_nodes():  # type: ignore[union-attr]
                    known[str(node.host), int(node.port)] = None
        return [redis.asyncio.cluster.ClusterNode(host, port) for host, port in known]

    @property
    def async_client_count(self) -> int:
        """How many asyncio clients this store holds open (one per live event loop)."""
        return len(self._aclients)

    def _closed_error(self) -> StoreError:
        return StoreError(f"Redis store {self.url} is closed")

    def _wrap(self, error: BaseException) -> StoreError:
        where = f"Redis at {self.url}"
        scrub_error(error, self._url or "")  # (its __cause__: no password may stay in it)
        if (
            isinstance(error, (*_UNAVAILABLE, *_REFUSED_NOW, redis.exceptions.SlotNotCoveredError))
            or "ClusterDown" in type(error).__name__
            or "cannot be connected" in str(error)  # every startup node is down
            or str(error).startswith(_REFUSED_FOR_NOW)
        ):
            text = sentinel_failure(error) or str(error)
            return StoreUnavailableError(f"{where} is unavailable: {text}")
        return StoreError(f"{where} failed: {type(error).__name__}: {error}")

    # ------------------------------------------------------------ drivers

    def _drive(self, op: Generator[Request, Any, T]) -> T:
        try:
            request = next(op)
            while True:
                request = op.send(self._do(request))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except StoreError:
            raise
        except _FAILED as e:
            raise self._wrap(e) from e
        except (AttributeError, TypeError) as e:  # (the asyncio twin's case; never here)
            if not _closed_under_the_call(e):
                raise
            dropped = RedisConnectionError(f"the connection was closed during the call ({e})")
            raise self._wrap(dropped) from e

    def _do(self, request: Request) -> Any:
        client: Any = self.client  # RedisCluster.execute_command is untyped
        commands = commands_of(request)
        wire = self._wire
        if wire is not None:  # a plain client: the hot path (ctx_memory.stores._redis_wire)
            if isinstance(request, Prepared):
                call, tail = request
                data = pack_prepared(len(call.args) + len(tail), call.packed, tail)
            else:
                data = pack(commands)
            replies = wire.roundtrip(data, len(commands))
        else:
            replies = self._gated(_sync_replies, client, commands)
        for i, script in _unloaded(commands, replies):
            if wire is not None:  # on the wire too: the pool's connections are the wire's
                loaded = wire.roundtrip(pack([("SCRIPT", "LOAD", script), commands[i]]), 2)
                _checked(loaded[0])
                replies[i] = _checked(loaded[1])
            else:
                again = [_with_body(commands[i], script)]
                replies[i] = _checked(self._gated(_sync_replies, client, again)[0])
        return replies if isinstance(request, Pipeline) else replies[0]

    def _gated(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)``, waiting while all the pool's connections are in use (not wired)."""
        gate = self._gate
        if gate is None:
            return call(*args)
        if not gate.acquire(timeout=self._wait):
            msg = f"Too many connections: all in use for {self._wait:g} s"
            raise redis.exceptions.ConnectionError(msg)
        try:
            return call(*args)
        finally:
            gate.release()

    async def _adrive(self, op: Generator[Request, Any, T]) -> T:
        try:
            request = next(op)
            while True:
                request = op.send(await self._ado(request))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except StoreError:
            raise
        except _FAILED as e:
            raise self._wrap(e) from e
        except (AttributeError, TypeError) as e:
            if not _closed_under_the_call(e):
                raise
            dropped = RedisConnectionError(f"the connection was closed during the call ({e})")
            raise self._wrap(dropped) from e

    async def _ado(self, request: Request) -> Any:
        client = self.async_client
        commands = commands_of(request)
        # At most the pool's max_connections calls at once on this loop: the others wait
        # for their turn instead of failing with redis-py's "Too many connections".
        loop = asyncio.get_running_loop()
        found = self._agates.get(loop)
        if found is None:
            watch = MasterWatch.of(getattr(client, "connection_pool", None))
            found = self._agates[loop] = (asyncio.Semaphore(pool_limit(client)), watch)
        gate, watch = found
        if watch is not None:
            await watch.acheck()
        async with gate:
            if self.cluster and getattr(client, "_initialize", False):
                # redis-py routes a command that arrives while a cluster client has no slot
                # map (a new client, or one a node failure reset) to a random node; every
                # fifth MOVED resets the map again, which drops every connection in flight.
                # Load it first; if that fails, the command's own retries (which skip the
                # failed node) take over.
                with contextlib.suppress(*_FAILED):
                    await client.initialize()
            replies = await _async_replies(client, commands)
            for i, script in _unloaded(commands, replies):
                again = [_with_body(commands[i], script)]
                replies[i] = _checked((await _async_replies(client, again))[0])
        return replies if isinstance(request, Pipeline) else replies[0]

    @override
    def handle(self, op: StoreOp) -> object:
        if not self._layout_checked:
            self._drive(self._op_layout())
            self._layout_checked = True
        return self._drive(self._plan(op))

    @override
    async def ahandle(self, op: StoreOp) -> object:
        if not self._layout_checked:
            await self._adrive(self._op_layout())
            self._layout_checked = True
        return await self._adrive(self._plan(op))

    @override
    def close(self) -> None:
        self._stop_subscriptions()
        if self.publisher is not None:
            self.publisher.close()
        self._closed = True
        collector, self._collector = self._collector, None
        if collector is not None:
            collector.stop()
        client, self._client, wire, self._wire = self._client, None, self._wire, None
        if wire is not None:
            wire.close()
        if client is not None and self._owns_client:
            close_client(client)
        with self._lock:
            clients = list(self._aclients.items())
            self._aclients.clear()
        for loop, aclient in clients:  # nothing to await on here: close each on its loop
            if loop.is_running() and not runs_here(loop):
                asyncio.run_coroutine_threadsafe(aclose_client(aclient), loop)
            else:  # closed, idle, or this thread's loop (which a sync call is blocking)
                release_client(aclient)

    @property
    def gc_running(self) -> bool:
        """Whether the background garbage collector is running."""
        return self._collector is not None and self._collector.running

    @override
    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            aclient = self._aclients.pop(loop, None)
        if aclient is not None:
            await aclose_client(aclient)
        self.close()  # the other loops' clients and the garbage collector

    # ------------------------------------------------------------ events across processes

    def subscribe_events(self, callback: Callable[[dict[str, Any]], None]) -> EventSubscription:
        """Call ``callback`` in a background thread for every event published on the channel.

        Events are published by stores created with ``publish_events=True`` (in any process)
        as JSON objects ``{"type", "session_id", "data", "timestamp"}``, the shape of
        :meth:`ctx_memory.events.Event.to_dict`.

        Returns:
            The subscription; call :meth:`EventSubscription.close` to stop it.
        """

        def handle(message: dict[str, Any]) -> None:
            try:
                callback(json.loads(message["data"]))
            except Exception:
                logger.exception("ctx_memory event subscriber %r failed", callback)

        def lost(error: BaseException, _pubsub: Any, _thread: Any) -> None:
            # The server went away: say so once a second at most, wait, and go on; the
            # next read reconnects and subscribes again (as the PostgreSQL listener does).
            now = time.monotonic()
            if now - last_warning[0] >= 1.0:
                last_warning[0] = now
                logger.warning(
                    "ctx_memory: listening on %s failed (%s); reconnecting",
                    self.channel,
                    type(error).__name__,
                )
            time.sleep(0.2)

        last_warning = [-1.0]
        try:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            pubsub.subscribe(**{self.channel: handle})
            thread = pubsub.run_in_thread(sleep_time=0.01, daemon=True, exception_handler=lost)
        except _FAILED as e:
            raise self._wrap(e) from e
        return self._subscribed(EventSubscription(pubsub, thread))
