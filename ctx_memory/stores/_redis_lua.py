"""Lua scripts of the Redis store, read once at import from ``ctx_memory/stores/lua/``.

One script per operation (:class:`Script`), each loaded on a server once and shared by the
sync and asyncio clients: no script picks its operation from an argument. Their source is
package data, one file per part: ``common.lua`` (JSON and index helpers) comes first in the
session and index scripts, after a line setting ``TOKEN_WINDOW``; then ``session.lua``
(what every operation on one session shares: its keys, counters, write tokens, upsert and
finish) and the operation's own ``session/<name>.lua``, or ``index.lua`` and
``index/<name>.lua``. ``append_new.lua`` is included where ``session.lua`` and
``append.lua`` say ``-- @include append_new.lua FIRST=<n>`` (``FIRST`` becomes ``n``, the
first ``ARGV`` of the message triples). Nothing here talks to Redis.

* The session scripts (``Script.CREATE`` to ``Script.EVICT``) each run one operation on one
  session. Their ``KEYS`` are the session's eight keys, which share one hash slot; on a
  single server the LRU/expiry index keys follow as ``KEYS[9]``/``KEYS[10]`` so that index
  maintenance and eviction happen in the same atomic call. On Redis Cluster the index lives
  in its own slot, so a script gets only the eight session keys and the client updates the
  index with the index scripts in calls of its own, evicting in steps that a concurrent
  write cannot fall between (``MARK`` and ``EVICT`` on the victim, ``INDEX_FORGET_STALE``
  in the index).
* The index scripts (``Script.INDEX_WRITE`` to ``Script.INDEX_FORGET_STALE``) maintain the
  index alone (cluster mode, ``gc`` and ``list``).
* ``Script.TOUCH`` is a read's LRU touch (``max_sessions`` set). The read itself
  (``LRANGE``, ``LLEN``, ``HMGET``) is a plain command in the same round trip (on a single
  server) or sent first (on a cluster, where the index has its own slot): a reply passed
  through Lua costs more than the commands, every element becoming a Lua string and back.
  It touches only a session that exists and is indexed (``ZADD XX``), so no read puts a
  deleted or evicted session back in the index.
* ``Script.APPEND`` is the hot path: appending messages to a session that exists. It
  is small (no JSON parsing, no operation dispatch, no helper definitions to instantiate),
  answers one integer and shares the hash fields and TTL rules of the session scripts;
  when the session does not exist it changes nothing and answers ``-1``, and the client
  repeats the write with ``Script.UPSERT_APPEND`` and the init header. It takes only the
  hash, the list and the id set until the client knows the session has fetched items; if
  it has (and a TTL is set) it answers ``-2``, again having changed nothing, and the
  client repeats the call with the fetched keys too.
* ``Script.LAYOUT`` records the key layout version under a prefix (once per store
  object, before its first operation), never lowering a newer one.

Appends are idempotent by message id, with no window: the hash ``IDS`` holds the id of
every message in the history, and a message whose id is in it is skipped (``HSETNX``
answers 0). A retried append whose first attempt landed therefore adds nothing and
answers ``added = 0``. Other writes (create, merge, header, fetched items, clear, replace)
carry a random write token: the first result of each token is kept in the hash ``W`` for
at least ``TOKEN_WINDOW`` seconds of server time (``W`` becomes ``WO`` when its
generation is that old, and the older ``WO`` is dropped), and a retry whose first attempt
was applied answers that result without applying the write again. A retry arrives within
the client's retry budget (``max_retries`` times the socket timeout and backoff: seconds), far
inside the window, however many other writes happen meanwhile.

JSON is never re-encoded from ``cjson`` (it turns ``[]`` into ``{}`` and rounds numbers
to 14 digits); history edits only read a message's ``id`` and ``token_count`` with it.
The merge code (``common.lua``) parses objects *structurally*: it walks the text, keeps
every non-object value as its exact source text and re-emits objects key by key, so
numbers, empty lists and unicode survive byte for byte and key order is preserved.

``KEYS`` of a session script: ``H, M, F, FP, IDS, W, WO, R`` (one hash slot), then the
index on a single server. ``ARGV`` (unused slots are ``""``)::

    1 "ttl_ms:max_sessions:write_token"   2 session id   3 now (JSON string)
    4 init header JSON ("" when the client believes the session exists; the script then
      answers "init" if it does not)   5.. operation arguments

The key prefix and the index member (tag + id) are derived from ``KEYS[1]``. Writes answer
``{created, added, expired_members, evicted_members}``. ``KEYS`` of an index script: the
index, its id list and the list's built flag; ``ARGV`` the operation's arguments.
"""

from __future__ import annotations

import re
from enum import Enum
from importlib import resources

__all__ = [
    "APPEND_SCRIPT",
    "LAYOUT_SCRIPT",
    "SOURCES",
    "TOKEN_WINDOW",
    "TOUCH_SCRIPT",
    "Script",
]

TOKEN_WINDOW = 600
"""Seconds (server time) a write token's result is kept at least (at most twice that)."""

_INCLUDE = re.compile(r"^[ \t]*-- @include (\S+) (\w+)=(\S+)\n", re.MULTILINE)


def _source(name: str) -> str:
    """The text of ``lua/<name>``, read from the installed package."""
    return (
        resources.files(__package__).joinpath("lua", *name.split("/")).read_text(encoding="utf-8")
    )


def _compose(name: str) -> str:
    """``lua/<name>`` with each ``-- @include <file> <NAME>=<value>`` line replaced."""
    return _INCLUDE.sub(lambda m: _source(m[1]).replace(m[2], m[3]), _source(name))


_COMMON = f"local TOKEN_WINDOW = {TOKEN_WINDOW}\n\n" + _source("common.lua")


class Script(Enum):
    """The Lua scripts the Redis store runs, one operation each; the value is its file.

    A session script is ``session.lua`` then its own file, an index script ``index.lua``
    then its own (:data:`SOURCES`).
    """

    APPEND = "append.lua"  # the hot path: messages to a session the client knows
    TOUCH = "touch.lua"  # a read's LRU touch
    LAYOUT = "(inline)"  # the key layout version (:data:`LAYOUT_SCRIPT`)
    UPSERT_APPEND = "session/append.lua"  # messages, creating the session if missing
    FETCH = "session/fetch.lua"  # fetched items
    MERGE = "session/merge.lua"  # a partial update of the shared state
    HEADER = "session/header.lua"  # metadata and system prompt
    CREATE = "session/create.lua"
    REPLACE = "session/replace.lua"  # a whole document (an import)
    CLEAR = "session/clear.lua"
    DELETE = "session/delete.lua"
    MSGDEL = "session/msgdel.lua"  # messages deleted by id
    MSGSET = "session/msgset.lua"  # a message replaced
    TRUNCATE = "session/truncate.lua"  # the history cut after a message
    RECALL = "session/recall.lua"  # recall-index segments saved
    DOC = "session/doc.lua"  # the whole document read
    EXISTS = "session/exists.lua"
    MARK = "session/mark.lua"  # a cluster eviction's victim marked
    EVICT = "session/evict.lua"  # deleted if still marked
    UNMARK = "session/unmark.lua"  # taken back from an eviction by a write
    INDEX_WRITE = "index/write.lua"  # a write's touch; victims chosen
    INDEX_MEMBERS = "index/members.lua"
    INDEX_FORGET = "index/forget.lua"
    INDEX_PAGE = "index/page.lua"  # a page of ids in id order
    INDEX_FORGET_STALE = "index/forget_stale.lua"  # members dropped if unchanged


APPEND_SCRIPT = _compose("append.lua")
"""The hot path: appending messages to a session that exists."""

TOUCH_SCRIPT = _source("touch.lua")
"""A read's LRU touch: ``KEYS`` the index and, on a single server, the session's hash."""

LAYOUT_SCRIPT = """\
local raw = redis.call('GET', KEYS[1])
local found = raw and string.match(raw, '^%d+$') and tonumber(raw)
if not raw or (found and found < tonumber(ARGV[1])) then redis.call('SET', KEYS[1], ARGV[1]) end
return raw
"""
"""The layout version check: ``KEYS`` the version key, ``ARGV`` this release's version.

Answers the version key as it was (nil: no key, a new prefix or data written before the
key existed, which is layout 1). When there was none or an older version, the key is set to
``ARGV[1]`` in the same atomic step (every older layout is valid data of this one: see
:data:`~ctx_memory.stores._redis_keys.LAYOUT_VERSION`); a newer or unreadable one is left
as it is, for the client to refuse. Short enough to live here rather than in ``lua/``.
"""


def _operation(path: str) -> str:
    """A session or index script: the shared part of its kind, then its own file."""
    kind = path.split("/", 1)[0]
    return _COMMON + "\n" + _compose(f"{kind}.lua") + "\n" + _compose(path)


SOURCES: dict[Script, str] = {
    Script.APPEND: APPEND_SCRIPT,
    Script.TOUCH: TOUCH_SCRIPT,
    Script.LAYOUT: LAYOUT_SCRIPT,
    **{script: _operation(script.value) for script in Script if "/" in script.value},
}
"""Every script's source by :class:`Script`."""
