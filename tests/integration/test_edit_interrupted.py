"""A history edit interrupted half-way still removes the summaries it made stale.

An edit is stored first; then ``history_edited`` is emitted and the summary compactions
covering the edited text are removed. A listener raising ``KeyboardInterrupt`` (Ctrl-C
while it runs), or a task cancelled after the edit was stored (SQLite's thread and the
servers finish what they started), once left the summary in place: a redacted card number
went on reaching the model through it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from ctx_memory import ContextManager, ContextPromptAssembler
from ctx_memory.compaction import CompactionPolicy, get_compactions
from ctx_memory.stores.memory import InMemoryStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore

CARD = "4111-1111-1111-1111"
REDACTED = HumanMessage("My card is [redacted], book AF100.")


def _seed(manager: ContextManager, sid: str) -> None:
    """40 turns, the first holding the card number, summarised (the summary quotes it)."""
    messages: list[Any] = [HumanMessage(f"My card is {CARD}, book AF100.", id="m0")]
    messages.append(AIMessage("Noted.", id="r0"))
    for i in range(1, 40):
        messages += [HumanMessage(f"Flight {i} is AF{100 + i}.", id=f"m{i}"), AIMessage("Ok.")]
    manager.add_messages(sid, messages)
    policy = CompactionPolicy(summarize_at=300, keep_recent=16, block=8)
    ContextPromptAssembler(manager, max_tokens=4000, compaction=policy).assemble(sid, "First?")
    assert CARD in str(get_compactions(manager, sid))


def _edits(manager: ContextManager) -> dict[str, Callable[[str], Any]]:
    return {
        "replace": lambda sid: manager.replace_message(sid, "m0", REDACTED),
        "delete": lambda sid: manager.delete_message(sid, "m0"),
        "truncate": lambda sid: manager.truncate_after(sid, "m0", inclusive=True),
    }


def _aedits(manager: ContextManager) -> dict[str, Callable[[str], Any]]:
    return {
        "replace": lambda sid: manager.areplace_message(sid, "m0", REDACTED),
        "delete": lambda sid: manager.adelete_message(sid, "m0"),
        "truncate": lambda sid: manager.atruncate_after(sid, "m0", inclusive=True),
    }


def _card_left(manager: ContextManager, sid: str) -> bool:
    return CARD in str(manager.get_history(sid)) or CARD in str(get_compactions(manager, sid))


@pytest.mark.parametrize("edit", ["replace", "delete", "truncate"])
def test_a_listener_interrupted_edit_removes_its_stale_summaries(
    make_store: Callable[..., BaseStore], edit: str
) -> None:
    manager = ContextManager(store=make_store())
    _seed(manager, "s")

    def ctrl_c(event: object) -> None:
        raise KeyboardInterrupt

    manager.on("history_edited", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        _edits(manager)[edit]("s")
    assert not _card_left(manager, "s")


@pytest.mark.parametrize("where", ["edited", "_emit_edited", "_drop_stale_summaries"])
@pytest.mark.parametrize("edit", ["replace", "delete", "truncate"])
def test_an_edit_interrupted_just_after_the_store_call_removes_its_stale_summaries(
    make_store: Callable[..., BaseStore],
    monkeypatch: pytest.MonkeyPatch,
    edit: str,
    where: str,
) -> None:
    """Ctrl-C lands on entry to the next call once the store answered (the edit is stored).

    ``edited`` reads the store's answer, ``_emit_edited`` tells the listeners and the
    removal itself may be interrupted once (it runs again).
    """
    from ctx_memory.manager import _history

    manager = ContextManager(store=make_store())
    _seed(manager, "s")
    owner: Any = _history if where == "edited" else type(manager)
    real = getattr(owner, where)
    calls: list[str] = []

    def interrupted_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(where)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, where, interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        _edits(manager)[edit]("s")
    assert not _card_left(manager, "s")


@pytest.mark.parametrize("edit", ["replace", "delete", "truncate"])
def test_a_cancelled_edit_is_whole_or_absent(
    make_store: Callable[..., BaseStore], edit: str
) -> None:
    """Cancelled at every point, then the manager closed (``aclose`` waits for the rest
    of the edit): either nothing changed, or the card is gone everywhere."""
    persistent = not isinstance(make_store(), InMemoryStore)  # (memory: no data shared)

    async def cancel_after(manager: ContextManager, sid: str, ticks: int, end: str) -> None:
        task = asyncio.ensure_future(_aedits(manager)[edit](sid))
        for _ in range(ticks):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # (done already: not cancelled)
            await task
        if end == "aclose":
            await manager.aclose()  # waits for what the edit started
        else:  # the caller goes on: the edit ends in its task meanwhile
            await asyncio.sleep(0.5)

    landed = 0
    for end in ["later", "aclose"] if persistent else ["later"]:
        for ticks in range(0, 40, 3):
            sid = f"s{ticks}-{end}"
            manager = ContextManager(store=make_store())
            _seed(manager, sid)
            asyncio.run(cancel_after(manager, sid, ticks, end))
            reader = ContextManager(store=make_store()) if end == "aclose" else manager
            m0 = [m for m in reader.get_history(sid) if m["id"] == "m0"]
            stale = _card_left(reader, sid)
            summaries = str(get_compactions(reader, sid))
            manager.close()
            reader.close()
            if m0 and CARD in str(m0):  # not stored: nothing changed
                if edit != "replace":  # (a replacement's summary goes either way: manager.md)
                    assert CARD in summaries
                continue
            landed += 1
            assert not stale, (end, ticks)
    assert landed  # some cancellations came after the edit was stored


@pytest.mark.parametrize("edit", ["replace", "delete", "truncate"])
def test_an_edit_left_in_sqlites_thread_as_the_loop_ends_removes_its_stale_summaries(
    tmp_path: Any, edit: str
) -> None:
    """``asyncio.run`` ends (cancelling the edit) while the edit waits in SQLite's worker
    thread for a write lock another process holds: the thread stores the edit after the
    loop is gone, and removes the summaries it made stale after it. The removal once ran
    in the cancelled task, before the edit landed, and found nothing stale yet."""
    import subprocess
    import sys

    from ctx_memory.stores.sqlite import SqliteStore

    path = str(tmp_path / "s.db")
    manager = ContextManager(store=SqliteStore(path))
    _seed(manager, "s")
    assert CARD in str(get_compactions(manager, "s"))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True)\n"
            "time.sleep(0.5); c.execute('COMMIT')",
            path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"

        async def main() -> None:
            asyncio.get_running_loop().create_task(_aedits(manager)[edit]("s"))
            await asyncio.sleep(0.05)  # the edit waits in the thread; main returns

        asyncio.run(main())  # waits for the worker thread as it shuts its executor down
    finally:
        holder.wait(timeout=10)
    reader = ContextManager(store=SqliteStore(path))
    assert not _card_left(reader, "s")
    reader.close()
    manager.close()
