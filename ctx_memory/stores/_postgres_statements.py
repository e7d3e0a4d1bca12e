"""The PostgreSQL store's statements as data: what an operation's generator yields.

:class:`Statement` is one statement with its parameters and what to fetch; a
:class:`Prepared` one may go to libpq as a server-side prepared statement; :class:`Found`
collects the sessions a call found expired or evicted, reported after its commit.
Pure: no connection, no I/O.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ALL", "NONE", "ONE", "Found", "Prepared", "Statement"]

NONE, ONE, ALL = 0, 1, 2


class Prepared(NamedTuple):
    """A statement the driver may send as a server-side prepared statement through libpq.

    ``sql`` is its text with ``$n`` parameters, ``order`` their names in ``$n`` order. Its
    columns must all be text (the driver decodes them as text, no loaders).
    """

    name: bytes
    sql: bytes
    order: tuple[str, ...]

    @classmethod
    def of(cls, text: bytes) -> Prepared:
        """The prepared form of ``text`` (``%(name)s`` parameters), named after its text.

        The name is 128 bits of the text's BLAKE2b digest: two schemas sharing a pool (one
        connection may serve both) never meet on a name, even ones chosen to collide
        (a CRC-32 could be forced by picking schema names).
        """
        order: list[str] = []

        def number(match: re.Match[bytes]) -> bytes:
            key = match[1].decode()
            if key not in order:
                order.append(key)
            return b"$%d" % (order.index(key) + 1)

        body = re.sub(rb"%\((\w+)\)s", number, text).replace(b"%%", b"%")  # psycopg's escape
        name = b"ctx_memory_" + hashlib.blake2b(body, digest_size=16).hexdigest().encode()
        return cls(name, body, tuple(order))


class Statement(NamedTuple):
    """One statement: its text, its parameters, and what to fetch (none, one row, all).

    ``large``: the reply may be large (a history, a document): the driver then checks its
    size, so that a cached cursor does not keep a large result alive. ``prepared``: the
    driver may send it through libpq as that prepared statement instead (``params`` is
    then a dict, and one row is fetched).
    """

    sql: bytes
    params: Any = ()
    fetch: int = ONE
    large: bool = False
    prepared: Prepared | None = None


class Found:
    """Sessions one call found expired or evicted (reported after its commit)."""

    __slots__ = ("evicted", "expired")

    def __init__(self) -> None:
        self.expired: list[str] = []
        self.evicted: list[str] = []

    def add(self, expired: Sequence[str] | None, evicted: Sequence[str] | None = None) -> None:
        self.expired += expired or ()
        self.evicted += evicted or ()
