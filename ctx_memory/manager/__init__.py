"""The ContextManager: both seeds' API on top of any store.

:class:`ContextManager` puts together :mod:`~ctx_memory.manager._core` (settings, store,
events, executing typed operations), :mod:`~ctx_memory.manager._sessions` (sessions as a
whole) and :mod:`~ctx_memory.manager._history` (history and fetched context). Each public
method plans one typed store operation (pure), executes it, and finishes (pure); each async
twin is its sync twin with ``await``.
"""

from __future__ import annotations

import threading
from typing import Any

from ctx_memory.config import setting_differences, with_overrides
from ctx_memory.errors import ConfigurationError
from ctx_memory.manager._history import HistoryMethods

__all__ = ["ContextManager", "get_context_manager", "reset_context_manager"]


class ContextManager(HistoryMethods):
    """Per-session context for LLM apps: history, fetched sources, metadata, shared state.

    Both seeds' APIs on one object. Settings come from Dynaconf (``settings.toml``,
    ``.secrets.toml``, ``CTX_MEMORY_*``); keyword arguments override them; ``store``
    overrides the backend the settings would pick.

    Args:
        settings: Validated settings (default: :func:`~ctx_memory.config.load_settings`).
        store: A store to use instead of the one settings select, or a backend name
            (``"memory"``, ``"sqlite"``, ``"redis"``) overriding the ``STORE`` setting.
        counter: A token counter to use instead of the one settings select.
        events: An event emitter to share (default: a new one).
        **overrides: Setting values by name, e.g. ``max_sessions=500``.

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager, ContextMode

            with ContextManager() as cm:
                cm.update_metadata("s1", mode=ContextMode.THINKING, current_url="https://a.example")
                cm.add_user_message("s1", "How do I book a flight?")
                cm.add_assistant_message("s1", "Pick a date first.", model="gpt-4o-mini")
                messages = cm.get_formatted_messages_for_api("s1")
                assert [m["role"] for m in messages] == ["user", "assistant"]
                assert cm.get_memory_stats("s1")["message_count"] == 2
    """


_default_manager: ContextManager | None = None
_default_lock = threading.Lock()


def get_context_manager(**overrides: Any) -> ContextManager:
    """The process-wide ContextManager, built from settings on first call (seed 001).

    The first call builds it with ``overrides`` (the keyword arguments of
    :class:`ContextManager`). A later call returns the same manager when it passes nothing,
    or only what that manager already has (``store="memory"`` on a memory manager, the
    same store object); one asking for anything else is refused rather than silently
    given a manager that ignores it.

    Raises:
        ConfigurationError: ``overrides`` differ from the manager already built (the
            message says what differs): call :func:`reset_context_manager` first to build
            another. Also for invalid settings, as ``ContextManager(...)`` raises.
    """
    global _default_manager  # noqa: PLW0603 - the seed's process-wide singleton
    with _default_lock:
        if _default_manager is None:
            _default_manager = ContextManager(**overrides)
            return _default_manager
        manager = _default_manager
    asked = {key: value for key, value in overrides.items() if value is not None}
    differences: list[tuple[str, str]] = []
    for name, own in (
        ("store", manager.store),
        ("counter", manager._token_counter),
        ("events", manager.events),
    ):
        part = asked.get(name)
        if part is not None and not isinstance(part, str):
            del asked[name]
            if part is not own:
                differences.append((name.upper(), f"{name}=another {type(part).__name__} object"))
    base = asked.pop("settings", None) or manager.settings
    if asked or base is not manager.settings:
        differences += setting_differences(manager.settings, with_overrides(base, **asked))
    if differences:
        listed = "; ".join(text for _, text in differences)
        msg = (
            f"get_context_manager() already built the process-wide manager, which differs"
            f" from this call's arguments: {listed}. Call reset_context_manager() first to"
            " build another"
        )
        raise ConfigurationError(differences[0][0], msg)
    return manager


def reset_context_manager() -> None:
    """Close and forget the process-wide manager (tests, or after changing settings)."""
    global _default_manager  # noqa: PLW0603
    with _default_lock:
        if _default_manager is not None:
            _default_manager.close()
        _default_manager = None
