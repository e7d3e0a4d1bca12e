r"""Events across processes on PostgreSQL: ``NOTIFY`` to publish, ``LISTEN`` to receive.

:class:`PostgresEventPublisher` is the background publisher of
:mod:`ctx_memory.stores._publisher` (a write never waits for it, events leave in order,
expiries and evictions once per store) sending each batch with
one ``SELECT pg_notify(channel, payload) FROM unnest(...)`` on a pooled connection. The
payload is the same :func:`~ctx_memory.stores.redis_events.event_payload` JSON text
in-process listeners get as ``Event.to_dict()``. PostgreSQL caps a notification at 8000
bytes: an event whose JSON is longer (a merge naming thousands of keys) is logged and not
published.

:class:`PostgresEventSubscription` holds one dedicated connection that ``LISTEN``\\s on the
channel and calls a callback from a background thread; a lost connection is logged and
re-established until the subscription is closed (events sent meanwhile are missed, as
with Redis pub/sub).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from ctx_memory._extras import missing_extra
from ctx_memory.stores._publisher import EventPublisher

try:
    import psycopg
    from psycopg import sql
except ImportError as e:  # pragma: no cover - the extra is installed in every test run
    raise missing_extra("postgres", __name__, e) from e

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MAX_PAYLOAD_BYTES", "PostgresEventPublisher", "PostgresEventSubscription"]

logger = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 7999
"""Longest ``NOTIFY`` payload PostgreSQL takes (in its default configuration)."""

_NOTIFY = b"SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p"


class PostgresEventPublisher(EventPublisher):
    """Publish events with ``NOTIFY`` on ``channel``, from one background thread.

    Args:
        client: Returns what to publish with: an object whose ``connection()`` is a context
            manager giving a sync connection (a ``psycopg_pool.ConnectionPool``, or the
            store's own connection source).
        channel: The channel name (``<schema>_events``).
        describe: How to name the server in a log line (its URL, password masked).
    """

    @override
    def _publish(self, payloads: list[str]) -> None:
        fitting = [p for p in payloads if len(p.encode("utf-8")) <= MAX_PAYLOAD_BYTES]
        if len(fitting) < len(payloads):
            logger.warning(
                "ctx_memory: %d event(s) longer than %d bytes not published on %s (%s)",
                len(payloads) - len(fitting),
                MAX_PAYLOAD_BYTES,
                self._describe(),
                self.channel,
            )
        if not fitting:
            return
        try:
            with self._client().connection() as conn:
                conn.execute(_NOTIFY, (self.channel, fitting))
        except Exception as e:  # noqa: BLE001 - a notification must never break the app
            logger.warning(
                "ctx_memory: %d event(s) not published on %s (%s): %s",
                len(fitting),
                self._describe(),
                self.channel,
                type(e).__name__,
            )


class PostgresEventSubscription:
    """A running ``LISTEN`` on a store's channel; :meth:`close` stops it.

    Args:
        conninfo: The server's URL.
        channel: The channel to listen on.
        callback: Called with each event's dict, in a background thread; an exception it
            raises is logged.

    Raises:
        psycopg.Error: The first connection failed (the store wraps it).
    """

    def __init__(
        self, conninfo: str, channel: str, callback: Callable[[dict[str, Any]], None]
    ) -> None:
        self._conninfo = conninfo
        self.channel = channel
        self._callback = callback
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = self._listen()
        self._thread = threading.Thread(
            target=self._run, name=f"ctx_memory-listen-{channel}", daemon=True
        )
        self._thread.start()

    def _listen(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = self._conn
            try:
                if conn is None or conn.closed:
                    self._conn = conn = self._listen()
                for notify in conn.notifies(timeout=0.2):
                    self._deliver(notify.payload)
            except (psycopg.Error, OSError) as e:
                if self._stop.is_set():
                    return
                logger.warning(
                    "ctx_memory: listening on %s failed (%s); reconnecting",
                    self.channel,
                    type(e).__name__,
                )
                if conn is not None:
                    conn.close()
                self._conn = None
                self._stop.wait(0.5)

    def _deliver(self, payload: str) -> None:
        try:
            self._callback(json.loads(payload))
        except Exception:
            logger.exception("ctx_memory event subscriber %r failed", self._callback)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._stop.is_set()

    def close(self) -> None:
        """Stop listening and close the connection. Idempotent."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(5)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> PostgresEventSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
