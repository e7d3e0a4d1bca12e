"""Names of the Redis store's keys and index members (pure: no I/O, no client).

A session's keys are ``P:{T}:<suffix>`` for each of :data:`SESSION_SUFFIXES` (``P`` the key
prefix, ``T`` its :func:`session_tag`), so they share one hash slot; the index is two
sorted sets in a slot of their own. The manual (``docs/stores.md``, "Redis key layout")
has the table of every key and field.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, NamedTuple

__all__ = [
    "SESSION_SUFFIXES",
    "LAYOUT_VERSION",
    "TAG_LENGTH",
    "SessionKeys",
    "as_text",
    "index_key",
    "layout_key",
    "lex_key",
    "member_id",
    "session_keys",
    "session_tag",
]

TAG_LENGTH = 64
"""Length of a session's hash tag (hex SHA-256 of its id); index members are tag + id."""

LAYOUT_VERSION = 2
"""Version of the key layout below, kept in :func:`layout_key`.

``1``: the first release's. ``2`` adds the list ``r`` (saved recall-index segments), which
every write that removes or changes messages, and every removal of a session, deletes: a
release of layout 1 would leave it behind, so it refuses layout 2. Layout 1 data is valid
layout 2 data (no ``r`` keys yet): opening it only records the new version.
"""

SESSION_SUFFIXES = ("h", "m", "f", "fp", "ids", "w", "wo", "r")
"""The keys of one session, ``P:{T}:<suffix>``, in the order the session scripts take."""


def session_tag(session_id: str) -> str:
    """The hash tag content of a session: hex SHA-256 of its UTF-8 id (64 characters)."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


class SessionKeys(NamedTuple):
    """The keys of one session (all in one hash slot) and its index member."""

    h: str
    m: str
    f: str
    fp: str
    member: str
    ids: str
    w: str
    wo: str
    r: str

    @property
    def script_keys(self) -> tuple[str, str, str, str, str, str, str, str]:
        """The session's keys in the order the session scripts take them."""
        return self.h, self.m, self.f, self.fp, self.ids, self.w, self.wo, self.r


@functools.lru_cache(maxsize=4096)
def session_keys(prefix: str, session_id: str) -> SessionKeys:
    """The keys of one session: ``P:{T}:<suffix>`` for each of ``SESSION_SUFFIXES``."""
    tag = session_tag(session_id)
    base = f"{prefix}:{{{tag}}}:"
    h, m, f, fp, ids, w, wo, r = (base + suffix for suffix in SESSION_SUFFIXES)
    return SessionKeys(h, m, f, fp, tag + session_id, ids, w, wo, r)


def index_key(prefix: str) -> str:
    """The sorted set indexing every session (a slot of its own on a cluster)."""
    return f"{prefix}:{{__index__}}:lru"


def lex_key(prefix: str) -> str:
    """The sorted set of every session id, all scored 0: paged in id order (same slot)."""
    return f"{prefix}:{{__index__}}:ids"


def layout_key(prefix: str) -> str:
    """The key holding the layout version of the data under ``prefix`` (no hash tag)."""
    return f"{prefix}:layout"


def as_text(value: Any) -> str:
    """A reply as text: bytes decoded as UTF-8 (lone surrogates kept), anything else ``str``."""
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else str(value)


def member_id(member: Any) -> str:
    """The session id of an index member (``tag + id``)."""
    return as_text(member)[TAG_LENGTH:]
