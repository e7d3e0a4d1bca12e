"""``ctx-memory migrate`` between SQLite, Redis and PostgreSQL: nothing lost, resumable."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

import pytest
import redis
from typer.testing import CliRunner

from ctx_memory import ContextManager
from ctx_memory.cli import app
from ctx_memory.errors import ConfigurationError
from ctx_memory.migrate import migrate, open_store
from ctx_memory.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.redis]

SESSIONS = [f"user-{i:03d}" for i in range(40)] + ["ü ✓ *", "a}{b", "x" * 200]


def _fill(path: Path) -> dict[str, dict[str, Any]]:
    """A SQLite file with every kind of content; returns each session's document."""
    with ContextManager(store=SqliteStore(str(path))) as cm:
        for n, sid in enumerate(SESSIONS):
            cm.set_system_prompt(sid, f"prompt {n}")
            cm.update_metadata(sid, mode="research", current_url=f"https://{n}.example")
            for turn in range(n % 7):
                cm.add_user_message(sid, f"question {turn} of {sid}")
                cm.add_assistant_message(sid, f"answer {turn}", model="fake")
            if n % 3 == 0:
                cm.add_fetched_context(sid, "web_search", f"page {n}", url=f"https://{n}.example")
            cm.update_partial_context(sid, {"agents": {"a": n}})
        return {sid: cm.get_context(sid) for sid in SESSIONS}


def _documents(url: str) -> dict[str, dict[str, Any]]:
    with open_store(url) as store:
        return {sid: store.get_document(sid) or {} for sid in store.list_sessions()}


def _redis(url: str, prefix: str) -> str:
    return f"{url}?key_prefix={prefix}"


def test_sqlite_to_redis_to_sqlite_keeps_everything(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    expected = _fill(tmp_path / "a.sqlite3")
    there = _redis(redis_url, key_prefix)
    with open_store(str(tmp_path / "a.sqlite3")) as src, open_store(there) as dst:
        report = migrate(src, dst)
    assert report.ok
    assert (report.sessions, report.copied, report.skipped) == (len(SESSIONS), len(SESSIONS), 0)
    assert report.messages == sum(d["metadata"]["message_count"] for d in expected.values())
    assert report.tokens == sum(d["metadata"]["token_count"] for d in expected.values())
    assert _documents(there) == expected
    back = f"sqlite:///{tmp_path / 'b.sqlite3'}"
    with open_store(there) as src, open_store(back) as dst:
        assert migrate(src, dst).ok
    assert _documents(back) == expected


def test_a_second_run_resumes_and_conflicts_are_left_alone(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    _fill(tmp_path / "a.sqlite3")
    there = _redis(redis_url, key_prefix)
    with open_store(str(tmp_path / "a.sqlite3")) as src, open_store(there) as dst:
        half = migrate(src, dst, prefix="user-00")  # an interrupted run: ten sessions
        assert half.copied == 10
        with ContextManager(store=dst) as cm:
            cm.add_user_message("user-001", "written on the target meanwhile")
            again = migrate(src, dst)
            assert again.skipped == 9
            assert again.copied == len(SESSIONS) - 10
            assert again.conflicts == ["user-001"]
            assert not again.ok
            assert cm.get_history("user-001")[-1]["content"] == "written on the target meanwhile"
            forced = migrate(src, dst, overwrite=True)
            assert forced.ok
            assert forced.copied == 1
            assert forced.skipped == len(SESSIONS) - 1


def test_the_command_reports_json_and_masks_passwords(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    _fill(tmp_path / "a.sqlite3")
    runner = CliRunner()
    args = ["migrate", "--from", str(tmp_path / "a.sqlite3"), "--to", _redis(redis_url, key_prefix)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["copied"] == len(SESSIONS)
    again = runner.invoke(app, args)
    assert again.exit_code == 0
    assert f"{len(SESSIONS)} already there" in again.stdout
    with ContextManager(store=SqliteStore(str(tmp_path / "a.sqlite3"))) as cm:
        cm.add_user_message("user-002", "written on the source since")
    changed = runner.invoke(app, args)
    assert changed.exit_code == 1
    assert "conflict: 'user-002': the target's copy differs from the source's" in changed.stderr
    secret = "s3cr3t-pw"
    refused = runner.invoke(
        app,
        [
            "migrate",
            "--from",
            str(tmp_path / "a.sqlite3"),
            "--to",
            f"redis://:{secret}@127.0.0.1:1/0",
        ],
    )
    assert refused.exit_code == 1
    assert "error:" in refused.output
    assert secret not in refused.output
    unknown = runner.invoke(
        app, ["migrate", "--from", f"ftp://u:{secret}@h/x", "--to", "memory://"]
    )
    assert unknown.exit_code == 2
    assert "unknown scheme 'ftp'" in unknown.output
    assert secret not in unknown.output


@pytest.mark.parametrize(
    "url", ["postgres://u:pw-s3cret@[::1:16432/db", "redis://:pw-s3cret@[::1/0"]
)
def test_a_url_that_cannot_be_parsed_is_one_error_line(url: str) -> None:
    with pytest.raises(ConfigurationError, match="is not a valid URL") as info:
        open_store(url)
    assert "pw-s3cret" not in str(info.value)
    result = CliRunner().invoke(app, ["migrate", "--from", url, "--to", "memory://"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert "pw-s3cret" not in result.output
    assert "Traceback" not in result.output


def test_open_store_refuses_an_unknown_scheme_without_its_password() -> None:
    with pytest.raises(ConfigurationError, match="unknown scheme") as caught:
        open_store("mongodb://user:hunter2@db/x")
    assert "hunter2" not in str(caught.value)


@pytest.mark.postgres
def test_redis_to_postgres_and_back(
    tmp_path: Path, redis_url: str, key_prefix: str, postgres_url: str, pg_schema: str
) -> None:
    expected = _fill(tmp_path / "a.sqlite3")
    there = _redis(redis_url, key_prefix)
    pg = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={pg_schema}"
    with open_store(str(tmp_path / "a.sqlite3")) as src, open_store(there) as dst:
        assert migrate(src, dst).ok
    with open_store(there) as src, open_store(pg) as dst:
        report = migrate(src, dst)
        assert report.ok
        assert report.copied == len(SESSIONS)
    assert _documents(pg) == expected
    redis.Redis.from_url(redis_url).close()


def test_sessions_counted_by_other_rules_are_copied_with_exact_counts(tmp_path: Path) -> None:
    """A release with other counting rules stored other token counts: the copy recounts
    (as every import does), the report lists the session as recounted, the run is ok and a
    second run finds it there (no conflict, no mismatch)."""
    path = tmp_path / "old.sqlite3"
    with ContextManager(store=SqliteStore(str(path))) as cm:
        cm.add_user_message("s1", "hello there")
        cm.add_assistant_message("s1", "hi")
        cm.add_user_message("s2", "untouched")
        exact = cm.get_context("s1")
    with sqlite3.connect(path) as db:  # what an older release would have counted
        db.execute(
            "UPDATE messages SET body = json_set(body, '$.token_count', 9) WHERE session_id = 's1'"
        )
        db.execute("UPDATE sessions SET tc = 18 WHERE id = 's1'")
    target = tmp_path / "new.sqlite3"
    for run in range(2):
        with open_store(str(path)) as src, open_store(str(target)) as dst:
            report = migrate(src, dst)
        assert report.ok, report
        assert report.recounted == ["s1"]
        assert (report.copied, report.skipped) == ((2, 0) if run == 0 else (0, 2))
    with ContextManager(store=SqliteStore(str(target))) as cm:
        copied = cm.get_context("s1")
    assert copied["metadata"]["token_count"] == exact["metadata"]["token_count"] != 18
    assert [m["token_count"] for m in copied["conversation_history"]] == [
        m["token_count"] for m in exact["conversation_history"]
    ]


def test_a_change_that_keeps_the_counts_is_a_conflict_and_overwrite_copies_it(
    tmp_path: Path,
) -> None:
    """Same message, token and item counts but another prompt, metadata, shared state or a
    message of the same length: the target's copy is not "already there" (it was skipped
    and reported verified, even with --overwrite)."""
    source, target = tmp_path / "src.sqlite3", tmp_path / "dst.sqlite3"
    with ContextManager(store=SqliteStore(str(source))) as cm:
        cm.add_user_message("s1", "hello")
        cm.set_system_prompt("s1", "v1 prompt")
        cm.update_partial_context("s1", {"plan": "v1"})
    with open_store(str(source)) as src, open_store(str(target)) as dst:
        assert migrate(src, dst).copied == 1
    with ContextManager(store=SqliteStore(str(source))) as cm:
        first = cm.get_history("s1")[0]
        cm.replace_message("s1", first["id"], {"role": "user", "content": "world"})  # same count
        cm.set_system_prompt("s1", "v2 prompt")
        cm.update_metadata("s1", current_url="https://new.example")
        cm.update_partial_context("s1", {"plan": "v2"})
        changed = cm.get_context("s1")
    with open_store(str(source)) as src, open_store(str(target)) as dst:
        report = migrate(src, dst)
        assert (report.conflicts, report.skipped, report.ok) == (["s1"], 0, False)
        forced = migrate(src, dst, overwrite=True)
        assert (forced.copied, forced.ok) == (1, True)
        assert migrate(src, dst).skipped == 1  # and then it is there
    assert _documents(str(target)) == {"s1": changed}


def test_a_session_no_store_accepts_fails_alone_and_is_named(tmp_path: Path) -> None:
    """A stored value an import refuses (a malformed compaction entry from outside the
    API) fails that session, named with the field; the others are copied, exit code 1."""
    source, target = tmp_path / "src.sqlite3", tmp_path / "dst.sqlite3"
    with ContextManager(store=SqliteStore(str(source))) as cm:
        for sid in ("a1", "b2", "c3"):
            cm.add_user_message(sid, f"hi from {sid}")
    bad = {"ctx_memory.compactions": {"c1": {"id": "c1", "kind": "summary", "first_index": 0,
                                             "last_index": 0, "summary": ""}}}  # fmt: skip
    with sqlite3.connect(source) as db:
        db.execute("UPDATE session_shared SET sh = ? WHERE session_id = 'b2'", (json.dumps(bad),))
    result = CliRunner().invoke(
        app, ["migrate", "--from", str(source), "--to", str(target), "--json"]
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == [{
        "session_id": "b2",
        "error": "invalid session document at shared.ctx_memory.compactions.c1: "
                 "compaction summary: is empty (a summary compaction needs text)",
    }]  # fmt: skip
    assert (report["copied"], report["ok"]) == (2, False)
    assert "failed: 'b2': invalid session document at shared.ctx_memory" in result.stderr
    assert sorted(_documents(str(target))) == ["a1", "c3"]


def test_a_session_a_killed_run_left_unlisted_on_a_cluster_is_written_again(
    tmp_path: Path, redis_cluster_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a Cluster a write and the session's index entry are two calls: a kill between them
    left the session unlisted, and the next run skipped it as already there."""
    from ctx_memory.stores._redis_ops import RedisOperations

    _fill(tmp_path / "a.sqlite3")
    real = RedisOperations._cluster_settled

    def killed_after_the_write(self: Any, session_id: str, **kwargs: Any) -> Any:
        if session_id == "user-003":
            raise KeyboardInterrupt  # (the session is written, its index entry is not)
        return (yield from real(self, session_id, **kwargs))

    there = f"{redis_cluster_url}?key_prefix={key_prefix}&cluster=true"
    with open_store(str(tmp_path / "a.sqlite3")) as src, open_store(there) as dst:
        monkeypatch.setattr(RedisOperations, "_cluster_settled", killed_after_the_write)
        with pytest.raises(KeyboardInterrupt):
            migrate(src, dst, prefix="user-00")
        monkeypatch.undo()
        assert dst.get_document("user-003") is not None
        assert "user-003" not in dst.list_sessions()
        again = migrate(src, dst, prefix="user-00")
        assert again.ok
        assert (again.skipped, again.copied) == (3, 7)  # user-003 written again, 004-009
        assert sorted(dst.list_sessions()) == [f"user-00{i}" for i in range(10)]
        assert migrate(src, dst, prefix="user-00").skipped == 10
