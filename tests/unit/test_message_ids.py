"""Message ids: time-ordered uuid7 text, random bits from ``os.urandom`` read in batches,
never handed out twice."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from ctx_memory.records import _ID_BATCH, new_message_id


def test_ids_across_many_batches_are_distinct_uuid7_text() -> None:
    ids = [new_message_id() for _ in range(5 * _ID_BATCH + 3)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)


def test_ids_carry_the_millisecond_they_were_made_in_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_message_id()
    time.sleep(0.003)
    second = new_message_id()
    after = time.time_ns() // 1_000_000
    stamps = [uuid.UUID(i).int >> 80 for i in (first, second)]
    assert before <= stamps[0] < stamps[1] <= after
    assert first < second  # as text too: the stamp leads, in fixed-width lower-case hex


def test_the_random_bits_vary_in_every_position() -> None:
    every = (1 << 74) - 1
    ones = zeros = 0
    for _ in range(2_000):
        value = uuid.UUID(new_message_id()).int
        bits = ((value >> 64) & 0xFFF) << 62 | value & ((1 << 62) - 1)  # rand_a, rand_b
        ones |= bits
        zeros |= ~bits & every
    assert ones == zeros == every  # each of the 74 bits is 1 in some id and 0 in another


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
