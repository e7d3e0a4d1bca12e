"""Message ids: uuid4 text from ``os.urandom`` read in batches, never handed out twice."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from ctx_memory.records import _ID_BATCH, new_message_id


def test_ids_across_many_batches_are_distinct_uuid4_text() -> None:
    ids = [new_message_id() for _ in range(5 * _ID_BATCH + 3)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_threads_never_share_an_id() -> None:
    drawn: list[list[str]] = [[] for _ in range(8)]

    def draw(mine: list[str]) -> None:
        mine.extend(new_message_id() for _ in range(3 * _ID_BATCH))

    threads = [threading.Thread(target=draw, args=(mine,)) for mine in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for mine in drawn for i in mine]
    assert len(set(every)) == len(every) == 8 * 3 * _ID_BATCH


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_draws_its_own_ids() -> None:
    new_message_id()  # the parent holds unused bits of its batch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        try:
            os.write(write, "".join(new_message_id() for _ in range(4)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = "".join(new_message_id() for _ in range(4))
    assert len(child) == len(parent) == 4 * 36
    assert child != parent
