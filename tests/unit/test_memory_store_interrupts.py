"""InMemoryStore writes are whole or nothing when a KeyboardInterrupt (Ctrl-C) lands in them.

A deterministic sweep: for each write, raise ``KeyboardInterrupt`` at its N-th interrupt
point inside ``ctx_memory/stores/memory.py``, for every N, then check that the store holds
exactly the state from before the call or exactly the one after it, and that retrying
the call gives the state after it (no message lost, none twice, no id left taken).

The points are where CPython runs a signal handler (its eval-breaker checks): the entry
of a function (of ``memory.py``, or one that ``memory.py`` calls), the instruction after
each call made in ``memory.py``, and the target of each backward jump (loops). An
after-call point whose instruction has another exception handler than the call is
skipped: CPython raises there with the call's own handler (a ``with`` block's, say),
which a trace function cannot reproduce.
"""

from __future__ import annotations

import copy
import dis
import gc
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from ctx_memory import InMemoryStore
from ctx_memory.schema import dumps
from ctx_memory.stores import memory
from ctx_memory.stores.base import EncodedItem, EncodedMessage, new_header
from ctx_memory.stores.ops import (
    AppendFetched,
    AppendMessages,
    ClearSession,
    CreateSession,
    DeleteMessages,
    MergeShared,
    ReplaceDocument,
    ReplaceMessage,
    SaveRecallSegments,
    SetShared,
    TruncateMessages,
    UpdateHeader,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType

THEN = "2026-01-01T00:00:00+00:00"
NOW = "2026-01-02T00:00:00+00:00"
MEMORY_PY = memory.__file__
_CALLS = {"CALL", "CALL_KW", "CALL_FUNCTION_EX"}
_BACKWARD = {  # JUMP_BACKWARD_NO_INTERRUPT does not check
    "JUMP_BACKWARD",
    "POP_JUMP_BACKWARD_IF_FALSE",
    "POP_JUMP_BACKWARD_IF_TRUE",
    "POP_JUMP_BACKWARD_IF_NONE",
    "POP_JUMP_BACKWARD_IF_NOT_NONE",
}


# ------------------------------------------------------------------ interrupt points

_NEXT: dict[CodeType, dict[int, tuple[str, int | None]]] = {}
_HANDLERS: dict[CodeType, list[Any]] = {}


def _next_instructions(code: CodeType) -> dict[int, tuple[str, int | None]]:
    """Offset -> (opname, offset of the next instruction)."""
    table = _NEXT.get(code)
    if table is None:
        instructions = list(dis.get_instructions(code))
        table = _NEXT[code] = {
            ins.offset: (ins.opname, nxt.offset if nxt else None)
            for ins, nxt in zip(instructions, [*instructions[1:], None], strict=True)
        }
    return table


def _handler(code: CodeType, offset: int) -> int | None:
    entries = _HANDLERS.get(code)
    if entries is None:
        entries = _HANDLERS[code] = dis._parse_exception_table(code)  # type: ignore[attr-defined]
    return next((e.target for e in entries if e.start <= offset < e.end), None)


class Interrupter:
    """Count the interrupt points of a call; with ``at``, raise at the ``at``-th one."""

    def __init__(self, at: int | None = None) -> None:
        self.at = at
        self.count = 0
        self.where: tuple[str, int, str] | None = None
        self.last: dict[FrameType, int] = {}

    def point(self, frame: FrameType, kind: str) -> None:
        self.count += 1
        if self.count == self.at:
            self.where = (frame.f_code.co_name, frame.f_lineno, kind)
            raise KeyboardInterrupt

    def on_call(self, frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename == MEMORY_PY:
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
            self.point(frame, "entry")
            return self.on_opcode
        caller = frame.f_back
        if caller is not None and caller.f_code.co_filename == MEMORY_PY:
            self.point(frame, "entry")  # a function that memory.py calls, at its start
        return None

    def on_opcode(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event != "opcode":
            return self.on_opcode
        code, offset = frame.f_code, frame.f_lasti
        previous = self.last.get(frame)
        self.last[frame] = offset
        if previous is not None:
            opname, following = _next_instructions(code)[previous]
            if opname in _CALLS and offset == following:
                if _handler(code, previous) == _handler(code, offset):
                    self.point(frame, "after call")
            elif opname in _BACKWARD and offset < previous:
                self.point(frame, "loop")
        return self.on_opcode

    def run(self, fn: Callable[[], Any]) -> bool:
        """Run ``fn`` traced; whether it was interrupted."""
        gc.disable()  # no finalizer of an unrelated object runs (and is interrupted) inside
        sys.settrace(self.on_call)
        try:
            fn()
        except KeyboardInterrupt:
            return True
        finally:
            sys.settrace(None)
            gc.enable()
            self.last.clear()
        return False


# ------------------------------------------------------------------ store states


def msg(i: int | str, tokens: int = 5, text: str = "") -> EncodedMessage:
    mid = f"id-{i}"
    record = {"role": "user", "content": text or f"m{i}", "token_count": tokens, "id": mid}
    return EncodedMessage(dumps(record), tokens, mid)


def item(source_type: str, i: int) -> EncodedItem:
    record = {"content": f"page {i}", "url": f"https://example.com/{i}"}
    return EncodedItem(source_type, dumps(record), 7, f"fp-{i}")


def init(sid: str) -> Any:
    return new_header(sid, now=THEN, encoding="o200k_base")


class Clock:
    """A fixed monotonic clock (a Python function: its entry is an interrupt point too)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def base_store(*, max_sessions: int | None = None, ttl: float | None = 600.0) -> InMemoryStore:
    """Sessions "a" and "b", then "s": 4 messages, fetched items, shared state, segments."""
    store = InMemoryStore(ttl_seconds=ttl, max_sessions=max_sessions, clock=Clock())
    for sid in ("a", "b"):
        store.append_messages(sid, [msg(f"{sid}0")], init=init(sid), now=THEN)
    store.append_messages("s", [msg(i, tokens=i + 3) for i in range(4)], init=init("s"), now=THEN)
    store.append_fetched("s", [item("web", 0), item("docs", 1)], init=init("s"), now=THEN)
    store.merge_shared("s", {"plan": {"step": 1}, "notes": ["x"]}, init=init("s"), now=THEN)
    store.execute(SaveRecallSegments("s", ("segment-0",)))
    store.append_messages("a", [msg("a1")], init=init("a"), now=THEN)  # LRU: b, s, a
    return store


def state(store: InMemoryStore) -> list[Any]:
    """Everything the store holds for its live sessions (in LRU order).

    An expired session is absent for every read, whether or not it was dropped yet.
    """
    now = store._clock()
    return [
        (
            sid,
            copy.deepcopy(s.header),
            list(s.messages),
            sorted(s.ids),
            {t: list(items) for t, items in s.fetched.items()},
            sorted(s.fingerprints),
            list(s.recall_segments),
            s.expires_at,
        )
        for sid, s in store._sessions.items()
        if s.expires_at is None or s.expires_at > now
    ]


def consistent(store: InMemoryStore) -> None:
    """Counters follow the messages; the id set is exactly the stored messages' ids."""
    for sid, s in store._sessions.items():
        records = [json.loads(m) for m in s.messages]
        meta = s.header["metadata"]
        assert meta["message_count"] == len(records), sid
        assert meta["token_count"] == sum(r["token_count"] for r in records), sid
        assert s.ids == {r["id"] for r in records}, sid
        assert len(s.ids) == len(records), f"{sid}: a message id twice"


# ------------------------------------------------------------------ the writes


@dataclass(frozen=True)
class Write:
    name: str
    call: Callable[[InMemoryStore], Any]
    setup: Callable[[], InMemoryStore] = base_store


def _full() -> InMemoryStore:
    return base_store(max_sessions=3)


def _lowered() -> InMemoryStore:
    store = base_store(max_sessions=3)
    store.max_sessions = 1  # all three must go when the next one is created
    return store


def _expired() -> InMemoryStore:
    store = base_store(max_sessions=3)
    store._sessions["b"].expires_at = 999.0  # "b" expired: the limit counts live ones
    return store


def _imported_header() -> Any:
    header = init("s")
    header["system_prompt"] = "imported"
    header["metadata"].update(message_count=2, token_count=10)
    return header


IMPORTED = ReplaceDocument("s", _imported_header(), [msg(10), msg(11), msg(10)], [item("web", 5)])

WRITES = [
    Write("append one", lambda st: st.execute(AppendMessages("s", [msg(9)], init("s"), NOW))),
    Write(
        "append many (one known, one twice)",
        lambda st: st.execute(
            AppendMessages("s", [msg(1), msg(5), msg(6, text="long " * 9), msg(5)], init("s"), NOW)
        ),
    ),
    Write(
        "append new session",
        lambda st: st.execute(AppendMessages("n", [msg(1), msg(2)], init("n"), NOW)),
    ),
    Write(
        "append new session, evicting",
        lambda st: st.execute(AppendMessages("n", [msg(1), msg(2)], init("n"), NOW)),
        _full,
    ),
    Write(
        "append new session, evicting three",
        lambda st: st.execute(AppendMessages("n", [msg(1)], init("n"), NOW)),
        _lowered,
    ),
    Write(
        "append new session, an expired one dropped",
        lambda st: st.execute(AppendMessages("n", [msg(1)], init("n"), NOW)),
        _expired,
    ),
    Write("create, evicting", lambda st: st.execute(CreateSession("n", init("n"))), _full),
    Write("create existing (touch)", lambda st: st.execute(CreateSession("s", {**init("s")}))),
    Write(
        "add fetched, dedupe",
        lambda st: st.execute(
            AppendFetched(
                "s",
                [item("web", 0), item("web", 2), item("news", 3), item("web", 2), item("docs", 4)],
                init("s"),
                NOW,
                dedupe=True,
            )
        ),
    ),
    Write(
        "add fetched, new session, evicting",
        lambda st: st.execute(AppendFetched("n", [item("web", 2)], init("n"), NOW, dedupe=True)),
        _full,
    ),
    Write("clear", lambda st: st.execute(ClearSession("s", NOW))),
    Write(
        "clear, preserving fetched",
        lambda st: st.execute(ClearSession("s", NOW, preserve_fetched=True)),
    ),
    Write("truncate after", lambda st: st.execute(TruncateMessages("s", "id-1", False, NOW))),
    Write("truncate from", lambda st: st.execute(TruncateMessages("s", "id-1", True, NOW))),
    Write(
        "delete messages", lambda st: st.execute(DeleteMessages("s", ["id-3", "id-1", "id-x"], NOW))
    ),
    Write(
        "replace message",
        lambda st: st.execute(ReplaceMessage("s", "id-2", msg(2, tokens=40, text="edited"), NOW)),
    ),
    Write(
        "merge shared",
        lambda st: st.execute(MergeShared("s", {"plan": {"done": True}, "n": 1}, init("s"), NOW)),
    ),
    Write(
        "merge shared, new session, evicting",
        lambda st: st.execute(MergeShared("n", {"k": 1}, init("n"), NOW)),
        _full,
    ),
    Write("set shared", lambda st: st.execute(SetShared("s", "plan", {"step": 2}, init("s"), NOW))),
    Write(
        "update header",
        lambda st: st.execute(
            UpdateHeader(
                "s",
                init("s"),
                NOW,
                metadata={"topic": "t", "message_count": 99},
                system_prompt="be brief",
                set_system_prompt=True,
            )
        ),
    ),
    Write("import over a session", lambda st: st.execute(IMPORTED)),
    Write(
        "import a new session, evicting",
        lambda st: st.execute(ReplaceDocument("n", _imported_header(), [msg(10), msg(11)], [])),
        _full,
    ),
]


def _sweep(write: Write) -> list[str]:
    """Interrupt ``write`` at each of its points; what went wrong (nothing: [])."""
    store = write.setup()
    before = state(store)
    write.call(store)
    after = state(store)
    assert after != before, "the write changes nothing: no sweep"
    counter = Interrupter()
    store = write.setup()
    assert not counter.run(lambda: write.call(store))
    assert state(store) == after, "a traced call does not give the same state"
    assert counter.count > 5, "no interrupt points found in memory.py"

    problems: list[str] = []
    for n in range(1, counter.count + 1):
        store = write.setup()
        interrupter = Interrupter(at=n)
        assert interrupter.run(lambda: write.call(store)), f"point {n} was not reached"  # noqa: B023
        where = f"point {n}/{counter.count} {interrupter.where}"
        assert not store._lock.locked(), f"{where}: lock kept"
        got = state(store)
        if got not in (before, after):
            problems.append(f"{where}: neither the state before nor the one after")
            continue
        consistent(store)
        limit = store.max_sessions  # (the state before may be over a lowered limit)
        assert got == before or limit is None or len(store._sessions) <= limit, where
        write.call(store)  # the retry a user makes
        if state(store) != after:
            problems.append(f"{where}: the retry does not give the state after")
    return problems


@pytest.mark.parametrize("write", WRITES, ids=[w.name for w in WRITES])
def test_an_interrupted_write_is_whole_or_nothing(write: Write) -> None:
    assert _sweep(write) == []


def test_an_interrupted_append_loses_no_message_on_retry() -> None:
    """The QA case: Ctrl-C in the middle of an append, then the same append again."""
    messages = [msg(i) for i in range(10, 20)]
    counter = Interrupter()
    store = base_store()
    counter.run(lambda: store.append_messages("s", messages, init=init("s"), now=NOW))
    for n in range(1, counter.count + 1):
        store = base_store()
        Interrupter(at=n).run(lambda: store.append_messages("s", messages, init=init("s"), now=NOW))  # noqa: B023
        store.append_messages("s", messages, init=init("s"), now=NOW)
        history = store.get_messages("s")
        assert [m["id"] for m in history] == [f"id-{i}" for i in [*range(4), *range(10, 20)]]
        header = store.get_header("s")
        assert header is not None
        assert header["metadata"]["message_count"] == 14
        assert header["metadata"]["token_count"] == sum(m["token_count"] for m in history)
