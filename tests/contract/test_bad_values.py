"""Every store accepts and rejects exactly the same values, before writing anything.

Each bad value is tried on every store through the manager: the same exception class
(a ``ValidationError`` naming where), and the store exactly as it was — no session
created, none evicted, no key changed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.messages import HumanMessage

from ctx_memory.errors import (
    DocumentImportError,
    InvalidMessageError,
    InvalidSessionIdError,
    NotSerializableError,
    SharedStateTooLargeError,
    ValidationError,
)
from ctx_memory.manager import ContextManager
from ctx_memory.schema import MAX_DEPTH, MAX_INT
from ctx_memory.stores.base import MAX_SHARED_BYTES

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore

SURROGATE = "\ud83d"


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


BAD_CALLS: dict[str, tuple[type[Exception], Callable[[ContextManager, str], Any]]] = {
    "deep shared merge": (
        NotSerializableError,
        lambda cm, sid: cm.update_partial_context(sid, {"ok": 1, "deep": nested(10_000)}),
    ),
    "deep value just over the limit": (
        NotSerializableError,
        lambda cm, sid: cm.set_context(sid, "k", nested(MAX_DEPTH + 1)),
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
}

BAD_IDS = ["a\nb", "a\rb", "tab\there", "\x00", "\x1b[31m", "\x7f", f"x{SURROGATE}", "", "   "]


def snapshot(cm: ContextManager) -> dict[str, Any]:
    return {sid: cm.get_context(sid) for sid in cm.list_sessions()}


@pytest.fixture
def cm(make_store: Callable[..., BaseStore]) -> ContextManager:
    """A manager over a store of two sessions at its two-session limit."""
    manager = ContextManager(store=make_store(max_sessions=2), token_counter="approximate")
    manager.add_user_message("existing", "hello")
    manager.update_partial_context("existing", {"seed": {"a": 1}, "pad": "z" * 30})
    manager.add_user_message("other", "keep me")
    return manager


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
@pytest.mark.parametrize("session_id", ["existing", "new"])
def test_bad_values_are_rejected_before_anything_is_written(
    cm: ContextManager, case: str, session_id: str
) -> None:
    error, call = BAD_CALLS[case]
    before = snapshot(cm)
    with pytest.raises(error) as info:
        call(cm, session_id)
    assert isinstance(info.value, ValidationError)
    assert snapshot(cm) == before  # no session created, none evicted, nothing changed
    assert cm.get_messages("existing")  # every stored message still reads back


@pytest.mark.parametrize("session_id", BAD_IDS)
def test_session_ids_with_control_characters_are_rejected(
    cm: ContextManager, session_id: str
) -> None:
    before = snapshot(cm)
    with pytest.raises(InvalidSessionIdError):
        cm.add_user_message(session_id, "hi")
    with pytest.raises(InvalidSessionIdError):
        cm.update_partial_context(session_id, {"k": 1})
    assert snapshot(cm) == before


def test_values_at_the_limits_are_accepted_everywhere(cm: ContextManager) -> None:
    limit_value = {"deep": nested(MAX_DEPTH - 2), "big": MAX_INT, "small": -MAX_INT - 1}
    cm.update_partial_context("existing", limit_value)
    cm.add_user_message("existing", "emoji ok \U0001f600", metadata={"n": MAX_INT})
    shared = cm.get_context("existing")["shared"]
    assert shared["big"] == MAX_INT
    assert shared["deep"] == nested(MAX_DEPTH - 2)
    assert cm.get_history("existing", last_k=1)[0]["content"] == "emoji ok \U0001f600"


@pytest.mark.parametrize(
    ("field", "mutate"),
    [
        (
            "conversation_history",
            lambda d: d["conversation_history"][0].update(content=SURROGATE),
        ),
        ("shared", lambda d: d["shared"].update(deep=nested(MAX_DEPTH + 5))),
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
        ("shared", lambda d: d["shared"].update(blob="x" * MAX_SHARED_BYTES)),
    ],
)
def test_bad_imports_write_nothing(cm: ContextManager, field: str, mutate: Any) -> None:
    document = json.loads(cm.export_session("existing"))
    mutate(document)
    before = snapshot(cm)
    with pytest.raises(DocumentImportError) as info:
        cm.import_session(document, session_id="imported")
    assert info.value.field.startswith(field)
    with pytest.raises(DocumentImportError):
        cm.import_session(document)  # overwriting the original: refused the same way
    assert snapshot(cm) == before


@pytest.mark.parametrize("how", ["merge", "set"])
def test_shared_growing_over_its_limit_is_refused_unchanged(cm: ContextManager, how: str) -> None:
    """The limit holds for the merged result, not just for what one call sends."""
    before = snapshot(cm)
    big = "y" * (MAX_SHARED_BYTES - 30)  # fits alone, not with what "existing" holds
    write = (
        (lambda: cm.update_partial_context("existing", {"more": big}))
        if how == "merge"
        else (lambda: cm.set_context("existing", "more", big))
    )
    with pytest.raises(SharedStateTooLargeError) as info:
        write()
    assert info.value.size > info.value.limit == MAX_SHARED_BYTES
    assert snapshot(cm) == before
    cm.update_partial_context("fresh", {"more": big})  # a new session: it fits
    assert len(cm.get_context("fresh")["shared"]["more"]) == len(big)


def test_a_legacy_session_id_with_control_characters_stays_readable(
    make_store: Callable[..., BaseStore],
) -> None:
    """An id stored before control characters were refused can be read, cleared, deleted."""
    from ctx_memory.stores.base import new_header

    store = make_store()
    legacy = "old\nid"
    header = new_header(legacy, now="2026-01-01T00:00:00+00:00", encoding="approximate")
    store.replace_document(legacy, header, [], [])
    cm = ContextManager(store=store, token_counter="approximate")
    assert legacy in cm.list_sessions()
    assert cm.get_context(legacy)["metadata"]["session_id"] == legacy
    assert json.loads(cm.export_session(legacy))["metadata"]["session_id"] == legacy
    with pytest.raises(InvalidSessionIdError):
        cm.add_user_message(legacy, "new writes are refused")
    assert cm.clear(legacy)
    assert cm.delete_context(legacy)
    assert legacy not in cm.list_sessions()
