"""A plain redis-py client on a store's own server, to look at its keys directly."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
import redis.cluster

if TYPE_CHECKING:
    from ctx_memory.stores.redis import RedisStore


def raw_client(store: RedisStore) -> Any:
    """A client (Cluster-aware) for ``store``'s server, decoding replies to text."""
    url = store._url
    assert url is not None
    if store.cluster:
        return redis.cluster.RedisCluster.from_url(url, decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)
