"""Building and encoding message records: the manager's part of every append."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from ctx_memory import ContextManager
from ctx_memory.errors import NotSerializableError
from ctx_memory.records import build_record, encode_record, new_message_id, records_from
from ctx_memory.schema import dumps
from ctx_memory.stores.base import WriteResult, shared_result
from ctx_memory.tokens import TokenCounter

NOW = "2025-01-01T00:00:00.000001+00:00"


def test_message_ids_are_random_uuid4_text() -> None:
    ids = {new_message_id() for _ in range(5_000)}
    assert len(ids) == 5_000
    for text in list(ids)[:500]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


@pytest.mark.parametrize(
    "record",
    [
        build_record("user", "hello", metadata=None, timestamp=None, now=NOW),
        build_record(
            "assistant",
            'héllo ✓ \u2028 "quoted" \\ tab\t \U0001f600',
            metadata={"f": 0.1, "big": 2**62, "neg": -1.5e-300, "nested": {"l": [1, [], {}]}},
            timestamp=NOW,
            name="bot",
        ),
        build_record(
            "user",
            [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}],
            metadata={"k": None, "t": True},
            timestamp=None,
            now=NOW,
        ),
        *records_from(
            [
                HumanMessage("hi", id="given-id"),
                AIMessage("", tool_calls=[{"name": "f", "args": {"x": 1.25}, "id": "c1"}]),
                ToolMessage("42", tool_call_id="c1"),
                {"role": "user", "content": "from a dict", "metadata": {"a": [1, 2.5]}},
            ],
            {"source": "test"},
            NOW,
        ),
    ],
)
def test_an_encoded_record_is_the_text_dumps_gives(record: dict[str, Any]) -> None:
    encoded = encode_record(dict(record), TokenCounter())
    stored = dict(record)
    stored["id"] = encoded.id
    stored["token_count"] = encoded.tokens
    assert encoded.json == dumps(stored)


def test_a_record_without_timestamp_takes_the_writes_time() -> None:
    assert build_record("user", "x", metadata=None, timestamp=None, now=NOW)["timestamp"] == NOW
    given = "2024-05-05T00:00:00+00:00"
    assert build_record("user", "x", metadata=None, timestamp=given, now=NOW)["timestamp"] == given
    assert all(r["timestamp"] == NOW for r in records_from([HumanMessage("a")], None, NOW))


def test_text_with_a_lone_surrogate_is_refused_ascii_text_is_not_scanned() -> None:
    with pytest.raises(NotSerializableError):
        build_record("user", "bad \ud800", metadata=None, timestamp=None, now=NOW)
    assert build_record("user", "plain", metadata=None, timestamp=None, now=NOW)["content"]


def test_an_append_reads_the_clock_once() -> None:
    manager = ContextManager()
    record = manager.add_user_message("s", "hi")
    header = manager.store.get_header("s")
    assert header is not None
    assert header["metadata"]["timestamp"] == record["timestamp"]
    manager.close()


def test_results_that_evicted_nothing_are_shared() -> None:
    assert shared_result(False, 1) is shared_result(False, 1)
    assert shared_result(True, 3) == WriteResult(created=True, added=3)
    evicting = shared_result(True, 1, ["old"])
    assert evicting == WriteResult(created=True, added=1, evicted=("old",))
    assert shared_result(False, 10_000) == WriteResult(added=10_000)
