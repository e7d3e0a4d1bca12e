"""compaction_mode="background": the summariser runs after the reply, never before it.

ContextualChat (invoke, stream, ainvoke, astream) and a real ``create_agent`` agent with
ContextMiddleware (sync and async), with LangChain's fake chat models and a summariser that
waits on an event the test controls: the reply comes back while the summariser is still
waiting; once released and flushed the compaction is stored, and the next prompt uses it. A
raising or empty summariser stores nothing; nothing is written twice.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from adapter_fakes import ToolCallingFakeModel, fake_model
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableLambda

from ctx_memory import ContextManager, ContextPromptAssembler, ContextualChat, ValidationError
from ctx_memory.compaction import CompactionPolicy, get_compactions
from ctx_memory.middleware import ContextMiddleware
from ctx_memory.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from pathlib import Path

SESSION = {"configurable": {"session_id": "s1"}}
AGENT = {"configurable": {"thread_id": "s1"}}
SUMMARY_PREFIX = "[Summary of messages"
WAIT = 10.0  # seconds: far more than any step needs, so a hang fails instead of stalling


class Gate:
    """A summariser that waits until the test releases it, sync or async.

    Counts its calls and how many ran at once; ``fail`` makes it raise once released,
    ``empty`` makes it return nothing.
    """

    def __init__(self, *, fail: bool = False, empty: bool = False) -> None:
        self.fail = fail
        self.empty = empty
        self.release = threading.Event()
        self.arelease = asyncio.Event()
        self.started = threading.Event()
        self.calls = 0
        self.finished = 0
        self.active = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        self.started.set()

    def _leave(self, messages: list[BaseMessage]) -> str:
        with self._lock:
            self.active -= 1
            self.finished += 1
        if self.fail:
            msg = "summariser down"
            raise RuntimeError(msg)
        return "" if self.empty else f"Booking codes of {len(messages)} messages."

    def sync(self, messages: list[BaseMessage]) -> str:
        self._enter()
        assert self.release.wait(WAIT)
        return self._leave(messages)

    async def asynchronous(self, messages: list[BaseMessage]) -> str:
        self._enter()
        async with asyncio.timeout(WAIT):
            await self.arelease.wait()
        return self._leave(messages)

    def open(self) -> None:
        self.release.set()
        self.arelease.set()

    def runnable(self) -> RunnableLambda[Any, str]:
        return RunnableLambda(self.sync, afunc=self.asynchronous, name="gate")


def _policy(gate: Gate) -> CompactionPolicy:
    return CompactionPolicy(
        clear_tool_outputs_at=None,
        summarize_at=300,
        keep_recent=8,
        block=4,
        min_messages=4,
        summarizer=gate.runnable(),
    )


def _seed(manager: ContextManager, session: str = "s1") -> None:
    """40 messages (500 tokens): over the policy's trigger before the first question."""
    for i in range(20):
        manager.add_user_message(session, f"Turn {i}: my booking code is BK{i:03d}.")
        manager.add_assistant_message(session, f"Noted, BK{i:03d}.")


def _chat(manager: ContextManager, gate: Gate, *replies: str, **kwargs: Any) -> ContextualChat:
    model = fake_model(*(replies or ("ok",) * 6))
    return ContextualChat(
        manager,
        model,
        max_tokens=4000,
        compaction=_policy(gate),
        compaction_mode="background",
        **kwargs,
    )


def _seen(chat_or_model: Any) -> list[list[BaseMessage]]:
    model = getattr(chat_or_model, "model", chat_or_model)
    assert isinstance(model, ToolCallingFakeModel)
    return model.seen


def _has_summary(prompt: list[BaseMessage]) -> bool:
    return any(m.text.startswith(SUMMARY_PREFIX) for m in prompt)


def _check_stored(manager: ContextManager, before: list[dict[str, Any]]) -> dict[str, Any]:
    """Stored messages unchanged, no summary as a turn, exactly one compaction: it."""
    history = manager.get_history("s1")
    assert history[: len(before)] == before
    assert not any(str(r["content"]).startswith(SUMMARY_PREFIX) for r in history)
    (entry,) = get_compactions(manager, "s1")
    assert (entry["first_index"], entry["last_index"]) == (0, 31)
    assert entry["first_id"] == history[0]["id"]
    assert entry["last_id"] == history[31]["id"]
    assert entry["summary"] == "Booking codes of 32 messages."
    assert entry["producer"]["name"] == "gate"
    return entry


async def _until(event: threading.Event) -> None:
    """Await (letting the loop run) until a thread-safe event is set."""
    deadline = time.monotonic() + WAIT
    while not event.is_set():
        assert time.monotonic() < deadline, "the summariser never started"
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------- ContextualChat


@pytest.mark.parametrize("call", ["invoke", "stream"])
def test_chat_replies_before_the_summariser_and_the_next_prompt_uses_it(
    manager: ContextManager, call: str
) -> None:
    _seed(manager)
    before = manager.get_history("s1")
    gate = Gate()
    chat = _chat(manager, gate)
    if call == "invoke":
        reply = chat.invoke("Which code came first?", config=SESSION)
        assert reply.content == "ok"
    else:
        chunks = list(chat.stream("Which code came first?", config=SESSION))
        assert "ctx_memory" in chunks[-1].response_metadata  # the turn is recorded
    # The reply is back; the summariser started and is still waiting.
    assert gate.started.wait(WAIT)
    assert gate.finished == 0
    assert chat.compactions_pending == frozenset({"s1"})
    assert get_compactions(manager, "s1") == []
    assert not _has_summary(_seen(chat)[0])  # nothing summarised before the prompt
    assert len(manager.get_history("s1")) == 42  # the turn is stored all the same

    gate.open()
    ((session, outcome),) = chat.flush_compactions(timeout=WAIT)
    assert session == "s1"
    assert outcome.entry is not None
    entry = _check_stored(manager, before)
    assert outcome.entry == entry
    assert chat.compactions_pending == frozenset()

    reply = chat.invoke("And the last one?", config=SESSION)
    prompt = _seen(chat)[-1]
    assert _has_summary(prompt)
    assert sum(m.text.startswith(SUMMARY_PREFIX) for m in prompt) == 1
    assert not any("BK000" in m.text for m in prompt)  # the covered messages are not sent
    used = reply.response_metadata["ctx_memory"]["report"]["compactions"]
    assert [c["id"] for c in used] == [entry["id"]]
    assert [o.reason for _, o in chat.flush_compactions(timeout=WAIT)] == ["not needed"]
    assert gate.calls == 1
    _check_stored(manager, before)


@pytest.mark.parametrize("call", ["ainvoke", "astream"])
async def test_chat_async_replies_before_the_summariser_and_the_next_prompt_uses_it(
    manager: ContextManager, call: str
) -> None:
    _seed(manager)
    before = manager.get_history("s1")
    gate = Gate()
    chat = _chat(manager, gate)
    if call == "ainvoke":
        reply = await chat.ainvoke("Which code came first?", config=SESSION)
        assert reply.content == "ok"
    else:
        chunks = [c async for c in chat.astream("Which code came first?", config=SESSION)]
        assert "ctx_memory" in chunks[-1].response_metadata
    await _until(gate.started)  # a task on this loop, waiting on the asyncio event
    assert gate.finished == 0
    assert chat.compactions_pending == frozenset({"s1"})
    assert get_compactions(manager, "s1") == []
    assert not _has_summary(_seen(chat)[0])
    # A blocking flush on the loop the task runs on could never end: refused.
    with pytest.raises(RuntimeError, match="aflush_compactions"):
        chat.flush_compactions()

    gate.open()
    ((session, outcome),) = await chat.aflush_compactions(timeout=WAIT)
    assert session == "s1"
    assert outcome.entry == _check_stored(manager, before)

    await chat.ainvoke("And the last one?", config=SESSION)
    assert _has_summary(_seen(chat)[-1])
    assert [o.reason for _, o in await chat.aflush_compactions(timeout=WAIT)] == ["not needed"]
    assert gate.calls == 1


def test_repeats_are_coalesced_and_nothing_is_written_twice(manager: ContextManager) -> None:
    _seed(manager)
    before = manager.get_history("s1")
    gate = Gate()
    chat = _chat(manager, gate)
    for i in range(4):  # every reply comes back while the first summary is still waiting
        assert chat.invoke(f"Question {i}?", config=SESSION).content == "ok"
    assert gate.started.wait(WAIT)
    assert chat.compactions_pending == frozenset({"s1"})
    gate.open()
    outcomes = [o for _, o in chat.flush_compactions(timeout=WAIT)]
    # The run going on, then once more for the requests made meanwhile: not 4 runs.
    assert [o.entry is not None for o in outcomes] == [True, False]
    assert outcomes[1].reason == "not needed"
    assert gate.calls == 1
    assert gate.most_at_once == 1
    _check_stored(manager, before)
    assert len(manager.get_history("s1")) == 48


async def test_async_repeats_are_coalesced(manager: ContextManager) -> None:
    _seed(manager)
    gate = Gate()
    chat = _chat(manager, gate)
    for i in range(3):
        await chat.ainvoke(f"Question {i}?", config=SESSION)
    await _until(gate.started)
    chat.invoke("A sync question meanwhile?", config=SESSION)  # the same slot: coalesced
    gate.open()
    outcomes = [o for _, o in await chat.aflush_compactions(timeout=WAIT)]
    assert [o.entry is not None for o in outcomes] == [True, False]
    assert gate.calls == 1
    assert gate.most_at_once == 1
    assert len(get_compactions(manager, "s1")) == 1


def test_sessions_compact_side_by_side(manager: ContextManager) -> None:
    for session in ("a", "b"):
        _seed(manager, session)
    gate = Gate()
    chat = _chat(manager, gate)
    chat.invoke("Question?", config={"configurable": {"session_id": "a"}})
    chat.invoke("Question?", config={"configurable": {"session_id": "b"}})
    deadline = time.monotonic() + WAIT
    while gate.calls < 2:  # one per session, at the same time
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert chat.compactions_pending == frozenset({"a", "b"})
    gate.open()
    finished = chat.flush_compactions(timeout=WAIT)
    assert sorted(s for s, o in finished if o.entry) == ["a", "b"]
    assert gate.most_at_once == 2
    assert all(len(get_compactions(manager, s)) == 1 for s in ("a", "b"))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("fail", "summarizer failed: RuntimeError: summariser down"), ("empty", "summarizer")],
)
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_failing_or_empty_summariser_stores_nothing(
    manager: ContextManager, caplog: pytest.LogCaptureFixture, kind: str, reason: str, mode: str
) -> None:
    _seed(manager)
    gate = Gate(fail=kind == "fail", empty=kind == "empty")
    chat = _chat(manager, gate)
    shared = manager.get_header("s1")["shared"]
    with caplog.at_level(logging.WARNING, logger="ctx_memory.compaction"):
        if mode == "sync":
            reply = chat.invoke("Which code came first?", config=SESSION)
            gate.open()
            finished = chat.flush_compactions(timeout=WAIT)
        else:
            reply = await chat.ainvoke("Which code came first?", config=SESSION)
            gate.open()
            finished = await chat.aflush_compactions(timeout=WAIT)
    assert reply.content == "ok"
    ((session, outcome),) = finished
    assert session == "s1"
    assert outcome.entry is None
    assert outcome.failed
    assert outcome.reason.startswith(reason)
    assert get_compactions(manager, "s1") == []
    assert manager.get_header("s1")["shared"] == shared
    assert len(manager.get_history("s1")) == 42  # the turn, nothing else
    assert any("compaction of session 's1' skipped" in r.getMessage() for r in caplog.records)
    # The next request assembles as before: the whole history, no summary.
    chat.invoke("Again?", config=SESSION)
    assert not _has_summary(_seen(chat)[-1])
    gate.open()
    chat.flush_compactions(timeout=WAIT)


def test_a_store_error_is_logged_and_reported_not_raised(
    manager: ContextManager, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(manager)
    gate = Gate()
    gate.open()
    chat = _chat(manager, gate)

    def broken(*args: Any, **kwargs: Any) -> None:
        msg = "disk full"
        raise OSError(msg)

    monkeypatch.setattr(manager, "update_partial_context", broken)
    with caplog.at_level(logging.ERROR, logger="ctx_memory.compaction"):
        assert chat.invoke("Which code came first?", config=SESSION).content == "ok"
        ((_, outcome),) = chat.flush_compactions(timeout=WAIT)
    assert outcome.entry is None
    assert outcome.reason == "compaction failed: OSError: disk full"
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None  # with its traceback
    monkeypatch.undo()
    assert get_compactions(manager, "s1") == []


def test_flush_times_out_while_the_summariser_waits(manager: ContextManager) -> None:
    _seed(manager)
    gate = Gate()
    chat = _chat(manager, gate)
    chat.invoke("Which code came first?", config=SESSION)
    with pytest.raises(TimeoutError, match="s1"):
        chat.flush_compactions(timeout=0.05)
    gate.open()
    assert [o.entry is not None for _, o in chat.flush_compactions(timeout=WAIT)] == [True]


def test_the_given_assembler_is_not_changed(manager: ContextManager) -> None:
    gate = Gate()
    policy = _policy(gate)
    assembler = ContextPromptAssembler(manager, max_tokens=4000, compaction=policy)
    chat = ContextualChat(
        manager, fake_model("ok"), assembler=assembler, compaction_mode="background"
    )
    assert assembler.compaction is policy
    assert chat.assembler is not assembler
    assert chat.assembler.compaction is not None
    assert chat.assembler.compaction.summarize_at is None
    assert chat.assembler.compaction.clear_tool_outputs_at == policy.clear_tool_outputs_at
    assert chat.compaction_mode == "background"


def test_modes_are_checked(manager: ContextManager) -> None:
    with pytest.raises(ValidationError, match="needs compaction="):
        ContextualChat(manager, fake_model("ok"), compaction_mode="background")
    with pytest.raises(ValidationError, match="compaction_mode must be"):
        ContextualChat(manager, fake_model("ok"), compaction_mode="later")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="needs compaction="):
        ContextMiddleware(manager, compaction_mode="background")
    with pytest.raises(ValidationError, match="compaction_mode must be"):
        ContextMiddleware(manager, compaction_mode="after")  # type: ignore[arg-type]
    before = ContextualChat(manager, fake_model("ok"), compaction=CompactionPolicy())
    assert before.compaction_mode == "before"
    assert before.flush_compactions() == []
    assert before.compactions_pending == frozenset()


async def test_before_mode_still_summarises_before_the_prompt(manager: ContextManager) -> None:
    _seed(manager)
    gate = Gate()
    gate.open()
    chat = ContextualChat(manager, fake_model("ok"), max_tokens=4000, compaction=_policy(gate))
    await chat.ainvoke("Which code came first?", config=SESSION)
    assert _has_summary(_seen(chat)[0])
    assert await chat.aflush_compactions() == []


# --------------------------------------------------------------------------- create_agent


def _agent(manager: ContextManager, gate: Gate, *replies: str) -> tuple[Any, Any, Any]:
    model = fake_model(*replies)
    middleware = ContextMiddleware(
        manager,
        max_tokens=4000,
        reserve_tokens=500,
        compaction=_policy(gate),
        compaction_mode="background",
    )
    return create_agent(model, tools=[], middleware=[middleware]), model, middleware


def test_agent_replies_before_the_summariser_and_the_next_call_uses_it(
    manager: ContextManager,
) -> None:
    _seed(manager)
    before = manager.get_history("s1")
    gate = Gate()
    agent, model, middleware = _agent(manager, gate, "BK000.", "BK019.")
    result = agent.invoke({"messages": [("user", "Which code came first?")]}, AGENT)
    assert isinstance(result["messages"][-1], AIMessage)
    assert result["messages"][-1].content == "BK000."
    assert gate.started.wait(WAIT)
    assert gate.finished == 0
    assert middleware.compactions_pending == frozenset({"s1"})
    assert get_compactions(manager, "s1") == []
    assert not _has_summary(model.seen[0])
    assert len(manager.get_history("s1")) == 42

    gate.open()
    ((_, outcome),) = middleware.flush_compactions(timeout=WAIT)
    assert outcome.entry == _check_stored(manager, before)

    agent.invoke({"messages": [("user", "And the last one?")]}, AGENT)
    assert _has_summary(model.seen[-1])
    assert sum(m.text.startswith(SUMMARY_PREFIX) for m in model.seen[-1]) == 1
    assert [o.reason for _, o in middleware.flush_compactions(timeout=WAIT)] == ["not needed"]
    assert gate.calls == 1
    _check_stored(manager, before)
    assert len(manager.get_history("s1")) == 44


async def test_agent_async_replies_before_the_summariser_and_the_next_call_uses_it(
    manager: ContextManager,
) -> None:
    _seed(manager)
    before = manager.get_history("s1")
    gate = Gate()
    agent, model, middleware = _agent(manager, gate, "BK000.", "BK019.")
    result = await agent.ainvoke({"messages": [("user", "Which code came first?")]}, AGENT)
    assert result["messages"][-1].content == "BK000."
    await _until(gate.started)
    assert gate.finished == 0
    assert middleware.compactions_pending == frozenset({"s1"})
    assert get_compactions(manager, "s1") == []
    assert not _has_summary(model.seen[0])

    gate.open()
    ((_, outcome),) = await middleware.aflush_compactions(timeout=WAIT)
    assert outcome.entry == _check_stored(manager, before)

    await agent.ainvoke({"messages": [("user", "And the last one?")]}, AGENT)
    assert _has_summary(model.seen[-1])
    assert [o.reason for _, o in await middleware.aflush_compactions(timeout=WAIT)] == [
        "not needed"
    ]
    assert gate.calls == 1
    _check_stored(manager, before)


async def test_agent_with_a_failing_summariser_stores_nothing(manager: ContextManager) -> None:
    _seed(manager)
    gate = Gate(fail=True)
    agent, model, middleware = _agent(manager, gate, "BK000.", "BK019.")
    await agent.ainvoke({"messages": [("user", "Which code came first?")]}, AGENT)
    gate.open()
    ((_, outcome),) = await middleware.aflush_compactions(timeout=WAIT)
    assert outcome.failed
    assert get_compactions(manager, "s1") == []
    agent.invoke({"messages": [("user", "And the last one?")]}, AGENT)
    middleware.flush_compactions(timeout=WAIT)
    assert not _has_summary(model.seen[-1])
    assert len(manager.get_history("s1")) == 44


# --------------------------------------------------------------------------- process exit

_EXIT_SCRIPT = """
import logging
import threading
import time

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda

import ctx_memory._compaction_background as background
from ctx_memory import ContextManager, ContextualChat
from ctx_memory.compaction import CompactionPolicy
from ctx_memory.stores.sqlite import SqliteStore

logging.basicConfig(level=logging.WARNING)
background.EXIT_TIMEOUT_SECONDS = 1.5
manager = ContextManager(store=SqliteStore({path!r}))
for session in ("slow", "stuck"):
    for i in range(20):
        manager.add_user_message(session, f"Turn {{i}}: my booking code is BK{{i:03d}}.")
        manager.add_assistant_message(session, f"Noted, BK{{i:03d}}.")


def slow(messages):
    time.sleep(0.5)
    return "A slow summary."


def stuck(messages):
    threading.Event().wait()  # never returns


for session, summarizer in (("slow", slow), ("stuck", stuck)):
    policy = CompactionPolicy(
        clear_tool_outputs_at=None, summarize_at=300, keep_recent=8, block=4,
        min_messages=4, summarizer=RunnableLambda(summarizer),
    )
    model = GenericFakeChatModel(messages=iter([AIMessage("ok")]))
    chat = ContextualChat(
        manager, model, max_tokens=4000, compaction=policy, compaction_mode="background"
    )
    chat.invoke("Which code came first?", config={{"configurable": {{"session_id": session}}}})
print("replied", flush=True)
"""


def test_the_process_exits_after_draining_what_can_finish(tmp_path: Path) -> None:
    path = tmp_path / "exit.sqlite3"
    script = textwrap.dedent(_EXIT_SCRIPT.format(path=str(path)))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "replied"
    assert time.monotonic() - started < 45
    # The slow summary was waited for at exit; the stuck one was given up, not waited on.
    assert "exiting with background compactions unfinished: ['stuck']" in done.stderr
    with ContextManager(store=SqliteStore(str(path))) as manager:
        (entry,) = get_compactions(manager, "slow")
        assert entry["summary"] == "A slow summary."
        assert get_compactions(manager, "stuck") == []
        assert len(manager.get_history("slow")) == 42


@pytest.mark.parametrize("mode", ["close", "aclose"])
async def test_closing_the_manager_finishes_the_pending_summary_first(
    tmp_path: Path, mode: str
) -> None:
    """``with ContextManager(...)`` ending (or ``aclose``) while a summary is pending: it
    is written before the store closes. Before, a closed store refused it (on SQLite and
    PostgreSQL always, on Redis and in memory once closed stores refused everything)."""
    path = str(tmp_path / "ctx.sqlite3")
    manager = ContextManager(store=SqliteStore(path))
    _seed(manager)
    gate = Gate()
    chat = _chat(manager, gate)
    if mode == "close":
        chat.invoke("Question?", config=SESSION)
        assert gate.started.wait(WAIT)
        threading.Timer(0.2, gate.open).start()  # finishes while close() waits for it
        manager.close()
    else:
        await chat.ainvoke("Question?", config=SESSION)
        await _until(gate.started)
        asyncio.get_running_loop().call_later(0.2, gate.open)
        await manager.aclose()
    assert chat.compactions_pending == frozenset()
    [(session, outcome)] = chat.flush_compactions(timeout=WAIT)
    assert (session, outcome.entry is not None) == ("s1", True), outcome.reason
    with ContextManager(store=SqliteStore(path)) as reopened:
        assert [e["summary"] for e in get_compactions(reopened, "s1")] == [
            "Booking codes of 32 messages."
        ]
