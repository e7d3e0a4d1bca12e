"""SqliteStore: appends idempotent by message id, and files of the first schema migrated.

Real SQLite files in ``tmp_path``; concurrency across processes uses real processes.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import shutil
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ctx_memory.errors import StoreUnavailableError, StoreVersionError
from ctx_memory.schema import dumps
from ctx_memory.stores.base import EncodedItem, EncodedMessage, Header, new_header
from ctx_memory.stores.sqlite import SCHEMA_VERSION, SqliteStore

if TYPE_CHECKING:
    from collections.abc import Iterator

NOW = "2025-01-01T00:00:00+00:00"
LATER = "2025-01-01T00:05:00+00:00"


def init(sid: str) -> Header:
    return new_header(sid, now=NOW, encoding="o200k_base")


def msg(key: int | str, tokens: int = 3, content: str | None = None) -> EncodedMessage:
    mid = f"id-{key}"
    body = {"role": "user", "content": content or f"m{key}", "token_count": tokens, "id": mid}
    return EncodedMessage(dumps(body), tokens, mid)


def item(i: int) -> EncodedItem:
    body = {"source_type": "web", "content": f"c{i}", "url": f"https://x/{i}"}
    return EncodedItem("web", dumps(body), 5, f"fp-{i}")


def contents(store: SqliteStore, sid: str) -> list[str]:
    return [m["content"] for m in store.get_messages(sid)]


def counters(store: SqliteStore, sid: str) -> tuple[int, int]:
    header = store.get_header(sid)
    assert header is not None
    return header["metadata"]["message_count"], header["metadata"]["token_count"]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "ctx.sqlite3")


@pytest.fixture
def store(db: str) -> Iterator[SqliteStore]:
    with SqliteStore(db) as s:
        yield s


# ------------------------------------------------------------------ idempotent appends


def test_append_skips_ids_already_in_the_history(store: SqliteStore) -> None:
    assert store.append_messages("s", [msg(0, 4), msg(1, 6)], init=init("s"), now=NOW).added == 2
    retried = store.append_messages("s", [msg(1, 6), msg(2, 10)], init=init("s"), now=LATER)
    assert retried.added == 1
    assert contents(store, "s") == ["m0", "m1", "m2"]
    assert store.count_messages("s") == 3
    assert counters(store, "s") == (3, 20)
    assert [m["id"] for m in store.get_messages("s", -1, -1)] == ["id-2"]


def test_append_of_only_known_ids_adds_nothing(store: SqliteStore) -> None:
    store.append_messages("s", [msg(0), msg(1)], init=init("s"), now=NOW)
    for _ in range(3):
        again = store.append_messages("s", [msg(1), msg(0)], init=init("s"), now=LATER)
        assert again.added == 0
        assert not again.created
    assert contents(store, "s") == ["m0", "m1"]
    assert counters(store, "s") == (2, 6)


def test_a_batch_is_deduplicated_within_itself(store: SqliteStore) -> None:
    batch = [msg(0, 2), msg(0, 50, content="same id, other text"), msg(1, 5), msg(1, 7)]
    assert store.append_messages("s", batch, init=init("s"), now=NOW).added == 2
    assert contents(store, "s") == ["m0", "m1"]
    assert counters(store, "s") == (2, 7)
    # positions stay contiguous after skipped messages: LRANGE reads are right
    store.append_messages("s", [msg(0), msg(2), msg(3)], init=init("s"), now=NOW)
    assert [m["content"] for m in store.get_messages("s", -2, -1)] == ["m2", "m3"]
    assert [m["content"] for m in store.get_messages("s", 1, 2)] == ["m1", "m2"]


def test_ids_are_per_session(store: SqliteStore) -> None:
    assert store.append_messages("a", [msg(0)], init=init("a"), now=NOW).added == 1
    assert store.append_messages("b", [msg(0)], init=init("b"), now=NOW).added == 1
    assert contents(store, "a") == contents(store, "b") == ["m0"]


def test_clear_and_delete_forget_the_ids(store: SqliteStore) -> None:
    store.append_messages("s", [msg(0), msg(1)], init=init("s"), now=NOW)
    assert store.clear("s", now=LATER)
    assert store.append_messages("s", [msg(1)], init=init("s"), now=LATER).added == 1
    assert contents(store, "s") == ["m1"]
    assert counters(store, "s") == (1, 3)
    assert store.delete("s")
    result = store.append_messages("s", [msg(1), msg(0)], init=init("s"), now=LATER)
    assert (result.created, result.added) == (True, 2)
    assert contents(store, "s") == ["m1", "m0"]


def test_replace_document_records_the_ids(store: SqliteStore) -> None:
    store.append_messages("s", [msg(0), msg(1)], init=init("s"), now=NOW)
    header = init("s")
    header["metadata"].update(message_count=2, token_count=6)
    # a document holding one id twice (exported before ids were enforced) keeps it once,
    # as an append would (the manager's import does the same before calling the store)
    imported = [msg(10), msg(11), msg(10, content="dup")]
    assert store.replace_document("s", header, imported, [item(0)]).added == 2
    assert contents(store, "s") == ["m10", "m11"]
    assert store.append_messages("s", [msg(11), msg(10)], init=init("s"), now=NOW).added == 0
    # the ids of the replaced history are gone with it
    assert store.append_messages("s", [msg(0), msg(12)], init=init("s"), now=NOW).added == 2
    assert contents(store, "s") == ["m10", "m11", "m0", "m12"]
    assert counters(store, "s") == (4, 12)


async def test_async_append_is_idempotent(store: SqliteStore) -> None:
    assert (await store.aappend_messages("s", [msg(0)], init=init("s"), now=NOW)).added == 1
    assert (await store.aappend_messages("s", [msg(0)], init=init("s"), now=NOW)).added == 0
    assert await store.acount_messages("s") == 1


def _vm_steps(store: SqliteStore, sid: str, key: str) -> int:
    """SQLite VM instructions one append runs (counted by a progress handler)."""
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn = store._conn
    assert conn is not None
    conn.set_progress_handler(tick, 1)
    try:
        assert store.append_messages(sid, [msg(key)], init=init(sid), now=NOW).added == 1
        assert store.append_messages(sid, [msg(key)], init=init(sid), now=NOW).added == 0
    finally:
        conn.set_progress_handler(None, 1)
    return steps


def test_append_work_does_not_grow_with_the_history(store: SqliteStore) -> None:
    store.append_messages("short", [msg(i) for i in range(5)], init=init("short"), now=NOW)
    store.append_messages("long", [msg(i) for i in range(5000)], init=init("long"), now=NOW)
    _vm_steps(store, "short", "warm")  # statements prepared once
    _vm_steps(store, "long", "warm")
    short, long = _vm_steps(store, "short", "x"), _vm_steps(store, "long", "x")
    # a scan of the history would run thousands more instructions
    assert long <= short + 50, (short, long)


def _append_same_messages(path: str, rounds: int) -> None:
    with SqliteStore(path) as store:
        for r in range(rounds):
            batch = [msg(i, tokens=i % 7 + 1) for i in range(r * 10, r * 10 + 30)]
            store.append_messages("s", batch, init=init("s"), now=NOW)


def test_processes_retrying_the_same_messages_store_each_once(db: str) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_same_messages, args=(db, 20)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with SqliteStore(db) as store:
        ids = [m["id"] for m in store.get_messages("s")]
        assert len(ids) == len(set(ids)) == 19 * 10 + 30
        assert set(ids) == {f"id-{i}" for i in range(220)}
        assert counters(store, "s") == (220, sum(i % 7 + 1 for i in range(220)))


# ------------------------------------------------------------------ migration

# The schema of version 1 (no ``user_version``), as ctx_memory 0.1 created it: kept here
# verbatim as a fixture of the old format.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    sp TEXT NOT NULL,
    md TEXT NOT NULL,
    sh TEXT NOT NULL,
    mc INTEGER NOT NULL,
    tc INTEGER NOT NULL,
    ts TEXT,
    n_messages INTEGER NOT NULL DEFAULT 0,
    expires_at REAL,
    last_access INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_lru ON sessions(last_access);
CREATE INDEX IF NOT EXISTS sessions_exp ON sessions(expires_at);
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fetched (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    source_type TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fingerprints (
    session_id TEXT NOT NULL,
    fp TEXT NOT NULL,
    PRIMARY KEY (session_id, fp)
) WITHOUT ROWID;
"""

OLD_MESSAGES = [
    {"role": "user", "content": "a1", "token_count": 2, "id": "a"},
    {"role": "assistant", "content": "b", "token_count": 3, "id": "b"},
    {"role": "user", "content": "a2", "token_count": 4, "id": "a"},  # duplicate id (v1 bug)
    {"role": "user", "content": "no id", "token_count": 5},
]


def make_old_file(path: str, *, bodies: list[str] | None = None) -> dict[str, Any]:
    """A file written by version 1; returns the document of its session ``old``."""
    header = init("old")
    header["system_prompt"] = "Be brief."
    header["metadata"].update(mode="research", extra={"k": [1]})
    header["shared"] = {"plan": {"step": 2}, "big": "x" * 5000}
    meta = dict(header["metadata"])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(OLD_SCHEMA)
    conn.execute(
        "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            "old",
            dumps(header["system_prompt"]),
            dumps(meta),
            dumps(header["shared"]),
            4,
            14,
            dumps(LATER),
            4,
            None,
            7,
        ),
    )
    conn.execute(
        "INSERT INTO sessions VALUES ('other', 'null', ?, '{}', 0, 0, NULL, 0, NULL, 3)",
        (dumps(init("other")["metadata"]),),
    )
    for seq, body in enumerate(bodies or [dumps(m) for m in OLD_MESSAGES]):
        conn.execute("INSERT INTO messages VALUES ('old', ?, ?)", (seq, body))
    fetched = json.loads(item(0).json)
    conn.execute("INSERT INTO fetched VALUES ('old', 0, 'web', ?)", (dumps(fetched),))
    conn.execute("INSERT INTO fingerprints VALUES ('old', 'fp-0')")
    conn.close()
    # The migration renames a later duplicate of an id: the history, exports and deletes
    # by id then agree.
    history = [dict(m) for m in OLD_MESSAGES]
    history[2]["id"] = "a~2"
    return {
        "system_prompt": "Be brief.",
        "metadata": {**meta, "message_count": 4, "token_count": 14, "timestamp": LATER},
        "fetched_context": {"web": [fetched]},
        "conversation_history": history,
        "shared": header["shared"],
    }


def layout(path: str) -> tuple[int, set[str], list[str]]:
    """``user_version``, table names and the columns of ``sessions``."""
    conn = sqlite3.connect(path)
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        columns = [r[1] for r in conn.execute("PRAGMA table_info(sessions)")]
    finally:
        conn.close()
    return version, tables, columns


def test_a_file_of_the_first_schema_is_migrated_on_open(db: str) -> None:
    expected = make_old_file(db)
    assert layout(db)[0] == 0
    with SqliteStore(db) as store:
        assert store.get_document("old") == expected
        assert store.list_sessions() == ["old", "other"]
        # the ids of the stored messages are known: a retry of any of them is a no-op
        retry = [msg("x"), EncodedMessage(dumps(OLD_MESSAGES[0]), 2, "a")]
        retry.append(EncodedMessage(dumps(OLD_MESSAGES[1]), 3, "b"))
        assert store.append_messages("old", retry, init=init("old"), now=NOW).added == 1
        assert [m["content"] for m in store.get_messages("old")] == [
            "a1",
            "b",
            "a2",
            "no id",
            "mx",
        ]
        assert counters(store, "old") == (5, 17)
        assert [m.get("id") for m in store.get_messages("old")][:3] == ["a", "b", "a~2"]
        # fingerprints, shared state and metadata came across
        assert (
            store.append_fetched("old", [item(0)], init=init("old"), now=NOW, dedupe=True).added
            == 0
        )
        store.merge_shared("old", {"plan": {"done": True}}, init=init("old"), now=NOW)
        header = store.get_header("old")
        assert header is not None
        assert header["shared"]["plan"] == {"step": 2, "done": True}
        assert header["metadata"]["extra"] == {"k": [1]}
        assert store.append_messages("other", [msg(0)], init=init("other"), now=NOW).added == 1
    version, tables, columns = layout(db)
    assert version == SCHEMA_VERSION
    assert {"session_headers", "session_shared", "recall_segments"} <= tables
    assert "sh" not in columns
    with SqliteStore(db) as again:  # opening a migrated file changes nothing
        assert again.count_messages("old") == 5
        assert again.get_header("old")["shared"]["plan"] == {"step": 2, "done": True}  # type: ignore[index]


def test_a_renamed_duplicate_id_never_takes_an_id_the_session_holds(db: str) -> None:
    """Version 1 held ``a``, ``a~2`` and a retried ``a`` at seq 2: the rename ``a~2`` is
    taken, so it gets a random suffix as well; the file opens and nothing is dropped."""
    bodies = [
        dumps({"role": "user", "content": "first", "token_count": 2, "id": "a"}),
        dumps({"role": "assistant", "content": "second", "token_count": 3, "id": "a~2"}),
        dumps({"role": "user", "content": "retried", "token_count": 4, "id": "a"}),
        dumps({"role": "user", "content": "no id", "token_count": 5}),
    ]
    make_old_file(db, bodies=bodies)
    with SqliteStore(db) as store:
        stored = store.get_messages("old")
        assert [m["content"] for m in stored] == ["first", "second", "retried", "no id"]
        ids = [m.get("id") for m in stored]
        assert ids[:2] == ["a", "a~2"]
        assert re.fullmatch(r"a~2~[0-9a-f]{12}", ids[2])
        assert store.get_document("old")["conversation_history"][2]["id"] == ids[2]
        assert store.list_sessions() == ["old", "other"]


def test_a_version_2_file_gains_the_recall_segments_table_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.sqlite3"
    shutil.copy(Path(__file__).parents[1] / "fixtures" / "sqlite-v2.sqlite3", path)
    assert layout(str(path))[0] == 2
    with SqliteStore(str(path)) as store:
        before = store.get_document("s1")
        assert before is not None
        assert store.save_recall_segments("s1", ["seg"])
        assert store.get_recall_segments("s1") == ["seg"]
        assert store.get_document("s1") == before
    version, tables, _ = layout(str(path))
    assert version == SCHEMA_VERSION == 3
    assert "recall_segments" in tables


def test_a_failed_migration_leaves_the_old_file_untouched(db: str) -> None:
    good = [dumps(m) for m in OLD_MESSAGES]
    make_old_file(db, bodies=[*good, "{not json"])
    before = layout(db)
    with pytest.raises(StoreUnavailableError, match=re.escape(repr(db))):
        SqliteStore(db)
    assert layout(db) == before  # no half-migrated file: still version 1, every column
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (5,)
    assert conn.execute("SELECT sh FROM sessions WHERE id = 'old'").fetchone() is not None
    conn.close()


def _open_and_count(path: str, out: Any) -> None:
    with SqliteStore(path) as store:
        out.put(store.count_messages("old"))


def test_processes_opening_an_old_file_at_once_migrate_it_once(db: str) -> None:
    make_old_file(db)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_open_and_count, args=(db, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(out.get(timeout=5) for _ in procs) == [4, 4, 4, 4]
    with SqliteStore(db) as store:
        assert [m["content"] for m in store.get_messages("old")] == ["a1", "b", "a2", "no id"]


def test_a_file_of_a_newer_schema_is_refused(db: str) -> None:
    SqliteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreVersionError, match="newer"):
        SqliteStore(db)
