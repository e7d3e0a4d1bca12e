"""A default-configured Redis store keeps every session, for 30 days (issue 8, item 4).

Uses the suite's real ``redis-server`` (``redis_url`` fixture); only ``REDIS_URL`` and the
key prefix are set, everything else is the default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import redis

from ctx_memory import ContextManager

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.redis

DAY = 86_400


@pytest.fixture
def client(redis_url: str, key_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
        client.delete(key)
    client.close()


def test_150_sessions_on_a_default_redis_store_are_all_kept(
    redis_url: str, key_prefix: str, client: redis.Redis
) -> None:
    with ContextManager(
        store="redis", redis_url=redis_url, redis_key_prefix=key_prefix, token_counter="approximate"
    ) as cm:
        assert cm.store.max_sessions is None
        assert cm.store.ttl_seconds == 30 * DAY
        for i in range(150):
            cm.add_user_message(f"user-{i}", f"hello {i}")
        assert sorted(cm.list_sessions()) == sorted(f"user-{i}" for i in range(150))
        assert cm.get_memory_stats()["sessions_evicted"] == 0
    ttls = [client.pttl(key) for key in client.scan_iter(match=f"{key_prefix}:*", count=1000)]
    session_ttls = [t for t in ttls if t > 0]
    assert session_ttls
    assert min(session_ttls) > 29 * DAY * 1000  # days, not the memory store's hour


def test_the_seed_flag_selects_redis_with_its_defaults(redis_url: str, key_prefix: str) -> None:
    with ContextManager(
        use_redis_caching=True, redis_url=redis_url, redis_key_prefix=key_prefix
    ) as cm:
        assert cm.store.name == "redis"
        assert (cm.store.max_sessions, cm.store.ttl_seconds) == (None, 30 * DAY)


def test_an_explicit_limit_applies_to_redis(
    redis_url: str, key_prefix: str, client: redis.Redis
) -> None:
    with ContextManager(
        store="redis",
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        token_counter="approximate",
        max_sessions=3,
    ) as cm:
        for i in range(5):
            cm.add_user_message(f"user-{i}", f"hello {i}")
        assert len(cm.list_sessions()) == 3
