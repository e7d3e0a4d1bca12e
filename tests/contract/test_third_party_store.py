"""A store written as a third party would, against the public interface only, passes the suite.

``BlobStore`` keeps each session as one JSON document in a key-value backend (what a
document database or a plain key-value service offers), with TTL, LRU and several store
objects on one backend. It uses nothing of ctx_memory but ``ctx_memory.stores.base`` (the
interface and its helpers), ``ctx_memory.stores.ops`` (the operations it executes) and
``ctx_memory.schema.dumps``, and reports lifecycle events through ``BaseStore._notify``, the
hook every store calls.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from typing_extensions import override

from ctx_memory.schema import dumps
from ctx_memory.stores.base import (
    WriteResult,
    assemble_document,
    check_limits,
    check_shared_size,
    deep_merge,
)
from ctx_memory.stores.handlers import OperationStore
from ctx_memory.testing import StoreContract

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore, Header
    from ctx_memory.stores.ops import (
        AppendFetched,
        AppendMessages,
        ClearSession,
        CollectGarbage,
        CountMessages,
        CreateSession,
        DeleteMessages,
        DeleteSession,
        GetDocument,
        GetFetched,
        GetHeader,
        GetMessages,
        ListPage,
        ListSessions,
        MergeShared,
        ReplaceDocument,
        ReplaceMessage,
        SessionExists,
        SetShared,
        TruncateMessages,
        UpdateHeader,
    )

Blob = dict[str, Any]
"""A session: ``header``, ``messages`` ([id, tokens, JSON]), ``fetched`` ([type, JSON]), ``fps``."""


class Backend:
    """A key-value service: session documents as JSON text, plus expiry and access order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blobs: dict[str, str] = {}
        self.expires: dict[str, float] = {}
        self.used: dict[str, int] = {}
        self.clock = itertools.count()

    def drop(self, session_id: str) -> None:
        for table in (self.blobs, self.expires, self.used):
            table.pop(session_id, None)


class BlobStore(OperationStore):
    """One JSON document per session; every call is one transaction under the backend lock."""

    name = "blob"

    def __init__(
        self, backend: Backend, *, ttl_seconds: float | None = None, max_sessions: int | None = None
    ) -> None:
        self.ttl_seconds = check_limits(ttl_seconds, max_sessions)
        self.max_sessions = max_sessions
        self.backend = backend

    # ------------------------------------------------------------ one transaction (lock held)

    def _live(
        self, session_id: str, gone: list[tuple[str, str]], *, touch: bool = True
    ) -> Blob | None:
        db = self.backend
        if session_id not in db.blobs:
            return None
        if db.expires.get(session_id, float("inf")) <= time.monotonic():
            db.drop(session_id)
            gone.append(("session_expired", session_id))
            return None
        if touch:  # a read; a write counts for LRU when it saves (a change, see _save)
            db.used[session_id] = next(db.clock)
        blob: Blob = json.loads(db.blobs[session_id])
        return blob

    def _save(self, session_id: str, blob: Blob, gone: list[tuple[str, str]]) -> list[str]:
        """Store the document, refresh its TTL; return the sessions evicted to make room."""
        db = self.backend
        created = session_id not in db.blobs
        db.blobs[session_id] = dumps(blob)
        db.used[session_id] = next(db.clock)
        if self.ttl_seconds is not None:
            db.expires[session_id] = time.monotonic() + self.ttl_seconds
        evicted: list[str] = []
        while created and self.max_sessions is not None and len(db.blobs) > self.max_sessions:
            victim = min(db.used, key=db.used.__getitem__)
            db.drop(victim)
            evicted.append(victim)
            gone.append(("session_evicted", victim))
        return evicted

    def _report(self, gone: list[tuple[str, str]]) -> None:
        for event_type, session_id in gone:
            self._notify(event_type, session_id)

    def _write(
        self,
        session_id: str,
        init: Header,
        now: str,
        change: Callable[[Blob], int],
        *,
        append: bool = False,
    ) -> WriteResult:
        """Upsert: apply ``change`` (it may raise: then nothing is stored) and save."""
        gone: list[tuple[str, str]] = []
        with self.backend.lock:
            blob = self._live(session_id, gone, touch=False)
            created = blob is None
            if blob is None:
                header = json.loads(dumps(init))  # its own copy: never the caller's dict
                blob = {"header": header, "messages": [], "fetched": [], "fps": []}
            added = change(blob)
            evicted: list[str] = []
            if created or added or not append:  # appending only known ids changes nothing
                blob["header"]["metadata"]["timestamp"] = now
                evicted = self._save(session_id, blob, gone)
        self._report(gone)
        return WriteResult(created=created, added=added, evicted=tuple(evicted))

    def _edit(self, session_id: str, now: str, edit: Callable[[Blob], Any], default: Any) -> Any:
        """Change an existing session; ``edit`` returns ``(result, changed)``."""
        gone: list[tuple[str, str]] = []
        with self.backend.lock:
            blob = self._live(session_id, gone, touch=False)
            result = default
            if blob is not None:
                result, changed = edit(blob)
                if changed:
                    blob["header"]["metadata"]["timestamp"] = now
                    self._save(session_id, blob, gone)
        self._report(gone)
        return result

    def _read(self, session_id: str) -> Blob | None:
        gone: list[tuple[str, str]] = []
        with self.backend.lock:
            blob = self._live(session_id, gone)
        self._report(gone)
        return blob

    @staticmethod
    def _count(blob: Blob, messages: int, tokens: int) -> None:
        meta = blob["header"]["metadata"]
        meta["message_count"] += messages
        meta["token_count"] += tokens

    # ------------------------------------------------------------ the interface

    # ------------------------------------------------------------ reads

    @override
    def _exists(self, op: SessionExists) -> bool:
        session_id = op.session_id
        return self._read(session_id) is not None

    @override
    def _get_header(self, op: GetHeader) -> Header | None:
        session_id = op.session_id
        blob = self._read(session_id)
        return None if blob is None else blob["header"]  # type: ignore[no-any-return]

    @override
    def _get_messages(self, op: GetMessages) -> list[dict[str, Any]]:
        session_id, start, end = op.session_id, op.start, op.end
        blob = self._read(session_id)
        stored = [] if blob is None else blob["messages"]
        n = len(stored)
        lo, hi = max(start + n if start < 0 else start, 0), min(end + n if end < 0 else end, n - 1)
        return [json.loads(raw) for _, _, raw in stored[lo : hi + 1]]

    @override
    def _count_messages(self, op: CountMessages) -> int:
        session_id = op.session_id
        blob = self._read(session_id)
        return 0 if blob is None else len(blob["messages"])

    @override
    def _get_fetched(self, op: GetFetched) -> dict[str, list[dict[str, Any]]]:
        session_id, source_type = op.session_id, op.source_type
        blob = self._read(session_id)
        fetched: dict[str, list[dict[str, Any]]] = {}
        for kind, raw in [] if blob is None else blob["fetched"]:
            if source_type in (None, kind):
                fetched.setdefault(kind, []).append(json.loads(raw))
        return fetched

    @override
    def _get_document(self, op: GetDocument) -> dict[str, Any] | None:
        session_id = op.session_id
        blob = self._read(session_id)
        if blob is None:
            return None
        fetched: dict[str, list[dict[str, Any]]] = {}
        for kind, raw in blob["fetched"]:
            fetched.setdefault(kind, []).append(json.loads(raw))
        messages = [json.loads(raw) for _, _, raw in blob["messages"]]
        return assemble_document(blob["header"], messages, fetched)

    @override
    def _list_sessions(self, op: ListSessions) -> list[str]:
        self.gc()
        with self.backend.lock:
            return sorted(self.backend.blobs)

    @override
    def _list_page(self, op: ListPage) -> list[str]:
        prefix, cursor, limit = op.prefix, op.cursor, op.limit
        ids = self.list_sessions()
        return [s for s in ids if s.startswith(prefix) and (cursor is None or s > cursor)][:limit]

    # ------------------------------------------------------------ writes

    @override
    def _create(self, op: CreateSession) -> WriteResult:
        session_id, init = op.session_id, op.init
        return self._write(session_id, init, init["metadata"]["timestamp"], lambda _: 0)

    @override
    def _append_messages(self, op: AppendMessages) -> WriteResult:
        session_id, messages, init, now = op.session_id, op.messages, op.init, op.now

        def change(blob: Blob) -> int:
            known = {mid for mid, _, _ in blob["messages"]}
            new = []
            for m in messages:
                if m.id not in known:
                    known.add(m.id)
                    new.append([m.id, m.tokens, m.json])
            blob["messages"] += new
            self._count(blob, len(new), sum(tokens for _, tokens, _ in new))
            return len(new)

        return self._write(session_id, init, now, change, append=True)

    @override
    def _append_fetched(self, op: AppendFetched) -> WriteResult:
        session_id, items, init, now, dedupe = op.session_id, op.items, op.init, op.now, op.dedupe

        def change(blob: Blob) -> int:
            added = 0
            for i in items:
                if not (dedupe and i.fingerprint in blob["fps"]):
                    blob["fps"].append(i.fingerprint)
                    blob["fetched"].append([i.source_type, i.json])
                    added += 1
            return added

        return self._write(session_id, init, now, change)

    @override
    def _merge_shared(self, op: MergeShared) -> WriteResult:
        session_id, partial, init, now = op.session_id, op.partial, op.init, op.now

        def change(blob: Blob) -> int:
            check_shared_size(dumps(deep_merge(blob["header"]["shared"], partial)))
            return 0

        return self._write(session_id, init, now, change)

    @override
    def _set_shared(self, op: SetShared) -> WriteResult:
        session_id, key, value, init, now = op.session_id, op.key, op.value, op.init, op.now

        def change(blob: Blob) -> int:
            blob["header"]["shared"][key] = json.loads(dumps(value))
            check_shared_size(dumps(blob["header"]["shared"]))
            return 0

        return self._write(session_id, init, now, change)

    @override
    def _update_header(self, op: UpdateHeader) -> WriteResult:
        session_id, init, now, metadata, system_prompt, set_system_prompt = (
            op.session_id,
            op.init,
            op.now,
            op.metadata,
            op.system_prompt,
            op.set_system_prompt,
        )

        def change(blob: Blob) -> int:
            for key, value in (metadata or {}).items():
                if key not in ("message_count", "token_count"):
                    blob["header"]["metadata"][key] = json.loads(dumps(value))
            if set_system_prompt:
                blob["header"]["system_prompt"] = system_prompt
            return 0

        return self._write(session_id, init, now, change)

    @override
    def _replace_document(self, op: ReplaceDocument) -> WriteResult:
        session_id, header, messages, items = op.session_id, op.header, op.messages, op.items
        unique: dict[str, list[Any]] = {}
        for m in messages:
            unique.setdefault(m.id, [m.id, m.tokens, m.json])  # the first of each id
        blob = {
            "header": json.loads(dumps(header)),
            "messages": list(unique.values()),
            "fetched": [[i.source_type, i.json] for i in items],
            "fps": [i.fingerprint for i in items],
        }
        gone: list[tuple[str, str]] = []
        with self.backend.lock:
            created = self._live(session_id, gone) is None
            evicted = self._save(session_id, blob, gone)
        self._report(gone)
        return WriteResult(created=created, added=len(unique), evicted=tuple(evicted))

    # ------------------------------------------------------------ edits, removal

    @override
    def _delete_messages(self, op: DeleteMessages) -> int:
        session_id, message_ids, now = op.session_id, op.message_ids, op.now

        def edit(blob: Blob) -> tuple[int, bool]:
            gone = [m for m in blob["messages"] if m[0] in set(message_ids)]
            blob["messages"] = [m for m in blob["messages"] if m[0] not in set(message_ids)]
            self._count(blob, -len(gone), -sum(tokens for _, tokens, _ in gone))
            return len(gone), bool(gone)

        return int(self._edit(session_id, now, edit, 0))

    @override
    def _replace_message(self, op: ReplaceMessage) -> bool:
        session_id, message_id, message, now = op.session_id, op.message_id, op.message, op.now

        def edit(blob: Blob) -> tuple[bool, bool]:
            for index, (mid, tokens, _) in enumerate(blob["messages"]):
                if mid == message_id:
                    blob["messages"][index] = [message_id, message.tokens, message.json]
                    self._count(blob, 0, message.tokens - tokens)
                    return True, True
            return False, False

        return bool(self._edit(session_id, now, edit, default=False))

    @override
    def _truncate_messages(self, op: TruncateMessages) -> int | None:
        session_id, message_id, inclusive, now = op.session_id, op.message_id, op.inclusive, op.now

        def edit(blob: Blob) -> tuple[int | None, bool]:
            ids = [mid for mid, _, _ in blob["messages"]]
            if message_id not in ids:
                return None, False
            cut = ids.index(message_id) + (0 if inclusive else 1)
            removed = blob["messages"][cut:]
            del blob["messages"][cut:]
            self._count(blob, -len(removed), -sum(tokens for _, tokens, _ in removed))
            return len(removed), bool(removed)

        result: int | None = self._edit(session_id, now, edit, default=None)
        return result

    @override
    def _clear(self, op: ClearSession) -> bool:
        session_id, now, preserve_fetched = op.session_id, op.now, op.preserve_fetched

        def edit(blob: Blob) -> tuple[bool, bool]:
            blob["messages"] = []
            blob["header"]["metadata"].update(message_count=0, token_count=0)
            if not preserve_fetched:
                blob["fetched"], blob["fps"] = [], []
            return True, True

        return bool(self._edit(session_id, now, edit, default=False))

    @override
    def _delete(self, op: DeleteSession) -> bool:
        session_id = op.session_id
        gone: list[tuple[str, str]] = []
        with self.backend.lock:
            found = self._live(session_id, gone) is not None
            self.backend.drop(session_id)
        self._report(gone)
        return found

    @override
    def _gc(self, op: CollectGarbage) -> int:
        gone: list[tuple[str, str]] = []
        with self.backend.lock:
            for session_id, expires in list(self.backend.expires.items()):
                if expires <= time.monotonic():
                    self.backend.drop(session_id)
                    gone.append(("session_expired", session_id))
        self._report(gone)
        return len(gone)

    @override
    def close(self) -> None:
        """Nothing to release (the backend belongs to whoever made it); refuse from now on."""
        self._closed = True


# ---------------------------------------------------------------------- the suite


class TestBlobStore(StoreContract):
    """Every test of the contract: TTL, LRU and several store objects on one backend."""

    @pytest.fixture
    def store_factory(self) -> Callable[..., BaseStore]:
        backend = Backend()  # one per test, shared by the stores the test builds

        def build(
            *, ttl_seconds: float | None = None, max_sessions: int | None = None
        ) -> BaseStore:
            return BlobStore(backend, ttl_seconds=ttl_seconds, max_sessions=max_sessions)

        return build


class TestBlobStoreWithoutOptionalCapabilities(StoreContract):
    """The same store declared without TTL, LRU or a shared backend: the rest still runs."""

    supports_ttl = False
    supports_max_sessions = False
    supports_shared_backend = False

    @pytest.fixture
    def store_factory(self) -> Callable[..., BaseStore]:
        def build(
            *, ttl_seconds: float | None = None, max_sessions: int | None = None
        ) -> BaseStore:
            if ttl_seconds is not None or max_sessions is not None:
                asked = f"{ttl_seconds=}, {max_sessions=}"
                pytest.fail(f"asked for a capability the class declares absent: {asked}")
            return BlobStore(Backend())  # each object its own backend

        return build


def test_only_the_tests_of_missing_capabilities_are_left_out() -> None:
    excluded = set(TestBlobStoreWithoutOptionalCapabilities.excluded_tests)
    assert TestBlobStore.excluded_tests == ()
    assert excluded == {
        "test_ttl_expiry_and_sliding_refresh",
        "test_each_expiry_is_reported_once",
        "test_deleting_an_expired_session_reports_its_expiry",
        "test_a_refused_or_empty_write_is_no_access",
        "test_max_sessions_must_be_a_whole_number",
        "test_recall_segments_are_no_lru_access",
        "test_saving_or_reading_recall_segments_does_not_refresh_the_ttl",
        "test_list_page_skips_expired_sessions",
        "test_paging_skips_expired_sessions",
        "test_lru_eviction",
        "test_appending_only_known_ids_is_no_access",
        "test_every_lifecycle_hook_hears_each_eviction",
        "test_each_manager_on_a_store_hears_its_evictions",
        "test_a_manager_dropped_from_a_shared_store_is_freed",
        "test_managers_sharing_an_emitter_hear_each_event_once",
        "test_write_after_another_store_object_deleted_the_session",
        "test_lru_is_shared_between_store_objects",
        "test_recall_segments_expire_with_the_session",
        "test_recall_segments_go_with_an_evicted_session",
    }
    for name in excluded:
        assert getattr(TestBlobStoreWithoutOptionalCapabilities, name) is None
        assert callable(getattr(TestBlobStore, name))

    class BackAgain(TestBlobStoreWithoutOptionalCapabilities):
        supports_ttl = True

    assert callable(BackAgain.test_ttl_expiry_and_sliding_refresh)
    assert "test_ttl_expiry_and_sliding_refresh" not in BackAgain.excluded_tests


# ---------------------------------------------------------------------- as a third party runs it

ROOT = Path(__file__).resolve().parents[2]
_EXAMPLE = re.compile(
    r"```python\n(?P<code>[^`]*?from ctx_memory\.testing import StoreContract.*?)```", re.S
)


def test_the_readme_example_runs_the_suite_outside_this_project(tmp_path: Path) -> None:
    """The README's example, as its own project: the whole suite runs and passes, none skipped."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]  # should it move
    found = next(
        filter(None, (_EXAMPLE.search(p.read_text(encoding="utf-8")) for p in pages)), None
    )
    assert found, "README.md shows how to run the contract suite on your store"
    (tmp_path / "test_my_store.py").write_text(found["code"], encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # none of our settings
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers", "-rs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    passed = re.fullmatch(r"(\d+) passed.* in [\d.]+s", summary)
    assert passed, summary  # nothing failed, skipped or errored
    assert int(passed[1]) >= 120


def test_pytest_is_needed_by_the_suite_only(tmp_path: Path) -> None:
    """``import ctx_memory`` needs no pytest; ``ctx_memory.testing`` names the extra."""
    for module in sorted((ROOT / "ctx_memory").rglob("*.py")):
        if "testing" not in module.relative_to(ROOT / "ctx_memory").parts:
            assert not re.search(r"^\s*(import|from) pytest\b", module.read_text(), re.M), module
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import ctx_memory, ctx_memory.stores.base\n"
        "try:\n    import ctx_memory.testing\n"
        "except ImportError as e:\n    print(e)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert run.stdout.startswith("ctx_memory.testing needs the 'testing' extra (pytest>=8)")
    assert 'pip install "ctx-memory[testing]"' in run.stdout
