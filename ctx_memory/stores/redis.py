r"""The Redis store: one server or a Redis Cluster, sync (redis-py) and native asyncio.

Keys are ``P:{T}:<part>`` (``P`` is ``REDIS_KEY_PREFIX``; ``T`` the hex SHA-256 of the
UTF-8 session id, so no id, whatever characters it holds, can name another session's
keys), plus two index sorted sets ``P:{__index__}:lru`` and ``P:{__index__}:ids`` and the
``P:events`` channel; the one table of every key and field is in the manual
(``docs/stores.md``, "Redis key layout"), and :data:`SESSION_SUFFIXES` lists the parts.

``{T}`` is a hash tag: the keys of a session live in one slot, so one Lua script can
change them atomically on Redis Cluster too. Every write to a session is one call of one
script (``SESSION_SCRIPT``, from ``lua/session.lua``) that also bumps the counters,
refreshes the TTL of every key (``PEXPIRE``), and — on a single server — updates the index
and evicts the least recently used sessions. Appending messages to a session this object
has written before uses a small dedicated script (``APPEND_SCRIPT``, ``lua/append.lua``:
one ``HMGET``, an ``HSETNX`` per message, one ``HSET``, the ``RPUSH`` and the ``PEXPIRE``
calls, one integer back); if the session vanished meanwhile it changes nothing and the
write is repeated with the init header. Reading messages or counting them without
``max_sessions`` (no LRU index to touch; reads never slide the TTL) is a plain ``LRANGE`` /
``LLEN``. Expired sessions vanish by Redis-native expiry; ``gc()`` and ``list_sessions()``
drop their index entries and report ``session_expired`` (once, whichever process drops
it). On Redis Cluster the
index has its own slot: it is updated by a second call right after the session's script
(when the write created the session or ``max_sessions`` is set), and an evicted session's
keys are deleted by a third call per victim. A crash between those calls can leave a
session unindexed (not listed until it is recreated or written again with
``max_sessions`` set; it still expires by TTL) or dropped from the index but alive until
its TTL; the session's own data is never half-written.

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
that lacks one (restarted, failed over, flushed) answers ``NOSCRIPT`` and ``_run`` /
``_arun`` load it there and repeat the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, Union, assert_never
from urllib.parse import parse_qs, unquote

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from typing_extensions import override

from ctx_memory.config import redact_url, url_secrets, validate_redis_url
from ctx_memory.errors import (
    ConfigurationError,
    SharedStateTooLargeError,
    StoreError,
    StoreUnavailableError,
)
from ctx_memory.schema import dumps
from ctx_memory.stores._gc import GarbageCollector, gc_interval
from ctx_memory.stores._redis_codec import (
    append_result,
    as_int,
    clean_init,
    decode_fetched,
    decode_header,
    encode_fetched,
    json_str,
    triples,
    write_result,
)
from ctx_memory.stores._redis_keys import (
    SESSION_SUFFIXES,  # noqa: F401 - re-exported
    SessionKeys,  # noqa: F401 - re-exported
    as_text,
    index_key,
    lex_key,
    member_id,
    session_keys,
    session_tag,  # noqa: F401 - re-exported
)
from ctx_memory.stores._redis_lua import APPEND_SCRIPT, INDEX_SCRIPT, SESSION_SCRIPT
from ctx_memory.stores.base import (
    MAX_SHARED_BYTES,
    BaseStore,
    EncodedItem,
    EncodedMessage,
    Header,
    WriteResult,
    assemble_document,
    check_limits,
)
from ctx_memory.stores.ops import (
    AppendFetched,
    AppendMessages,
    ClearSession,
    CollectGarbage,
    CountMessages,
    CreateSession,
    DeleteMessages,
    DeleteSession,
    GetDocument,
    GetFetched,
    GetHeader,
    GetMessages,
    ListPage,
    ListSessions,
    MergeShared,
    ReplaceDocument,
    ReplaceMessage,
    SessionExists,
    SetShared,
    StoreOp,
    TruncateMessages,
    UpdateHeader,
)
from ctx_memory.stores.redis_events import RedisEventPublisher

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Mapping, Sequence

    from redis.client import PubSubWorkerThread

    from ctx_memory.config import Settings
    from ctx_memory.events import Event

__all__ = ["EventSubscription", "RedisStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

SyncClient = Union["redis.Redis", "redis.cluster.RedisCluster"]
AsyncClient = Union["redis.asyncio.Redis", "redis.asyncio.cluster.RedisCluster"]

_HEADER_FIELDS = ("id", "sp", "md", "sh", "mc", "tc", "ts")
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


# ---------------------------------------------------------------- requests

# Every operation is written once, as a generator that yields requests and receives their
# replies; ``_drive`` runs it on the sync client and ``_adrive`` on the asyncio client.


_SESSION, _INDEX, _APPEND = 0, 1, 2
_SCRIPTS = (SESSION_SCRIPT, INDEX_SCRIPT, APPEND_SCRIPT)
_SHAS = tuple(hashlib.sha1(s.encode()).hexdigest() for s in _SCRIPTS)  # noqa: S324 - script id
_APPEND_SHA = _SHAS[_APPEND].encode()


class _Eval(NamedTuple):
    script: int  # _SESSION, _INDEX or _APPEND
    keys: tuple[str | bytes, ...]
    args: tuple[Any, ...]


class _Command(NamedTuple):
    args: tuple[Any, ...]  # a complete command: EVALSHA of APPEND_SCRIPT, LRANGE, ZMSCORE


@dataclass(frozen=True, slots=True)
class _Exists:
    keys: tuple[str, ...]


# The one place a missing script is handled, per client kind: a server that does not hold
# the script (restarted, failed over, SCRIPT FLUSH, a cluster node) answers NOSCRIPT; the
# script is loaded there and the same command sent again.


def _run(client: Any, script: str, *command: Any) -> Any:
    """``client.execute_command(*command)``, loading ``script`` first if the server lacks it."""
    try:
        return client.execute_command(*command)
    except NoScriptError:
        client.script_load(script)
        return client.execute_command(*command)


async def _arun(client: Any, script: str, *command: Any) -> Any:
    """``await client.execute_command(*command)``, loading ``script`` if the server lacks it."""
    try:
        return await client.execute_command(*command)
    except NoScriptError:
        await client.script_load(script)
        return await client.execute_command(*command)


_Request = _Eval | _Command | _Exists


class EventSubscription:
    """A running subscription to a store's published events; :meth:`close` stops it."""

    def __init__(self, pubsub: Any, thread: PubSubWorkerThread) -> None:
        self._pubsub = pubsub
        self._thread = thread

    def close(self) -> None:
        """Stop listening and release the connection."""
        self._thread.stop()
        self._thread.join(timeout=5)
        self._pubsub.close()

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisStore(BaseStore):
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
        if cluster and client is None and _is_sentinel(url):
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
        # (EVALSHA, sha, key count, keys; bytes): their writes skip sending the init header
        # (the script asks for it, costing a second round trip, if the session vanished
        # since). The keys are H and M, plus F and FP once the session has fetched items.
        self._known: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._idx_arg: tuple[str, ...] = (
            (index_key(key_prefix), lex_key(key_prefix)) if max_sessions and not cluster else ()
        )
        self._url = url if client is None else _client_url(client)
        self._max_retries = max_retries
        self._socket_timeout = socket_timeout
        self._owns_client = client is None
        self._client: SyncClient | None = client
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
        self.publisher = (
            RedisEventPublisher(lambda: self.client, self.channel, describe=lambda: self.url)
            if publish_events
            else None
        )
        if self.publisher is not None:  # expiries and evictions: once per store
            self.add_lifecycle_hook(self.publisher.lifecycle, key=self.publisher)
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

    @property
    def client(self) -> SyncClient:
        """The sync client (created from the URL on first use)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    kwargs = self._retry_kwargs(redis.retry.Retry)
                    assert self._url is not None
                    try:
                        if self.cluster:
                            self._client = redis.cluster.RedisCluster.from_url(self._url, **kwargs)
                        elif _is_sentinel(self._url):
                            self._client = _sentinel_master(self._url, kwargs, asynchronous=False)
                        else:
                            self._client = redis.Redis.from_url(self._url, **kwargs)
                    except (RedisError, redis.exceptions.RedisClusterException, *_UNAVAILABLE) as e:
                        raise self._wrap(e) from e
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
            return self._aclient
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is not None:
            return client
        with self._lock:
            for old in [old for old in self._aclients if old.is_closed()]:
                _release(self._aclients.pop(old))
            kwargs = self._retry_kwargs(redis.asyncio.retry.Retry)
            assert self._url is not None
            if self.cluster:
                client = redis.asyncio.cluster.RedisCluster.from_url(self._url, **kwargs)
            elif _is_sentinel(self._url):
                client = _sentinel_master(self._url, kwargs, asynchronous=True)
            else:
                client = redis.asyncio.Redis.from_url(self._url, **kwargs)
            self._aclients[loop] = client
        return client

    @property
    def async_client_count(self) -> int:
        """How many asyncio clients this store holds open (one per live event loop)."""
        return len(self._aclients)

    def _wrap(self, error: BaseException) -> StoreError:
        where = f"Redis at {self.url}"
        secrets = url_secrets(self._url or "")
        if secrets and any(secret in str(arg) for arg in error.args for secret in secrets):
            # The error becomes our error's __cause__: no password may stay in it either.
            error.args = tuple(_scrub(arg, secrets) for arg in error.args)
        if isinstance(error, _UNAVAILABLE) or "ClusterDown" in type(error).__name__:
            return StoreUnavailableError(f"{where} is unavailable: {error}")
        return StoreError(f"{where} failed: {type(error).__name__}: {error}")

    # ------------------------------------------------------------ drivers

    def _drive(self, op: Generator[_Request, Any, T]) -> T:
        try:
            request = next(op)
            while True:
                request = op.send(self._do(request))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except StoreError:
            raise
        except (RedisError, *_UNAVAILABLE) as e:
            raise self._wrap(e) from e

    def _do(self, request: _Request) -> Any:
        client: Any = self.client  # RedisCluster.execute_command is untyped
        if isinstance(request, _Eval):
            script, keys, args = request
            return _run(client, _SCRIPTS[script], "EVALSHA", _SHAS[script], len(keys), *keys, *args)
        if isinstance(request, _Command):  # the only script sent as a _Command is APPEND_SCRIPT
            return _run(client, APPEND_SCRIPT, *request.args)
        pipe = client.pipeline(transaction=False)  # _Exists
        for key in request.keys:
            pipe.exists(key)
        return pipe.execute()

    async def _adrive(self, op: Generator[_Request, Any, T]) -> T:
        try:
            request = next(op)
            while True:
                request = op.send(await self._ado(request))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except StoreError:
            raise
        except (RedisError, *_UNAVAILABLE) as e:
            raise self._wrap(e) from e

    async def _ado(self, request: _Request) -> Any:
        client = self.async_client
        if isinstance(request, _Eval):
            script, keys, args = request
            return await _arun(
                client, _SCRIPTS[script], "EVALSHA", _SHAS[script], len(keys), *keys, *args
            )
        if isinstance(request, _Command):  # the only script sent as a _Command is APPEND_SCRIPT
            return await _arun(client, APPEND_SCRIPT, *request.args)
        pipe = client.pipeline(transaction=False)  # _Exists
        for key in request.keys:
            pipe.exists(key)
        return await pipe.execute()

    # ------------------------------------------------------------ operations (written once)

    def _session(
        self,
        op: str,
        session_id: str,
        *extra: Any,
        token: str = "",
        now: str = "",
        init: str = "",
    ) -> _Eval:
        keys: tuple[str, ...] = session_keys(self.prefix, session_id).script_keys
        if not self.cluster:
            keys += (self._idx, self._lex)
        return _Eval(
            _SESSION, keys, (f"{op}:{self._limits}:{token}", session_id, now, init, *extra)
        )

    def _index(self, op: str, *args: Any) -> _Eval:
        return _Eval(_INDEX, (self._idx, self._lex, self._lex + "v"), (op, *args))

    def _read(self, op: str, session_id: str, *extra: Any) -> Generator[_Request, Any, Any]:
        reply = yield self._session(op, session_id, *extra)
        if self.cluster and self.max_sessions is not None and reply:
            yield self._index("read", session_keys(self.prefix, session_id).member)
        return reply

    def _write(
        self,
        op: str,
        session_id: str,
        init: Header,
        now: str,
        *extra: Any,
        always_token: bool = False,
    ) -> Generator[_Request, Any, WriteResult]:
        # An append always carries a token: its message ids record it, so that a retry
        # whose first attempt landed answers that attempt's count.
        write_token = os.urandom(8).hex() if always_token else self._token()
        now_json = json_str(now)
        known = session_id in self._known
        init_json = "" if known else dumps(clean_init(init))
        reply = yield self._session(
            op, session_id, *extra, token=write_token, now=now_json, init=init_json
        )
        if known and as_text(reply) == "init":  # gone since (expired, evicted, deleted elsewhere)
            init_json = dumps(clean_init(init))
            reply = yield self._session(
                op, session_id, *extra, token=write_token, now=now_json, init=init_json
            )
        if isinstance(reply, (bytes, str)) and as_text(reply).startswith("too_large:"):
            raise SharedStateTooLargeError(int(as_text(reply)[10:]), MAX_SHARED_BYTES)
        self._remember(session_id)
        created, added, expired, evicted = write_result(reply)
        if self.cluster:
            expired, evicted = yield from self._cluster_index_write(session_id, created)
        self._report(expired, evicted)
        return WriteResult(created=created, added=added, evicted=tuple(evicted))

    def _token(self) -> str:
        return os.urandom(8).hex() if self._tokens else ""

    def _remember(self, session_id: str, *, fetched: bool = False) -> tuple[Any, ...]:
        """Remember a session as existing; returns the start of its APPEND_SCRIPT call."""
        known = self._known
        call = known.get(session_id)
        if call is not None and (not fetched or int(call[2]) >= 5):
            return call
        k = session_keys(self.prefix, session_id)
        # With the index (max_sessions on a single server) the fetched keys always come too.
        full = fetched or bool(self._idx_arg)
        keys = ((k.h, k.m, k.ids, k.f, k.fp) if full else (k.h, k.m, k.ids)) + self._idx_arg
        call = ("EVALSHA", _APPEND_SHA, str(len(keys)).encode(), *[k.encode() for k in keys])
        known[session_id] = call
        if len(known) > 10_000:
            known.popitem(last=False)
        return call

    def _forget(self, session_ids: Iterable[str]) -> None:
        for session_id in session_ids:
            self._known.pop(session_id, None)

    def _cluster_index_write(
        self, session_id: str, created: bool, *, existing_only: bool = False
    ) -> Generator[_Request, Any, tuple[list[str], list[str]]]:
        member = session_keys(self.prefix, session_id).member
        expired_m, evicted_m = yield self._index(
            "write", member, self._max, "1" if created else "0", "1" if existing_only else "0"
        )
        evicted = [member_id(m) for m in evicted_m]
        for victim in evicted:
            keys = session_keys(self.prefix, victim).script_keys
            yield _Eval(_SESSION, keys, ("delete:0:0:", victim, "", ""))
        return [member_id(m) for m in expired_m], evicted

    def _report(self, expired: Sequence[str], evicted: Sequence[str]) -> None:
        """Forget and report sessions a call found expired or evicted."""
        self._forget(expired)
        self._forget(evicted)
        for victim in expired:
            self._notify("session_expired", victim)
        for victim in evicted:
            self._notify("session_evicted", victim)

    def _op_create(self, session_id: str, init: Header) -> Generator[_Request, Any, WriteResult]:
        return self._write("create", session_id, init, init["metadata"]["timestamp"])

    def _op_exists(self, session_id: str) -> Generator[_Request, Any, bool]:
        return bool((yield from self._read("exists", session_id)))

    def _op_delete(self, session_id: str) -> Generator[_Request, Any, bool]:
        if self.cluster:
            # Unindex first: a write re-creating the session after the keys are gone indexes
            # it again, so no live session is left out of the index by this race.
            yield self._index("forget", session_keys(self.prefix, session_id).member)
        existed = bool((yield self._session("delete", session_id)))
        self._forget((session_id,))
        return existed

    def _op_gc(self) -> Generator[_Request, Any, int]:
        _, expired = yield from self._members()
        return expired

    def _op_list(self) -> Generator[_Request, Any, list[str]]:
        alive, _ = yield from self._members()
        return sorted(member_id(m) for m in alive)

    def _members(self) -> Generator[_Request, Any, tuple[list[str], int]]:
        """Live index members; members whose keys are gone (expired) are dropped.

        A gone member is dropped only if its score is the one read here (nobody re-created
        the session since), and only the call that dropped it reports it: several
        processes listing at once report each expiry once.
        """
        reply = yield self._index("members")
        members = [as_text(m) for m in reply[0::2]]
        if not members:
            return [], 0
        hashes = tuple(session_keys(self.prefix, member_id(m)).h for m in members)
        alive = yield _Exists(hashes)
        stale: list[Any] = []
        for member, score, ok in zip(members, reply[1::2], alive, strict=True):
            if not int(ok):
                stale += (member, score)
        removed = (yield from self._forget_stale(stale)) if stale else 0
        return [m for m, ok in zip(members, alive, strict=True) if int(ok)], removed

    def _forget_stale(self, stale: Sequence[Any]) -> Generator[_Request, Any, int]:
        """Drop ``(member, score)`` pairs still at that score; report those expiries once."""
        removed = [as_text(m) for m in (yield self._index("forget_stale", *stale))]
        self._report([member_id(m) for m in removed], ())
        return len(removed)

    def _op_document(self, session_id: str) -> Generator[_Request, Any, dict[str, Any] | None]:
        reply = yield from self._read("doc", session_id)
        if not reply:
            return None
        fields, messages, fetched = reply
        return assemble_document(
            decode_header(fields), [json.loads(m) for m in messages], decode_fetched(fetched)
        )

    def _op_header(self, session_id: str) -> Generator[_Request, Any, Header | None]:
        reply = yield from self._read("head", session_id)
        return decode_header(reply) if reply else None

    def _op_messages(
        self, session_id: str, start: int, end: int
    ) -> Generator[_Request, Any, list[dict[str, Any]]]:
        if self.max_sessions is None:  # no LRU index to touch, and reads never slide the TTL
            key = session_keys(self.prefix, session_id).m
            reply = yield _Command(("LRANGE", key, start, end))
        else:
            reply = yield from self._read("msgs", session_id, start, end)
        return [json.loads(m) for m in reply]

    def _op_count(self, session_id: str) -> Generator[_Request, Any, int]:
        if self.max_sessions is None:
            return int((yield _Command(("LLEN", session_keys(self.prefix, session_id).m))))
        return int((yield from self._read("count", session_id)))

    def _op_fetched(
        self, session_id: str, source_type: str | None
    ) -> Generator[_Request, Any, dict[str, list[dict[str, Any]]]]:
        reply = yield from self._read("fetched", session_id)
        return decode_fetched(reply, source_type)

    def _append_tail(self, messages: Sequence[EncodedMessage], now: str) -> tuple[Any, ...]:
        """The ``ARGV`` of :data:`APPEND_SCRIPT`: its scalars packed in one, then the messages."""
        head = f"{self._ttl_ms} {os.urandom(8).hex()} {json_str(now)}"
        if len(messages) == 1:
            msg = messages[0]
            return (head, msg.id, msg.tokens, msg.json)
        return (head, *triples(messages))

    def _op_append_messages(
        self, session_id: str, messages: Sequence[EncodedMessage], init: Header, now: str
    ) -> Generator[_Request, Any, WriteResult]:
        call = self._known.get(session_id)
        if call is not None:
            # The session exists as far as we know: APPEND_SCRIPT, which answers an integer.
            tail = self._append_tail(messages, now)
            reply = yield _Command((*call, *tail))
            if reply == -2:  # it has fetched items: their keys' TTL must be refreshed too
                call = self._remember(session_id, fetched=True)
                reply = yield _Command((*call, *tail))  # same token: still applied once
            if reply >= 0:
                created, added = bool(reply & 1), reply >> 1
                expired: Sequence[str] = ()
                evicted: Sequence[str] = ()
                if self.cluster and (created or self.max_sessions is not None):
                    expired, evicted = yield from self._cluster_index_write(session_id, created)
                if expired or evicted:
                    self._report(expired, evicted)
                if evicted:
                    return WriteResult(created=created, added=added, evicted=tuple(evicted))
                return append_result(reply)
            self._forget((session_id,))  # gone since: create it again with the init header
        return (
            yield from self._write(
                "append",
                session_id,
                init,
                now,
                *triples(messages),
                always_token=True,
            )
        )

    def _op_edit(
        self, op: str, session_id: str, now: str, *extra: Any
    ) -> Generator[_Request, Any, int]:
        """A history edit (``msgdel``, ``msgset``, ``truncate``): removed/replaced, or -1."""
        reply = yield self._session(op, session_id, *extra, token=self._token(), now=dumps(now))
        result = int(reply)
        if result > 0 and self.cluster and self.max_sessions is not None:
            yield self._index("read", session_keys(self.prefix, session_id).member)
        return result

    def _op_delete_messages(
        self, session_id: str, message_ids: Sequence[str], now: str
    ) -> Generator[_Request, Any, int]:
        if not message_ids:
            return 0
        return max(0, (yield from self._op_edit("msgdel", session_id, now, *message_ids)))

    def _op_replace_message(
        self, session_id: str, message_id: str, message: EncodedMessage, now: str
    ) -> Generator[_Request, Any, bool]:
        reply = yield from self._op_edit(
            "msgset", session_id, now, message_id, message.tokens, message.json
        )
        return reply > 0

    def _op_truncate(
        self, session_id: str, message_id: str, inclusive: bool, now: str
    ) -> Generator[_Request, Any, int | None]:
        reply = yield from self._op_edit(
            "truncate", session_id, now, message_id, "1" if inclusive else "0"
        )
        return None if reply < 0 else reply

    def _op_page(
        self, prefix: str, cursor: str | None, limit: int
    ) -> Generator[_Request, Any, list[str]]:
        """A page of live ids from the id-ordered index; gone sessions are dropped from it."""
        low = b"[" + prefix.encode()
        if cursor is not None and cursor >= prefix:
            low = b"(" + cursor.encode()
        high = b"(" + prefix.encode() + b"\xff" if prefix else b"+"  # 0xff: in no UTF-8 text
        page: list[str] = []
        while len(page) < limit:
            want = limit - len(page)
            ids = [as_text(i) for i in (yield self._index("page", low, high, want))]
            if not ids:
                break
            keys = [session_keys(self.prefix, sid) for sid in ids]
            alive = yield _Exists(tuple(k.h for k in keys))
            page += [sid for sid, ok in zip(ids, alive, strict=True) if int(ok)]
            gone = [k.member for k, ok in zip(keys, alive, strict=True) if not int(ok)]
            if gone:
                yield from self._drop_gone(gone)
            if len(ids) < want:
                break
            low = b"(" + ids[-1].encode()
        return page

    def _drop_gone(self, members: Sequence[str]) -> Generator[_Request, Any, None]:
        """Drop index members whose session expired; report each expiry once."""
        scores = yield _Command(("ZMSCORE", self._idx, *members))
        stale: list[Any] = []
        for member, score in zip(members, scores, strict=True):
            if score is not None:
                stale += (member, score)
        if stale:
            yield from self._forget_stale(stale)

    def _op_append_fetched(
        self, session_id: str, items: Sequence[EncodedItem], init: Header, now: str, dedupe: bool
    ) -> Generator[_Request, Any, WriteResult]:
        pairs: list[str] = []
        for item in items:
            pairs += (item.fingerprint, encode_fetched(item))
        result = yield from self._write(
            "fetch",
            session_id,
            init,
            now,
            "1" if dedupe else "0",
            *pairs,
        )
        if items:
            self._remember(session_id, fetched=True)
        return result

    def _op_merge(
        self, session_id: str, mode: str, partial: Mapping[str, Any], init: Header, now: str
    ) -> Generator[_Request, Any, WriteResult]:
        return self._write(
            "merge",
            session_id,
            init,
            now,
            mode,
            dumps(dict(partial)),
            _MAX_SHARED,
        )

    def _op_update_header(
        self,
        session_id: str,
        *,
        init: Header,
        now: str,
        metadata: Mapping[str, Any] | None,
        system_prompt: str | None,
        set_system_prompt: bool,
    ) -> Generator[_Request, Any, WriteResult]:
        fields = {
            k: v for k, v in (metadata or {}).items() if k not in ("message_count", "token_count")
        }
        return self._write(
            "header",
            session_id,
            init,
            now,
            dumps(fields) if fields else "",
            "1" if set_system_prompt else "0",
            dumps(system_prompt) if set_system_prompt else "",
        )

    def _op_clear(
        self, session_id: str, now: str, preserve_fetched: bool
    ) -> Generator[_Request, Any, bool]:
        existed = bool(
            (
                yield self._session(
                    "clear",
                    session_id,
                    "1" if preserve_fetched else "0",
                    token=self._token(),
                    now=dumps(now),
                )
            )
        )
        if existed and self.cluster:
            yield from self._cluster_index_write(session_id, False, existing_only=True)
        return existed

    def _op_replace(
        self,
        session_id: str,
        header: Header,
        messages: Sequence[EncodedMessage],
        items: Sequence[EncodedItem],
    ) -> Generator[_Request, Any, WriteResult]:
        metadata = dict(header["metadata"])
        pairs: list[str] = []
        for item in items:
            pairs += (item.fingerprint, encode_fetched(item))
        ts = metadata.get("timestamp")
        reply = yield self._session(
            "replace",
            session_id,
            dumps(header["system_prompt"]),
            dumps(metadata),
            dumps(header["shared"]),
            as_int(metadata.get("message_count", 0)),
            as_int(metadata.get("token_count", 0)),
            len(messages),
            *triples(messages),
            *pairs,
            token=self._token(),
            now=dumps(ts) if "timestamp" in metadata else "",
        )
        created, added, expired, evicted = write_result(reply)
        if self.cluster:
            expired, evicted = yield from self._cluster_index_write(session_id, created)
        self._report(expired, evicted)
        return WriteResult(created=created, added=added, evicted=tuple(evicted))

    # ------------------------------------------------------------ the store interface

    def _plan(self, op: StoreOp) -> Generator[_Request, Any, object]:  # noqa: PLR0911, PLR0912
        """The requests ``op`` needs, as a generator the two drivers run."""
        match op:
            case AppendMessages():
                return self._op_append_messages(op.session_id, op.messages, op.init, op.now)
            case GetMessages():
                return self._op_messages(op.session_id, op.start, op.end)
            case GetHeader():
                return self._op_header(op.session_id)
            case GetDocument():
                return self._op_document(op.session_id)
            case GetFetched():
                return self._op_fetched(op.session_id, op.source_type)
            case CountMessages():
                return self._op_count(op.session_id)
            case SessionExists():
                return self._op_exists(op.session_id)
            case ListSessions():
                return self._op_list()
            case ListPage():
                return self._op_page(op.prefix, op.cursor, op.limit)
            case CreateSession():
                return self._op_create(op.session_id, op.init)
            case DeleteSession():
                return self._op_delete(op.session_id)
            case DeleteMessages():
                return self._op_delete_messages(op.session_id, op.message_ids, op.now)
            case ReplaceMessage():
                return self._op_replace_message(op.session_id, op.message_id, op.message, op.now)
            case TruncateMessages():
                return self._op_truncate(op.session_id, op.message_id, op.inclusive, op.now)
            case AppendFetched():
                return self._op_append_fetched(op.session_id, op.items, op.init, op.now, op.dedupe)
            case MergeShared():
                return self._op_merge(op.session_id, "deep", op.partial, op.init, op.now)
            case SetShared():
                return self._op_merge(op.session_id, "shallow", {op.key: op.value}, op.init, op.now)
            case UpdateHeader():
                return self._op_update_header(
                    op.session_id,
                    init=op.init,
                    now=op.now,
                    metadata=op.metadata,
                    system_prompt=op.system_prompt,
                    set_system_prompt=op.set_system_prompt,
                )
            case ClearSession():
                return self._op_clear(op.session_id, op.now, op.preserve_fetched)
            case ReplaceDocument():
                return self._op_replace(op.session_id, op.header, op.messages, op.items)
            case CollectGarbage():
                return self._op_gc()
            case _:
                assert_never(op)

    @override
    def handle(self, op: StoreOp) -> object:
        return self._drive(self._plan(op))

    @override
    async def ahandle(self, op: StoreOp) -> object:
        return await self._adrive(self._plan(op))

    @override
    def event_listeners(self) -> tuple[Callable[[Event], None], ...]:
        return () if self.publisher is None else (self.publisher,)

    @override
    def close(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        self._closed = True
        collector, self._collector = self._collector, None
        if collector is not None:
            collector.stop()
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            _close(client)
        with self._lock:
            clients = list(self._aclients.items())
            self._aclients.clear()
        for loop, aclient in clients:  # nothing to await on here: close each on its loop
            if loop.is_running() and not _runs_here(loop):
                asyncio.run_coroutine_threadsafe(_aclose(aclient), loop)
            else:  # closed, idle, or this thread's loop (which a sync call is blocking)
                _release(aclient)

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
            await _aclose(aclient)
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

        try:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            pubsub.subscribe(**{self.channel: handle})
            thread = pubsub.run_in_thread(sleep_time=0.01, daemon=True)
        except (RedisError, *_UNAVAILABLE) as e:
            raise self._wrap(e) from e
        return EventSubscription(pubsub, thread)


_COUNTED = frozenset({"message_added", "fetched_added"})
_MAX_SHARED = str(MAX_SHARED_BYTES)


def _scrub(value: object, secrets: list[str]) -> object:
    """``value`` (an exception argument) with every secret replaced by ``***``."""
    if not isinstance(value, str):
        return value if not any(secret in str(value) for secret in secrets) else "***"
    for secret in secrets:
        value = value.replace(secret, "***")
    return value


def _runs_here(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _release(client: Any) -> None:
    """Shut down the sockets of an asyncio client whose event loop has closed.

    Its connections cannot be closed the asyncio way (that needs their loop), so each
    socket is shut down directly: the server drops the connection at once, and the file
    descriptors go with the client object. redis-py keeps connections in
    ``_available_connections``/``_in_use_connections`` (a pool) or ``_connections`` (a
    cluster node); anything else is left to the garbage collector.
    """
    holders = [getattr(client, "connection_pool", None), *getattr(client, "get_nodes", list)()]
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


def _client_url(client: Any) -> str:
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


def _is_sentinel(url: str | None) -> bool:
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


def _sentinel_master(url: str, options: dict[str, Any], *, asynchronous: bool) -> Any:
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


def _sentinels_of(client: Any) -> list[Any]:
    """The clients of the sentinels behind a client from ``master_for`` (else none)."""
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    return list(getattr(manager, "sentinels", ()))


def _close(client: Any) -> None:
    """Close a sync client this store made, and its sentinels' connections."""
    client.close()
    for sentinel in _sentinels_of(client):
        sentinel.close()


async def _aclose(client: Any) -> None:
    """Close an asyncio client this store made, and its sentinels' connections."""
    await client.aclose()
    for sentinel in _sentinels_of(client):
        await sentinel.aclose()


def _host_port(kwargs: Mapping[str, Any]) -> str:
    host, port = str(kwargs.get("host", "localhost")), kwargs.get("port", DEFAULT_SENTINEL_PORT)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
