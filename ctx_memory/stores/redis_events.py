"""Events across processes on Redis: pub/sub on the ``<prefix>:events`` channel.

A Redis store built with ``publish_events=True`` (setting ``REDIS_PUBLISH_EVENTS``) returns a
:class:`RedisEventPublisher` from its ``event_listeners()``: the background publisher of
:mod:`ctx_memory.stores._publisher`, sending each batch in one pipeline (one ``PUBLISH`` at a
time on a Cluster, whose pipelines refuse it). Subscribers use
:meth:`RedisStore.subscribe_events <ctx_memory.stores.redis.RedisStore.subscribe_events>`.
"""

from __future__ import annotations

import logging

from redis.cluster import RedisCluster
from typing_extensions import override

from ctx_memory.stores._publisher import EventPublisher, event_payload

__all__ = ["RedisEventPublisher", "event_payload"]

logger = logging.getLogger(__name__)


class RedisEventPublisher(EventPublisher):
    """Publish events with ``PUBLISH`` on ``channel``, from one background thread.

    Args:
        client: Returns the (sync) redis-py client to publish with.
        channel: The channel name.
        describe: How to name the server in a log line (its URL, password masked).
    """

    @override
    def _publish(self, payloads: list[str]) -> None:
        try:
            client = self._client()
            if isinstance(client, RedisCluster):  # a cluster pipeline refuses PUBLISH
                for payload in payloads:
                    client.publish(self.channel, payload)
                return
            pipe = client.pipeline(transaction=False)
            for payload in payloads:
                pipe.publish(self.channel, payload)
            pipe.execute()
        except Exception as e:  # noqa: BLE001 - a notification must never break the app
            logger.warning(
                "ctx_memory: %d event(s) not published on %s (%s): %s",
                len(payloads),
                self._describe(),
                self.channel,
                type(e).__name__,
            )
