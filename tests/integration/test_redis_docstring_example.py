"""RedisStore's docstring ``Example:`` runs as written against the suite's redis-server."""

from __future__ import annotations

import inspect
import re
import textwrap

import redis

from ctx_memory.stores.redis import RedisStore


def test_redis_store_example_runs(redis_url):
    doc = inspect.getdoc(RedisStore) or ""
    match = re.search(r"\.\. code-block:: python\s*\n\n(?P<code>(?:[ \t]+.*\n|\s*\n)+)", doc + "\n")
    assert match is not None
    code = textwrap.dedent(match["code"]).replace("redis://localhost:6379/0", redis_url)
    assert redis_url in code
    client = redis.Redis.from_url(redis_url)
    try:
        exec(compile(code, "<RedisStore example>", "exec"), {"__name__": "__example__"})
    finally:
        for key in client.scan_iter("ctx_memory:*"):
            client.delete(key)
        client.close()
