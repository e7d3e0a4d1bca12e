"""The Redis store's requests: what an operation's generator yields, and their commands.

Every operation is written once, as a generator that yields requests and receives their
replies (:mod:`ctx_memory.stores._redis_ops`); ``_drive`` runs it on the sync client and
``_adrive`` on the asyncio client (:mod:`ctx_memory.stores.redis`).
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

from ctx_memory.stores._redis_lua import SOURCES, Script

__all__ = [
    "APPEND_SHA",
    "SHAS",
    "Call",
    "Command",
    "Eval",
    "Pipeline",
    "Prepared",
    "Request",
    "commands_of",
    "eval_command",
    "script_of",
]

SHAS = {s: hashlib.sha1(SOURCES[s].encode()).hexdigest() for s in Script}  # noqa: S324 - id
APPEND_SHA = SHAS[Script.APPEND].encode()
_SCRIPT_OF_SHA: dict[str | bytes, str] = {
    key: SOURCES[script] for script, sha in SHAS.items() for key in (sha, sha.encode())
}


class Eval(NamedTuple):
    """A call of one of the Lua scripts (``EVALSHA``)."""

    script: Script
    keys: tuple[str | bytes, ...]
    args: tuple[Any, ...]


class Command(NamedTuple):
    """A complete command (``LRANGE``, ``ZMSCORE``, an ``EVALSHA`` whose sha names its script)."""

    args: tuple[Any, ...]


class Call(NamedTuple):
    """The start of a command sent often (a known session's APPEND_SCRIPT call).

    ``packed`` is ``args`` as RESP, packed once (:func:`~ctx_memory.stores._redis_wire.pack_args`).
    """

    args: tuple[Any, ...]
    packed: bytes


class Prepared(NamedTuple):
    """One command: ``call``'s arguments, then ``tail``."""

    call: Call
    tail: tuple[Any, ...]


class Pipeline(NamedTuple):
    """Commands sent in one round trip, not atomically; the reply is the list of theirs.

    None depends on another's effect: one answered ``NOSCRIPT`` (its script is loaded) is
    sent again alone, after the others ran.
    """

    commands: tuple[tuple[Any, ...], ...]


Request = Eval | Command | Prepared | Pipeline


def eval_command(request: Eval) -> tuple[Any, ...]:
    return ("EVALSHA", SHAS[request.script], len(request.keys), *request.keys, *request.args)


def commands_of(request: Request) -> tuple[tuple[Any, ...], ...]:
    """The commands ``request`` sends, in order (one, but for a :class:`Pipeline`)."""
    if isinstance(request, Command):
        return (request.args,)
    if isinstance(request, Eval):
        return (eval_command(request),)
    if isinstance(request, Prepared):
        return ((*request.call.args, *request.tail),)
    return request.commands


def script_of(command: tuple[Any, ...]) -> str | None:
    """The script an ``EVALSHA`` command runs (to load where the server lacks it), or None."""
    if len(command) > 1 and command[0] in ("EVALSHA", b"EVALSHA"):
        return _SCRIPT_OF_SHA.get(command[1])
    return None
