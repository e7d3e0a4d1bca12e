"""``get_context_manager(**overrides)`` refuses what the process-wide manager is not.

Issue 9, item 3: a later call asking for ``store="sqlite"`` used to get the memory manager
built before, silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from ctx_memory import (
    ConfigurationError,
    EventEmitter,
    InMemoryStore,
    get_context_manager,
    load_settings,
    reset_context_manager,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def _no_manager() -> Iterator[None]:
    reset_context_manager()
    yield
    reset_context_manager()


def conflict(**overrides: object) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        get_context_manager(**overrides)
    return info.value


def test_no_arguments_and_identical_ones_return_the_same_manager() -> None:
    cm = get_context_manager(max_sessions=5)
    assert get_context_manager() is cm
    assert get_context_manager(max_sessions=5) is cm
    assert get_context_manager(store="memory", max_sessions=5) is cm  # what it already has
    assert get_context_manager(max_sessions=None) is cm  # None means "not given"
    assert get_context_manager(settings=cm.settings) is cm
    assert get_context_manager(store=cm.store, events=cm.events) is cm


def test_a_default_it_already_has_is_no_conflict() -> None:
    cm = get_context_manager()  # memory: 100 sessions, one hour
    assert get_context_manager(max_sessions=100, session_expiration_seconds=3600) is cm


def test_another_store_is_refused_until_reset(tmp_path: Path) -> None:
    cm = get_context_manager()
    error = conflict(store="sqlite", sqlite_path=str(tmp_path / "s.db"))
    assert error.key == "STORE"
    message = str(error)
    assert "STORE='memory' (asked 'sqlite')" in message
    assert "reset_context_manager()" in message
    assert get_context_manager() is cm  # still the one built first, still open
    cm.add_user_message("s", "hello")

    reset_context_manager()
    sqlite = get_context_manager(store="sqlite", sqlite_path=str(tmp_path / "s.db"))
    assert sqlite is not cm
    assert sqlite.store.name == "sqlite"
    assert get_context_manager(store="sqlite") is sqlite


def test_every_differing_setting_is_named_and_passwords_are_hidden() -> None:
    get_context_manager(redis_url="redis://:first-secret@h/0", token_counter="approximate")
    message = str(conflict(redis_url="redis://:second-secret@h/0", token_counter="tiktoken"))
    assert "REDIS_URL='redis://:***@h/0' (asked 'redis://:***@h/0')" in message
    assert "TOKEN_COUNTER='approximate' (asked 'tiktoken')" in message
    assert "secret" not in message


def test_objects_it_was_not_built_with_are_refused() -> None:
    cm = get_context_manager()
    store_error = conflict(store=InMemoryStore())
    assert store_error.key == "STORE"
    assert "store=another InMemoryStore object" in str(store_error)
    assert conflict(events=EventEmitter()).key == "EVENTS"
    assert conflict(settings=load_settings(max_sessions=3)).key == "MAX_SESSIONS"
    assert get_context_manager() is cm


def test_bad_arguments_on_a_later_call_are_still_errors() -> None:
    get_context_manager()
    assert "did you mean max_sessions?" in str(conflict(max_session=3))
    assert conflict(max_sessions=True).key == "MAX_SESSIONS"


def test_a_failed_first_build_leaves_no_manager() -> None:
    assert conflict(max_sessions=-1).key == "MAX_SESSIONS"
    assert get_context_manager(store="memory").store.name == "memory"
