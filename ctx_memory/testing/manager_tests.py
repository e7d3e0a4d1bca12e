"""The contract through a ``ContextManager``: what an application sees over the store.

The same workload gives the same documents as on the in-memory store; every bad value is
refused the same way before anything is written; history edits keep both counters equal
to what the stored history holds; paging lists every live session once, in id order.
The docstring of each test is the clause of the contract it checks.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import weakref
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from ctx_memory.config import Settings
from ctx_memory.errors import (
    DocumentImportError,
    InvalidMessageError,
    InvalidSessionIdError,
    MessageNotFoundError,
    NotSerializableError,
    SessionNotFoundError,
    SharedStateTooLargeError,
    ValidationError,
)
from ctx_memory.events import EventType
from ctx_memory.manager import ContextManager
from ctx_memory.schema import MAX_DEPTH, MAX_INT, MAX_MESSAGE_ID_LENGTH
from ctx_memory.stores.base import MAX_SHARED_BYTES, new_header
from ctx_memory.stores.memory import InMemoryStore
from ctx_memory.testing._base import ContractBase, StoreFactory, contents, requires

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.events import Event
    from ctx_memory.stores.base import BaseStore

__all__ = [
    "BAD_CALLS",
    "BAD_SESSION_IDS",
    "ManagerContractTests",
    "manager",
    "normalised",
    "workload",
]

SURROGATE = "\ud83d"


def manager(store: BaseStore) -> ContextManager:
    """A manager over ``store`` with default settings, approximate token counts.

    The settings are built here, not read from files or ``CTX_MEMORY_*`` variables, so
    nothing of the machine running the suite changes what it checks.
    """
    settings = Settings(token_counter="approximate")  # noqa: S106 (a counter, not a secret)
    return ContextManager(settings, store=store)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


BAD_CALLS: dict[str, tuple[type[Exception], Callable[[ContextManager, str], Any]]] = {
    "deep shared merge": (
        NotSerializableError,
        lambda cm, sid: cm.update_partial_context(sid, {"ok": 1, "deep": _nested(10_000)}),
    ),
    "negative response_time_ms": (
        ValidationError,
        lambda cm, sid: cm.add_assistant_message(sid, "hi", response_time_ms=-5),
    ),
    "response_time_ms as text": (
        ValidationError,
        lambda cm, sid: cm.add_assistant_message(sid, "hi", response_time_ms="850"),  # type: ignore[arg-type]
    ),
    "empty top-level key in a merge": (
        ValidationError,
        lambda cm, sid: cm.update_partial_context(sid, {"ok": 1, "": 2}),
    ),
    "merged value just over the limit": (
        NotSerializableError,
        lambda cm, sid: cm.update_partial_context(sid, {"k": _nested(MAX_DEPTH + 1)}),
    ),
    "deep value just over the limit": (
        NotSerializableError,
        lambda cm, sid: cm.set_context(sid, "k", _nested(MAX_DEPTH + 1)),
    ),
    "huge int in shared": (
        NotSerializableError,
        lambda cm, sid: cm.update_partial_context(sid, {"n": 10**5000}),
    ),
    "int beyond 64 bits in metadata": (
        NotSerializableError,
        lambda cm, sid: cm.update_metadata(sid, counter=MAX_INT + 1),
    ),
    "int beyond 64 bits in message metadata": (
        NotSerializableError,
        lambda cm, sid: cm.add_user_message(sid, "hi", metadata={"n": -(2**64)}),
    ),
    "lone surrogate in content": (
        NotSerializableError,
        lambda cm, sid: cm.add_user_message(sid, f"bad {SURROGATE}"),
    ),
    "lone surrogate in a message timestamp": (
        NotSerializableError,
        lambda cm, sid: cm.add_user_message(sid, "hi", timestamp=f"2026-{SURROGATE}"),
    ),
    "lone surrogate in a fetched item timestamp": (
        NotSerializableError,
        lambda cm, sid: cm.add_fetched_context(sid, "web", "c", timestamp=SURROGATE),
    ),
    "current_url that is no text": (
        ValidationError,
        lambda cm, sid: cm.update_metadata(sid, current_url=5),  # type: ignore[arg-type]
    ),
    "user_time that is no text": (
        ValidationError,
        lambda cm, sid: cm.update_metadata(sid, user_time=1.5),  # type: ignore[arg-type]
    ),
    "user_timezone that names no zone": (
        ValidationError,
        lambda cm, sid: cm.update_metadata(sid, user_timezone="Not/AZone"),
    ),
    "user_timezone that names a directory of the zone database": (
        ValidationError,
        lambda cm, sid: cm.update_metadata(sid, user_timezone="Europe"),
    ),
    "user_timezone too long for a file name": (
        ValidationError,
        lambda cm, sid: cm.create_session(sid, metadata={"user_timezone": "x" * 300}),
    ),
    "user_timezone in create_session metadata that is no text": (
        ValidationError,
        lambda cm, sid: cm.create_session(sid, metadata={"user_timezone": ["x"]}),
    ),
    "lone surrogate in a content block": (
        NotSerializableError,
        lambda cm, sid: cm.add_user_message(sid, [{"type": "text", "text": SURROGATE}]),
    ),
    "lone surrogate in a LangChain message": (
        NotSerializableError,
        lambda cm, sid: cm.add_messages(sid, [HumanMessage(SURROGATE)]),
    ),
    "lone surrogate in shared value": (
        NotSerializableError,
        lambda cm, sid: cm.set_context(sid, "k", [SURROGATE]),
    ),
    "lone surrogate in shared key": (
        NotSerializableError,
        lambda cm, sid: cm.update_partial_context(sid, {f"k{SURROGATE}": 1}),
    ),
    "lone surrogate in set_context key": (
        NotSerializableError,
        lambda cm, sid: cm.set_context(sid, SURROGATE, 1),
    ),
    "lone surrogate in metadata": (
        NotSerializableError,
        lambda cm, sid: cm.update_metadata(sid, current_url=f"https://x/{SURROGATE}"),
    ),
    "lone surrogate in system prompt": (
        NotSerializableError,
        lambda cm, sid: cm.set_system_prompt(sid, SURROGATE),
    ),
    "lone surrogate in fetched content": (
        NotSerializableError,
        lambda cm, sid: cm.add_fetched_context(sid, "web_search", SURROGATE),
    ),
    "lone surrogate in source type": (
        NotSerializableError,
        lambda cm, sid: cm.add_fetched_context(sid, f"web{SURROGATE}", "text"),
    ),
    "lone surrogate in url": (
        NotSerializableError,
        lambda cm, sid: cm.add_fetched_context(sid, "web", "t", url=f"https://{SURROGATE}"),
    ),
    "non-str name": (
        ValidationError,
        lambda cm, sid: cm.add_message(sid, "user", "hi", name=123),  # type: ignore[arg-type]
    ),
    "unknown field in a dict message": (
        InvalidMessageError,
        lambda cm, sid: cm.add_messages(sid, [{"role": "user", "content": "x", "colour": 1}]),
    ),
    "malformed tool_calls": (
        InvalidMessageError,
        lambda cm, sid: cm.add_messages(
            sid, [{"role": "assistant", "content": "", "tool_calls": [{"oops": 1}]}]
        ),
    ),
    "tool_calls that are not a list": (
        InvalidMessageError,
        lambda cm, sid: cm.add_messages(
            sid, [{"role": "assistant", "content": "", "tool_calls": "call it"}]
        ),
    ),
    "non-str message id": (
        InvalidMessageError,
        lambda cm, sid: cm.add_messages(sid, [{"role": "user", "content": "x", "id": 7}]),
    ),
    "a bad message after a good one": (
        InvalidMessageError,
        lambda cm, sid: cm.add_messages(
            sid, [HumanMessage("fine"), {"role": "user", "content": "x", "extra": 1}]
        ),
    ),
    "shared over its size limit": (
        SharedStateTooLargeError,
        lambda cm, sid: cm.set_context(sid, "blob", "x" * MAX_SHARED_BYTES),
    ),
    "NUL in a message id": (
        InvalidMessageError,
        lambda cm, sid: cm.add_messages(sid, [HumanMessage("x", id="a\x00b")]),
    ),
    "message id over its length limit": (
        InvalidMessageError,
        lambda cm, sid: cm.add_messages(sid, [HumanMessage("x", id="i" * 513)]),
    ),
    "NUL in an imported message id": (
        DocumentImportError,
        lambda cm, sid: cm.import_session(
            {"conversation_history": [{"role": "user", "content": "x", "id": "a\x00"}]},
            session_id=sid,
        ),
    ),
    "NUL in a source type": (
        ValidationError,
        lambda cm, sid: cm.add_fetched_context(sid, "web\x00", "text"),
    ),
    "a content block that is not a dict": (
        InvalidMessageError,
        lambda cm, sid: cm.add_user_message(sid, [1]),  # type: ignore[list-item]
    ),
    "NUL in the id of a message to delete": (
        InvalidMessageError,
        lambda cm, sid: cm.delete_message(sid, "q\x00"),
    ),
}
"""Each bad value the manager refuses: the exception class and the call that sends it."""

BAD_SESSION_IDS = [
    "a\nb",
    "a\rb",
    "tab\there",
    "\x00",
    "\x1b[31m",
    "\x7f",
    f"x{SURROGATE}",
    "",
    "   ",
]
"""Session ids no write accepts."""


def _snapshot(cm: ContextManager) -> dict[str, Any]:
    return {sid: cm.get_context(sid) for sid in cm.list_sessions()}


def _chat(cm: ContextManager, sid: str = "s", turns: int = 3) -> None:
    messages: list[Any] = []
    for i in range(turns):
        messages += [
            HumanMessage(f"question {i}", id=f"q{i}"),
            AIMessage(f"answer {i}", id=f"a{i}"),
        ]
    cm.add_messages(sid, messages)


def _consistent(cm: ContextManager, sid: str = "s") -> list[str]:
    """The ids in order, after checking both counters against the stored history."""
    history = cm.get_history(sid)
    meta = cm.get_metadata(sid)
    assert meta["message_count"] == len(history) == cm.store.count_messages(sid)
    assert meta["token_count"] == sum(r["token_count"] for r in history)
    return [r["id"] for r in history]


_TIME_KEYS = frozenset({"timestamp", "created_at", "user_time"})
_GENERATED = frozenset({*_TIME_KEYS, "id"})  # message ids are generated uuids


def normalised(value: Any) -> Any:
    """The document with every timestamp and generated id replaced (they differ per run)."""
    if isinstance(value, dict):
        return {k: "<generated>" if k in _GENERATED else normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def workload(cm: ContextManager) -> None:
    """One scripted session life: every kind of write the manager offers."""
    cm.create_session("s1")
    cm.set_system_prompt("s1", "You are terse.")
    cm.update_metadata("s1", mode="research", current_url="https://a.example", lang="en")
    cm.add_user_message("s1", "What is Redis?")
    cm.add_fetched_context(
        "s1",
        "web_search",
        "Redis is an in-memory store.",
        url="https://redis.io",
        extracted_data={"title": "Redis", "site_name": "redis.io"},
        dedupe=True,
    )
    cm.add_fetched_context(
        "s1", "web_search", "Redis is an in-memory store.", url="https://redis.io", dedupe=True
    )
    cm.add_fetched_context("s1", "js_scraping", "<p>x</p>", url="https://b.example")
    cm.add_assistant_message(
        "s1",
        "A data store.",
        model="gpt-4o-mini",
        response_time_ms=12.5,
        sources_used=["https://redis.io"],
        tools_used=[],
    )
    cm.update_partial_context("s1", {"plan": {"steps": [], "done": False}, "n": 2**60 + 1})
    cm.update_partial_context("s1", {"plan": {"done": True, "notes": {}}, "f": 0.1 + 0.2})
    cm.set_context("s1", "agent:{weird}", {"list": [1, [], {}]})
    cm.add_user_message("s2 {}*", "second session ✓")
    cm.clear("s2 {}*", preserve_fetched=True)
    cm.add_user_message("s2 {}*", "after clear")
    cm.add_user_message("s3", "to be deleted")
    cm.delete_context("s3")
    exported = cm.export_session("s1")
    cm.import_session(exported, session_id="s1-copy")


class ManagerContractTests(ContractBase):
    """Tests through a ``ContextManager`` over the store; part of ``StoreContract``."""

    @pytest.fixture
    def cm(self, open_store: StoreFactory) -> ContextManager:
        """A manager over a store of two sessions, at its two-session limit if it has one."""
        limit = 2 if self.supports_max_sessions else None
        cm = manager(open_store(max_sessions=limit))
        cm.add_user_message("existing", "hello")
        cm.update_partial_context("existing", {"seed": {"a": 1}, "pad": "z" * 30})
        cm.add_user_message("other", "keep me")
        return cm

    # -------------------------------------------------------------- same documents

    def test_same_documents_as_the_in_memory_store(self, store: BaseStore) -> None:
        """A workload of every kind of write leaves the documents the in-memory store does."""
        reference = manager(InMemoryStore())
        subject = manager(store)
        workload(reference)
        workload(subject)
        assert subject.list_sessions() == reference.list_sessions() == ["s1", "s1-copy", "s2 {}*"]
        for sid in reference.list_sessions():
            assert normalised(subject.get_context(sid)) == normalised(reference.get_context(sid))
        original = subject.get_context("s1")
        copy = subject.get_context("s1-copy")
        assert copy["conversation_history"] == original["conversation_history"]
        assert copy["shared"] == original["shared"]
        assert subject.get_context("s3") == {}
        assert subject.get_history("s1", last_k=1)[0]["content"] == "A data store."
        reference.close()

    def test_async_writes_through_the_manager(self, store: BaseStore) -> None:
        """The manager's async twins write what its sync methods would."""
        cm = manager(store)

        async def main() -> dict[str, Any]:
            await cm.aadd_user_message("a", "What is Redis?")
            await cm.aadd_assistant_message("a", "A data store.", model="m")
            await cm.aupdate_partial_context("a", {"x": {"y": []}})
            await cm.aadd_fetched_context("a", "web", "c", url="https://u", dedupe=True)
            await cm.aadd_fetched_context("a", "web", "c", url="https://u", dedupe=True)
            context = await cm.aget_context("a")
            await cm.aclose()
            return context

        context = asyncio.run(main())
        assert contents(context["conversation_history"]) == ["What is Redis?", "A data store."]
        assert context["shared"] == {"x": {"y": []}}
        assert len(context["fetched_context"]["web"]) == 1
        assert context["metadata"]["message_count"] == 2

    # -------------------------------------------------------------- bad values

    @pytest.mark.parametrize("case", sorted(BAD_CALLS))
    @pytest.mark.parametrize("session_id", ["existing", "new"])
    def test_bad_values_are_rejected_before_anything_is_written(
        self, cm: ContextManager, case: str, session_id: str
    ) -> None:
        """A bad value raises its ``ValidationError``; no session is created, evicted or changed."""
        error, call = BAD_CALLS[case]
        before = _snapshot(cm)
        with pytest.raises(error) as info:
            call(cm, session_id)
        assert isinstance(info.value, ValidationError)
        assert _snapshot(cm) == before
        assert cm.get_messages("existing")  # every stored message still reads back

    @pytest.mark.parametrize("session_id", BAD_SESSION_IDS)
    def test_session_ids_with_control_characters_are_rejected(
        self, cm: ContextManager, session_id: str
    ) -> None:
        """A session id with control characters (or blank) is refused before any write."""
        before = _snapshot(cm)
        with pytest.raises(InvalidSessionIdError):
            cm.add_user_message(session_id, "hi")
        with pytest.raises(InvalidSessionIdError):
            cm.update_partial_context(session_id, {"k": 1})
        assert _snapshot(cm) == before

    def test_reads_take_any_int_and_refuse_the_rest(self, cm: ContextManager) -> None:
        """Positions, counts and limits of any size mean the same on every store."""
        _chat(cm, "r", turns=3)
        every = [r["id"] for r in cm.get_history("r")]
        for big in (2**31 - 1, 2**31, 2**63 - 1, 2**64):
            assert [r["id"] for r in cm.get_history("r", last_k=big)] == every
            assert [r["id"] for r in cm.get_message_range("r", 0, big)] == every
            assert [r["id"] for r in cm.get_message_range("r", -big, -1)] == every
            assert [[r["id"] for r in span] for span in cm.get_message_spans("r", [(0, big)])] == [
                every
            ]
            assert "r" in cm.list_sessions(limit=big)
        assert cm.get_message_range("r", big, big) == []
        for bad in (1.0, "0", None, True):
            with pytest.raises(ValidationError):
                cm.get_message_range("r", bad, 2)  # type: ignore[arg-type]
            with pytest.raises(ValidationError):
                cm.get_message_spans("r", [(bad, 2)])  # type: ignore[list-item]
        for spans in ([(3, 1)], [(-1, 2)], [(0,)], [(0, 1, 2)]):
            with pytest.raises(ValidationError):
                cm.get_message_spans("r", spans)  # type: ignore[arg-type]
        for prefix, cursor in (("a\x00", None), ("", "a\x00")):
            with pytest.raises(ValidationError):
                cm.list_sessions(prefix, limit=5, cursor=cursor)
        with pytest.raises(ValidationError):
            cm.get_fetched_context("r", "web\x00")
        assert cm.delete_message("r", "i" * 2000) is False  # a lookup takes any length

    def test_values_at_the_limits_are_accepted(self, cm: ContextManager) -> None:
        """The deepest value, the largest integers and astral characters are stored exactly."""
        limit_value = {"deep": _nested(MAX_DEPTH - 2), "big": MAX_INT, "small": -MAX_INT - 1}
        cm.update_partial_context("existing", limit_value)
        cm.add_user_message("existing", "emoji ok \U0001f600", metadata={"n": MAX_INT})
        longest = "\U0001f600" * MAX_MESSAGE_ID_LENGTH  # 4 bytes each in UTF-8
        cm.add_messages("existing", [HumanMessage("long id", id=longest)])
        assert cm.get_history("existing", last_k=1)[0]["id"] == longest
        assert cm.delete_message("existing", longest)
        shared = cm.get_context("existing")["shared"]
        assert shared["big"] == MAX_INT
        assert shared["small"] == -MAX_INT - 1
        assert shared["deep"] == _nested(MAX_DEPTH - 2)
        assert cm.get_history("existing", last_k=1)[0]["content"] == "emoji ok \U0001f600"
        # Values as deep as each write takes them export and import again, unchanged.
        cm.set_context("existing", "deepest", _nested(MAX_DEPTH))
        cm.update_partial_context("existing", {"merged": _nested(MAX_DEPTH)})  # as deep
        cm.update_metadata("existing", deepest=_nested(MAX_DEPTH - 1))
        cm.add_user_message("existing", "m", metadata={"v": _nested(MAX_DEPTH - 1)})
        cm.add_fetched_context("existing", "web", "c", extracted_data={"v": _nested(MAX_DEPTH - 1)})
        exported = cm.export_session("existing")
        cm.import_session(exported, session_id="copy")
        assert json.loads(cm.export_session("copy"))["shared"] == json.loads(exported)["shared"]
        assert cm.get_history("copy") == cm.get_history("existing")

    @pytest.mark.parametrize(
        ("field", "mutate"),
        [
            (
                "conversation_history",
                lambda d: d["conversation_history"][0].update(content=SURROGATE),
            ),
            ("shared", lambda d: d["shared"].update(deep=_nested(MAX_DEPTH + 5))),
            ("shared", lambda d: d["shared"].update(deep=_nested(MAX_DEPTH + 1))),
            ("shared", lambda d: d["shared"].update(n=10**30)),
            (
                "conversation_history",
                lambda d: d["conversation_history"].append(
                    {
                        "role": "assistant",
                        "content": "",
                        "timestamp": "2026-01-01T00:00:00Z",
                        "tool_calls": [{"args": "not a dict"}],
                    }
                ),
            ),
            ("conversation_history", lambda d: d["conversation_history"][0].update(colour="red")),
            ("fetched_context", lambda d: d["fetched_context"].update({"web\x00": []})),
            ("shared", lambda d: d["shared"].update(blob="x" * MAX_SHARED_BYTES)),
        ],
    )
    def test_bad_imports_write_nothing(
        self, cm: ContextManager, field: str, mutate: Callable[[dict[str, Any]], None]
    ) -> None:
        """An import with a bad value raises ``DocumentImportError`` naming it; nothing changes."""
        document = json.loads(cm.export_session("existing"))
        mutate(document)
        before = _snapshot(cm)
        with pytest.raises(DocumentImportError) as info:
            cm.import_session(document, session_id="imported")
        assert info.value.field.startswith(field)
        with pytest.raises(DocumentImportError):
            cm.import_session(document)  # overwriting the original: refused the same way
        assert _snapshot(cm) == before

    @pytest.mark.parametrize("how", ["merge", "set"])
    def test_shared_growing_over_its_limit_is_refused_unchanged(
        self, cm: ContextManager, how: str
    ) -> None:
        """The size limit holds for the merged result, not just for what one call sends."""
        before = _snapshot(cm)
        big = "y" * (MAX_SHARED_BYTES - 30)  # fits alone, not with what "existing" holds
        write: Callable[[], object] = (
            (lambda: cm.update_partial_context("existing", {"more": big}))
            if how == "merge"
            else (lambda: cm.set_context("existing", "more", big))
        )
        with pytest.raises(SharedStateTooLargeError) as info:
            write()
        assert info.value.size > info.value.limit == MAX_SHARED_BYTES
        assert _snapshot(cm) == before
        cm.update_partial_context("fresh", {"more": big})  # a new session: it fits
        assert len(cm.get_context("fresh")["shared"]["more"]) == len(big)

    def test_a_legacy_session_id_with_control_characters_stays_readable(
        self, store: BaseStore
    ) -> None:
        """An id stored before control characters were refused can be read, cleared, deleted."""
        legacy = "old\nid"
        header = new_header(legacy, now="2026-01-01T00:00:00+00:00", encoding="approximate")
        store.replace_document(legacy, header, [], [])
        cm = manager(store)
        assert legacy in cm.list_sessions()
        assert cm.get_context(legacy)["metadata"]["session_id"] == legacy
        assert json.loads(cm.export_session(legacy))["metadata"]["session_id"] == legacy
        with pytest.raises(InvalidSessionIdError):
            cm.add_user_message(legacy, "new writes are refused")
        assert cm.clear(legacy)
        assert cm.delete_context(legacy)
        assert legacy not in cm.list_sessions()

    @pytest.mark.parametrize("session_id", ["x\x00y", "\x00", "tab\there"])
    def test_an_unknown_id_with_control_characters_is_absent(
        self, cm: ContextManager, session_id: str
    ) -> None:
        """Reading, clearing or deleting such an id answers "absent" (no store error)."""
        assert cm.get_context(session_id) == {}
        assert not cm.session_exists(session_id)
        assert cm.get_history(session_id) == []
        assert cm.get_history(session_id, last_k=3) == []
        assert cm.get_fetched_context(session_id) == {}
        assert not cm.clear(session_id)
        assert not cm.delete_context(session_id)
        assert cm.delete_message(session_id, "m1") is False
        with pytest.raises(SessionNotFoundError):
            cm.export_session(session_id)

        async def reads() -> tuple[dict[str, Any], bool]:
            return await cm.aget_context(session_id), await cm.adelete_context(session_id)

        assert asyncio.run(reads()) == ({}, False)

    # -------------------------------------------------------------- history edits

    def test_delete_one_message(self, store: BaseStore) -> None:
        """``delete_message`` removes one message, once, and frees its id."""
        cm = manager(store)
        _chat(cm)
        events: list[Event] = []
        cm.on(EventType.HISTORY_EDITED, events.append)
        assert cm.delete_message("s", "a1")
        assert _consistent(cm) == ["q0", "a0", "q1", "q2", "a2"]
        assert not cm.delete_message("s", "a1")  # already gone: a no-op
        assert not cm.delete_message("nobody", "a1")
        assert [e.data["action"] for e in events] == ["delete"]
        cm.add_messages("s", [AIMessage("answer 1 again", id="a1")])  # the id is free again
        assert _consistent(cm)[-1] == "a1"

    def test_replace_a_message_keeps_its_place_and_id(self, store: BaseStore) -> None:
        """``replace_message`` keeps the place and id; a bad or unknown one changes nothing."""
        cm = manager(store)
        _chat(cm)
        record = cm.replace_message("s", "q2", HumanMessage("question 2, edited and much longer"))
        assert record["id"] == "q2"
        ids = _consistent(cm)
        assert ids == ["q0", "a0", "q1", "a1", "q2", "a2"]
        assert cm.get_history("s")[4]["content"] == "question 2, edited and much longer"
        cm.replace_message("s", "a0", {"role": "assistant", "content": "short"})
        assert _consistent(cm) == ids
        with pytest.raises(MessageNotFoundError):
            cm.replace_message("s", "nope", HumanMessage("x"))
        with pytest.raises(ValidationError):
            cm.replace_message("s", "q0", {"role": "user", "content": "x", "bogus": 1})
        assert _consistent(cm) == ids

    def test_truncate_after_a_message(self, store: BaseStore) -> None:
        """``truncate_after`` regenerates from a message; its removed ids are free again."""
        cm = manager(store)
        _chat(cm)
        assert cm.truncate_after("s", "q2") == 1  # regenerate the last answer
        assert _consistent(cm) == ["q0", "a0", "q1", "a1", "q2"]
        assert cm.truncate_after("s", "q1", inclusive=True) == 3  # edit an earlier question
        assert _consistent(cm) == ["q0", "a0"]
        assert cm.truncate_after("s", "a0") == 0
        with pytest.raises(MessageNotFoundError):
            cm.truncate_after("s", "q2")  # its id went with it
        cm.add_messages("s", [HumanMessage("again", id="q1")])
        assert _consistent(cm) == ["q0", "a0", "q1"]
        assert cm.truncate_after("s", "q0", inclusive=True) == 3
        assert _consistent(cm) == []
        assert cm.session_exists("s")

    def test_edits_deep_in_a_long_history(self, store: BaseStore) -> None:
        """Edits far from the end of a long history land on the right messages."""
        cm = manager(store)
        cm.add_messages("s", [HumanMessage(f"m{i}", id=f"id{i}") for i in range(450)])
        assert cm.delete_message("s", "id3")
        cm.replace_message("s", "id7", HumanMessage("seven"))
        assert cm.truncate_after("s", "id400") == 49
        ids = _consistent(cm)
        assert len(ids) == 400
        assert ids[:8] == ["id0", "id1", "id2", "id4", "id5", "id6", "id7", "id8"]
        assert cm.get_history("s")[6]["content"] == "seven"

    def test_async_history_edits_through_the_manager(self, store: BaseStore) -> None:
        """The manager's async history edits and listing do what their sync twins do."""
        cm = manager(store)

        async def main() -> None:
            _chat(cm)
            assert await cm.adelete_message("s", "q0")
            await cm.areplace_message("s", "a0", AIMessage("edited"))
            assert await cm.atruncate_after("s", "a1") == 2
            assert await cm.alist_sessions(limit=5) == ["s"]

        asyncio.run(main())
        assert _consistent(cm) == ["a0", "q1", "a1"]

    def test_create_session_leaves_an_existing_session_as_it_is(self, store: BaseStore) -> None:
        """The prompt and metadata given are the new session's; an existing one keeps its own."""
        cm = manager(store)
        events: list[tuple[str, dict[str, Any]]] = []
        cm.on(None, lambda e: events.append((e.type.value, dict(e.data))))
        assert cm.create_session(
            "s", system_prompt="A's prompt", metadata={"mode": "research", "owner": "A"}
        )
        assert events == [
            ("session_created", {}),
            ("metadata_updated", {"fields": ["mode", "owner", "system_prompt"]}),
        ]
        before = cm.get_context("s")
        assert before["system_prompt"] == "A's prompt"
        assert before["metadata"]["system_prompt_tokens"] == cm.token_counter.count("A's prompt")
        assert (before["metadata"]["mode"], before["metadata"]["owner"]) == ("research", "A")
        events.clear()
        assert not cm.create_session("s", system_prompt="B's prompt", metadata={"owner": "B"})
        assert not cm.create_session("s")
        assert events == []
        after = cm.get_context("s")
        del before["metadata"]["timestamp"], after["metadata"]["timestamp"]  # only touched
        assert after == before

    # -------------------------------------------------------------- paging

    def test_paging_through_sessions(self, store: BaseStore) -> None:
        """``list_sessions(limit=, cursor=)`` pages every live session once, in id order."""
        cm = manager(store)
        ids = sorted([f"user-{i:04d}" for i in range(230)] + ["a", "zé", "z\u4e2d", "b:{x}"])
        for sid in ids:
            cm.create_session(sid)
        seen: list[str] = []
        cursor = None
        while True:
            page = cm.list_sessions(limit=50, cursor=cursor)
            seen += page
            if len(page) < 50:
                break
            cursor = page[-1]
        assert seen == sorted(ids) == cm.list_sessions()
        assert cm.list_sessions("user-01", limit=7) == [f"user-01{i:02d}" for i in range(7)]
        assert cm.list_sessions("user-01", limit=500) == [f"user-01{i:02d}" for i in range(100)]
        assert cm.list_sessions("user-0199", limit=3, cursor="user-0100") == ["user-0199"]
        assert cm.list_sessions("z", limit=5) == ["zé", "z\u4e2d"]
        assert cm.list_sessions("nobody", limit=5) == []
        cm.delete_context("user-0001")
        assert cm.list_sessions(limit=3) == ["a", "b:{x}", "user-0000"]
        assert cm.list_sessions(limit=2, cursor="user-0000") == ["user-0002", "user-0003"]
        with pytest.raises(ValidationError):
            cm.list_sessions(limit=0)

    @requires("ttl")
    def test_paging_skips_expired_sessions(self, open_store: StoreFactory) -> None:
        """A page holds live sessions only."""
        cm = manager(open_store(ttl_seconds=0.3))
        for i in range(6):
            cm.create_session(f"old{i}")
        time.sleep(0.45)
        cm.create_session("new")
        assert cm.list_sessions(limit=3) == ["new"]

    # -------------------------------------------------------------- lifecycle events

    @requires("max_sessions")
    def test_each_manager_on_a_store_hears_its_evictions(self, open_store: StoreFactory) -> None:
        """Every manager sharing a store hears an eviction, whichever manager's write caused it."""
        store = open_store(max_sessions=1)
        first, second = manager(store), manager(store)
        heard: dict[str, list[str]] = {"first": [], "second": []}
        first.on(EventType.SESSION_EVICTED, lambda e: heard["first"].append(e.session_id))
        second.on(EventType.SESSION_EVICTED, lambda e: heard["second"].append(e.session_id))
        first.add_user_message("a", "hi")
        second.add_user_message("b", "hi")  # evicts "a", which the first manager wrote
        assert heard == {"first": ["a"], "second": ["a"]}
        assert first.get_memory_stats()["sessions_evicted"] == 1
        assert second.get_memory_stats()["sessions_evicted"] == 1

    @requires("max_sessions")
    def test_a_manager_dropped_from_a_shared_store_is_freed(self, open_store: StoreFactory) -> None:
        """The store does not keep the managers built on it (closing one closes the store)."""
        store = open_store(max_sessions=1)
        live = manager(store)
        heard: list[str] = []
        live.on(EventType.SESSION_EVICTED, lambda e: heard.append(e.session_id))
        dropped = []
        for i in range(20):
            passing = manager(store)
            passing.add_user_message(f"d{i}", "hi")  # evicts the session before it
            dropped.append(weakref.ref(passing))
            del passing
        gc.collect()
        assert [ref() for ref in dropped] == [None] * 20
        live.add_user_message("last", "hi")
        assert heard == [f"d{i}" for i in range(20)]  # each once, by the one manager left

    @requires("max_sessions")
    def test_managers_sharing_an_emitter_hear_each_event_once(
        self, open_store: StoreFactory
    ) -> None:
        """Two managers on one store and one emitter hear each eviction once.

        Also after one of them is dropped.
        """
        store = open_store(max_sessions=1)
        first = manager(store)
        second = ContextManager(first.settings, store=store, events=first.events)
        heard: list[str] = []
        first.on(EventType.SESSION_EVICTED, lambda e: heard.append(e.session_id))
        first.add_user_message("a", "hi")
        second.add_user_message("b", "hi")  # evicts a
        del second
        gc.collect()
        first.add_user_message("c", "hi")  # evicts b
        assert heard == ["a", "b"]
