from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from ctx_memory.errors import (
    DocumentImportError,
    InvalidRoleError,
    InvalidSessionIdError,
    NotSerializableError,
)
from ctx_memory.schema import (
    MAX_SESSION_ID_LENGTH,
    check_json_native,
    dumps,
    dumps_validated,
    message_to_record,
    parse_document,
    record_to_message,
    validate_role,
    validate_session_id,
)

TS = "2026-01-01T00:00:00+00:00"

LC_MESSAGES = [
    HumanMessage(content="hello", id="h1", name="alice"),
    HumanMessage(
        content=[
            {"type": "text", "text": "what is in this image?"},
            {"type": "image_url", "image_url": {"url": "https://img.example/x.png"}},
        ]
    ),
    SystemMessage(content="be brief", additional_kwargs={"cache": True}),
    AIMessage(
        content="",
        id="run-1",
        tool_calls=[{"name": "search", "args": {"q": "paris", "n": 3}, "id": "call_1"}],
        usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        response_metadata={"model_name": "gpt-4o-mini", "finish_reason": "tool_calls"},
        additional_kwargs={"refusal": None},
    ),
    AIMessage(
        content="bad call",
        invalid_tool_calls=[
            {
                "name": "search",
                "args": "{not json",
                "id": "c2",
                "error": "bad json",
                "type": "invalid_tool_call",
            }
        ],
    ),
    ToolMessage(content="results", tool_call_id="call_1", name="search", artifact={"raw": [1, 2]}),
    ToolMessage(content="boom", tool_call_id="call_2", status="error"),
    AIMessage(content=[{"type": "text", "text": "Paris [1]"}], name="researcher"),
]


@pytest.mark.parametrize("message", LC_MESSAGES, ids=lambda m: type(m).__name__)
def test_langchain_round_trip_is_lossless(message):
    record = message_to_record(message, timestamp=TS)
    # The record is JSON-native and survives serialisation.
    restored = record_to_message(json.loads(json.dumps(record)))
    assert type(restored) is type(message)
    assert restored == message


def test_chunk_is_stored_as_the_message_it_adds_up_to():
    chunk = AIMessageChunk(content="Hel") + AIMessageChunk(content="lo", id="run-9")
    record = message_to_record(chunk, timestamp=TS)
    assert record["role"] == "assistant"
    restored = record_to_message(record)
    assert isinstance(restored, AIMessage)
    assert restored.content == "Hello"


def test_chat_message_roles_map_and_unknown_role_rejected():
    assert message_to_record(ChatMessage(role="user", content="x"), timestamp=TS)["role"] == "user"
    with pytest.raises(InvalidRoleError, match="critic"):
        message_to_record(ChatMessage(role="critic", content="x"), timestamp=TS)
    with pytest.raises(InvalidRoleError):
        message_to_record(FunctionMessage(name="f", content="x"), timestamp=TS)


@pytest.mark.parametrize("role", ["user", "assistant", "system", "tool", "human", "ai"])
def test_validate_role_accepts_known_roles(role):
    assert validate_role(role) in {"user", "assistant", "system", "tool"}


@pytest.mark.parametrize("role", ["", "User ", "critic", None, 3])
def test_validate_role_rejects_unknown(role):
    with pytest.raises(InvalidRoleError, match="unknown role"):
        validate_role(role)


@pytest.mark.parametrize(
    "session_id",
    ["a", "x" * MAX_SESSION_ID_LENGTH, "}{:*  ünï©ødé 🚀", "user:42:{tag}", "*"],
)
def test_session_ids_with_any_characters_are_accepted(session_id):
    assert validate_session_id(session_id) == session_id


@pytest.mark.parametrize(
    ("session_id", "match"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * (MAX_SESSION_ID_LENGTH + 1), "limit"),
        (None, "str"),
        (42, "str"),
        ("a\x00b", "control character"),
    ],
)
def test_bad_session_ids_are_rejected(session_id, match):
    with pytest.raises(InvalidSessionIdError, match=match):
        validate_session_id(session_id)


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": {"b": object()}}, "value.a.b"),
        ({"a": [1, {1: 2}]}, "value.a[1]"),
        ({"when": math.nan}, "value.when"),
        ([1, 2, {3}], "value[2]"),
        ({"b": b"bytes"}, "value.b"),
    ],
)
def test_check_json_native_names_the_path(value, path):
    with pytest.raises(NotSerializableError) as info:
        check_json_native(value)
    assert info.value.path == path
    assert path in str(info.value)


def test_check_json_native_accepts_json():
    check_json_native({"a": [1, 2.5, True, None, "x", {"b": []}], "c": (1, 2)})


def _document(**changes):
    doc = {
        "system_prompt": "sys",
        "metadata": {
            "session_id": "s1",
            "created_at": TS,
            "timestamp": TS,
            "mode": "normal",
            "token_count": 0,
            "token_encoding": "o200k_base",
            "message_count": 0,
        },
        "fetched_context": {
            "web_search": [
                {"source_type": "web_search", "content": "c", "url": None, "timestamp": TS}
            ]
        },
        "conversation_history": [{"role": "user", "content": "hi", "timestamp": TS}],
        "shared": {},
    }
    doc.update(changes)
    return doc


def test_parse_document_accepts_a_valid_document():
    document = parse_document(json.dumps(_document()))
    assert document.metadata.session_id == "s1"
    assert document.conversation_history[0].role == "user"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("{not json", ""),
        ("[1, 2]", ""),
        (
            json.dumps(
                _document(
                    conversation_history=[{"role": "critic", "content": "x", "timestamp": TS}]
                )
            ),
            "conversation_history.0.role",
        ),
        (
            json.dumps(_document(metadata={"created_at": TS, "timestamp": TS})),
            "metadata.session_id",
        ),
        (
            json.dumps(_document(metadata={**_document()["metadata"], "mode": "sleepy"})),
            "metadata.mode",
        ),
        (json.dumps(_document(shared=[])), "shared"),
        (json.dumps(_document(unexpected=1)), "unexpected"),
        (
            json.dumps(
                _document(
                    fetched_context={
                        "web_search": [
                            {"source_type": "js_scraping", "content": "c", "timestamp": TS}
                        ]
                    }
                )
            ),
            "fetched_context.web_search.0.source_type",
        ),
    ],
)
def test_parse_document_names_the_bad_field(data, field):
    with pytest.raises(DocumentImportError) as info:
        parse_document(data)
    assert info.value.field == field
    if field:
        assert field in str(info.value)


def _containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_dumps_validated_gives_the_value_dumps_gives(value: object) -> None:
    assert json.loads(dumps_validated(value)) == json.loads(dumps(value))


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), _containers))
def test_dumps_validated_gives_the_text_dumps_gives_but_for_floats(value: object) -> None:
    """Only a float with an exponent is written otherwise (``1e16``, not ``1e+16``)."""
    assert dumps_validated(value) == dumps(value)


def test_dumps_validated_of_a_record_is_the_text_dumps_gives() -> None:
    record = {
        "role": "user",
        "content": 'Tu es "utile" ✓ 😀 \u2028 \x00\x1f\x7f \\ / tab\t',
        "timestamp": "2026-01-02T03:04:05.000006+00:00",
        "metadata": {"n": 1.5, "big": 10**20, "neg": -(2**63), "list": [True, None, 0.1]},
        "token_count": 12,
        "id": "m-1",
    }
    assert dumps_validated(record) == dumps(record)
    del record["metadata"]["big"]  # orjson's path (no integer beyond 64 bits)
    assert dumps_validated(record) == dumps(record)


def test_dumps_validated_refuses_what_dumps_refuses() -> None:
    for bad in (float("nan"), {"x": object()}, {"x": [float("inf")]}, [1, -float("inf")]):
        with pytest.raises((ValueError, TypeError)):
            dumps(bad)
        with pytest.raises((ValueError, TypeError)):
            dumps_validated(bad)
