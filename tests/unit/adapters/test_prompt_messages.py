"""The fast history-message builder gives exactly the messages record_to_message gives."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, messages_to_dict

from ctx_memory.assembly.messages import _factories, _PlainMessageFactory, records_to_messages
from ctx_memory.schema import record_to_message
from ctx_memory.stores.memory import _decode_all

BASE = {"timestamp": "2026-01-01T00:00:00+00:00", "metadata": {}, "token_count": 7}
CALL = {"name": "search", "args": {"q": "paris"}, "id": "call_1", "type": "tool_call"}

SHAPES: list[dict[str, Any]] = [
    {"role": "user", "content": "hello"},
    {"role": "user", "content": ""},
    {"role": "user", "content": " \n[1] caf\u00e9 \u2603 "},
    {"role": "assistant", "content": "hi there"},
    {"role": "assistant", "content": ""},
    {"role": "system", "content": "be terse"},
    {"role": "user", "content": "named", "name": "bob"},
    {"role": "user", "content": "with id", "id": "msg-1"},
    {"role": "assistant", "content": "with id only", "id": "9f1c2b7e-0d1a-4c6e-8f3a-1b2c3d4e5f60"},
    {"role": "system", "content": "sys with id", "id": "s-\u00e9"},
    {"role": "assistant", "content": "with id", "id": "run-1", "name": "bot"},
    {"role": "assistant", "content": "kw", "additional_kwargs": {"refusal": None}},
    {"role": "assistant", "content": "meta", "response_metadata": {"model_name": "m"}},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {
        "role": "assistant",
        "content": "usage",
        "usage_metadata": {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
    },
    {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    {"role": "tool", "content": "err", "tool_call_id": "call_1", "status": "error"},
    {"role": "user", "content": [{"type": "text", "text": "blocks"}]},
    {"role": "assistant", "content": ["a", {"type": "text", "text": "b"}]},
    # Rich keys present but None: the same as absent.
    {"role": "user", "content": "nones", "name": None, "id": None, "additional_kwargs": None},
    {"role": "assistant", "content": "nones", "tool_calls": None, "usage_metadata": None},
    # Extra stored fields record_to_message ignores.
    {"role": "assistant", "content": "extra", "model": "gpt", "response_time_ms": 12},
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s['role']}-{s['content']!r:.20}")
def test_every_shape_is_identical_to_record_to_message(shape: dict[str, Any]) -> None:
    record = {**shape, **BASE}
    [fast] = records_to_messages([json.loads(json.dumps(record))])
    slow = record_to_message(json.loads(json.dumps(record)))
    assert type(fast) is type(slow)
    assert fast == slow
    assert fast.model_dump() == slow.model_dump()
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.__pydantic_extra__ == slow.__pydantic_extra__
    assert fast.__pydantic_private__ == slow.__pydantic_private__
    assert messages_to_dict([fast]) == messages_to_dict([slow])
    assert fast.to_json() == slow.to_json()
    assert repr(fast) == repr(slow)
    assert fast.text == slow.text
    assert fast.model_copy(deep=True) == slow


def test_a_mixed_history_keeps_order_and_equality() -> None:
    records = [{**shape, **BASE} for shape in SHAPES] * 3
    fast = records_to_messages(records)
    assert fast == [record_to_message(r) for r in records]


def test_fast_messages_share_no_mutable_state() -> None:
    a, b = records_to_messages([{"role": "assistant", "content": "x"}] * 2)
    a.additional_kwargs["k"] = 1
    a.response_metadata["k"] = 1
    a.tool_calls.append(CALL)  # type: ignore[attr-defined]
    assert b.additional_kwargs == {}
    assert b.response_metadata == {}
    assert b.tool_calls == []  # type: ignore[attr-defined]
    c, d = records_to_messages([{"role": "user", "content": "y"}] * 2)
    c.content = "changed"
    assert d.content == "y"


def test_the_factories_verified_themselves() -> None:
    records_to_messages([{"role": r, "content": "x"} for r in ("user", "assistant", "system")])
    assert set(_factories) == {"user", "assistant", "system"}
    assert all(f.ok for f in _factories.values())


def test_a_factory_that_fails_its_check_falls_back_to_the_constructor() -> None:
    factory = _PlainMessageFactory(HumanMessage)
    factory.ok = False
    message = factory("z")
    assert message == HumanMessage(content="z")


@pytest.mark.parametrize(
    "raw",
    [
        [],
        ['{"a": 1}'],
        ['{"a": [1, 2.5, null, true]}', '"s"', "3", '{"u": "caf\\u00e9 \u2603"}', "[]"],
    ],
)
def test_joined_decode_equals_one_load_per_text(raw: list[str]) -> None:
    assert _decode_all(raw) == [json.loads(r) for r in raw]
