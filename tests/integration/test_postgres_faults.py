"""The PostgreSQL server stopped, crashed and restarted under a writing store."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from store_records import NOW, init, msg

from ctx_memory.errors import StoreError, StoreUnavailableError
from ctx_memory.stores.postgres import PostgresStore

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def durable(postgres_server_factory: Callable[..., Any]) -> Any:
    """A private server with fsync and synchronous commit: a crash keeps what was acked."""
    return postgres_server_factory(durable=True)


def _secret(url: str) -> str:
    return url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_server_stopped_during_writes_then_restarted(durable: Any, mode: str) -> None:
    store = PostgresStore(durable.url, schema=f"crash_{mode}", connect_timeout=1)
    store.create("s", init("s"))
    acked: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        i = 0
        while True:
            try:
                store.append_messages("s", [msg(i), msg(i + 1)], init=init("s"), now=NOW)
            except StoreError as e:
                errors.append(e)
                return
            acked.append(i)
            i += 2

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.5)
    durable.stop(mode)  # "immediate": a crash, no shutdown checkpoint
    thread.join(60)
    assert not thread.is_alive()
    assert len(errors) == 1
    error = errors[0]
    assert isinstance(error, StoreUnavailableError)
    assert f"127.0.0.1:{durable.port}" in str(error)
    assert "***" in str(error)
    assert _secret(durable.url) not in str(error)
    assert _secret(durable.url) not in repr(error.__cause__)
    assert acked

    durable.start()
    messages = store.get_messages("s")
    header = store.get_header("s")
    assert header is not None
    # every acknowledged append is there, whole; the one in flight is all or nothing
    assert len(messages) in (2 * len(acked), 2 * len(acked) + 2)
    assert header["metadata"]["message_count"] == len(messages)
    assert header["metadata"]["token_count"] == 2 * len(messages)
    assert [m["content"] for m in messages] == [f"m{i}" for i in range(len(messages))]
    # and the store works again, sync and async, retrying nothing twice
    store.append_messages("s", [msg(10**6)], init=init("s"), now=NOW)
    assert store.count_messages("s") == len(messages) + 1

    async def count_then_close() -> int:
        try:
            return await store.acount_messages("s")
        finally:
            await store.aclose()

    assert asyncio.run(count_then_close()) == len(messages) + 1


def test_a_restart_between_calls_is_invisible_to_retry_safe_calls(durable: Any) -> None:
    """Pooled connections the restart closed are replaced; reads and appends are resent."""
    store = PostgresStore(durable.url, schema="between", connect_timeout=2)
    store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
    durable.stop("fast")
    durable.start()
    assert store.count_messages("s") == 1  # sent again on a fresh connection
    assert store.append_messages("s", [msg(2)], init=init("s"), now=NOW).added == 1
    assert [m["content"] for m in store.get_messages("s")] == ["m1", "m2"]
    store.close()


def test_server_down_fails_fast_and_clearly(durable: Any) -> None:
    store = PostgresStore(durable.url, schema="down", connect_timeout=1)
    store.create("s", init("s"))
    durable.stop("fast")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as info:
            store.merge_shared("s", {"a": 1}, init=init("s"), now=NOW)
        assert time.monotonic() - started < 10
        assert _secret(durable.url) not in str(info.value)
    finally:
        durable.start()
    assert store.get_header("s")["shared"] == {}  # type: ignore[index]  # nothing half-written
    store.merge_shared("s", {"a": 1}, init=init("s"), now=NOW)
    assert store.get_header("s")["shared"] == {"a": 1}  # type: ignore[index]
    store.close()
