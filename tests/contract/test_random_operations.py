"""Random sequences of manager operations give the same documents on memory and Redis.

A hypothesis state machine, beyond the scripted workload of the shipped contract suite
(``ctx_memory.testing``, run on every store by ``test_builtin_stores.py``): identical
``get_context`` documents, timestamps and generated ids aside.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ctx_memory.manager import ContextManager
from ctx_memory.stores.memory import InMemoryStore
from ctx_memory.stores.redis import RedisStore
from ctx_memory.testing.manager_tests import normalised as normalise

SESSION_IDS = st.sampled_from(["a", "b{x}", "ü:*"])
KEYS = st.sampled_from(["k", "l", "m", "n:{}", "ü"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # the signed 64-bit range
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
PARTIALS = st.dictionaries(KEYS, JSON, max_size=3)
TEXT = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() != "")


class SameDocuments(RuleBasedStateMachine):
    """Drive the in-memory store and Redis with the same random operations."""

    redis_url = ""

    def __init__(self) -> None:
        super().__init__()
        self.prefix = f"h{uuid.uuid4().hex[:10]}"
        self.memory = ContextManager(store=InMemoryStore(), token_counter="approximate")
        self.redis = ContextManager(
            store=RedisStore(self.redis_url, key_prefix=self.prefix), token_counter="approximate"
        )
        self.both = (self.memory, self.redis)

    @rule(sid=SESSION_IDS, content=TEXT)
    def user_message(self, sid: str, content: str) -> None:
        for cm in self.both:
            cm.add_user_message(sid, content)

    @rule(sid=SESSION_IDS, content=TEXT, model=st.sampled_from(["m1", "m2"]))
    def assistant_message(self, sid: str, content: str, model: str) -> None:
        for cm in self.both:
            cm.add_assistant_message(sid, content, model=model)

    @rule(sid=SESSION_IDS, partial=PARTIALS)
    def merge(self, sid: str, partial: dict[str, Any]) -> None:
        for cm in self.both:
            cm.update_partial_context(sid, partial)

    @rule(sid=SESSION_IDS, key=KEYS, value=JSON)
    def set_context(self, sid: str, key: str, value: Any) -> None:
        for cm in self.both:
            cm.set_context(sid, key, value)

    @rule(
        sid=SESSION_IDS,
        source=st.sampled_from(["web_search", "js_scraping", "pdf"]),
        content=TEXT,
        dedupe=st.booleans(),
    )
    def fetched(self, sid: str, source: str, content: str, dedupe: bool) -> None:
        for cm in self.both:
            cm.add_fetched_context(sid, source, content, url="https://x", dedupe=dedupe)

    @rule(
        sid=SESSION_IDS,
        mode=st.sampled_from(["normal", "thinking", "research"]),
        extra=JSON,
    )
    def metadata(self, sid: str, mode: str, extra: Any) -> None:
        for cm in self.both:
            cm.update_metadata(sid, mode=mode, extra=extra)

    @rule(sid=SESSION_IDS, prompt=st.none() | TEXT)
    def system_prompt(self, sid: str, prompt: str | None) -> None:
        for cm in self.both:
            cm.set_system_prompt(sid, prompt)

    @rule(sid=SESSION_IDS, preserve=st.booleans())
    def clear(self, sid: str, preserve: bool) -> None:
        for cm in self.both:
            cm.clear(sid, preserve_fetched=preserve)

    @rule(sid=SESSION_IDS)
    def delete(self, sid: str) -> None:
        results = [cm.delete_context(sid) for cm in self.both]
        assert results[0] == results[1]

    @rule(source=SESSION_IDS, dest=SESSION_IDS)
    def copy(self, source: str, dest: str) -> None:
        if self.memory.get_context(source):
            for cm in self.both:
                cm.import_session(cm.export_session(source), session_id=dest)

    @invariant()
    def same_documents(self) -> None:
        assert self.memory.list_sessions() == self.redis.list_sessions()
        for sid in self.memory.list_sessions():
            assert normalise(self.redis.get_context(sid)) == normalise(self.memory.get_context(sid))
            assert normalise(self.redis.get_history(sid, last_k=2)) == normalise(
                self.memory.get_history(sid, last_k=2)
            )

    def teardown(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        for key in client.scan_iter(match=f"{self.prefix}:*"):
            client.delete(key)
        client.close()
        self.memory.close()
        self.redis.close()


@pytest.mark.redis
def test_random_operations_same_documents_on_memory_and_redis(redis_url: str) -> None:
    SameDocuments.redis_url = redis_url
    run_state_machine_as_test(
        SameDocuments,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
