from __future__ import annotations

import ctx_memory

# Pinned: a change to the public surface must change this list on purpose.
EXPECTED_CORE = {
    "BaseStore",
    "BudgetExceededError",
    "ConfigurationError",
    "ContextIntegration",
    "ContextManager",
    "ContextMode",
    "CtxMemoryError",
    "DocumentImportError",
    "Event",
    "EventEmitter",
    "EventType",
    "FetchedItem",
    "InMemoryStore",
    "InvalidRoleError",
    "InvalidSessionIdError",
    "InvalidTTLError",
    "MessageRecord",
    "NotSerializableError",
    "SessionDocument",
    "SessionMetadata",
    "SessionNotFoundError",
    "Settings",
    "StoreError",
    "StoreUnavailableError",
    "TokenCounter",
    "TokenizerError",
    "ValidationError",
    "__version__",
    "create_store",
    "get_context_integration",
    "get_context_manager",
    "load_settings",
    "reset_context_manager",
}
EXPECTED_ADAPTERS = {
    "AssembledPrompt",
    "AssemblyReport",
    "ContextChatMessageHistory",
    "ContextPromptAssembler",
    "ContextualChat",
    "FetchedContextRetriever",
    "SourceRecordingRetriever",
}
EXPECTED_SURFACES = {"SessionView", "render_assembly_html", "render_session_html", "show_session"}


def test_all_is_sorted_and_complete():
    names = list(ctx_memory.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert set(names) >= EXPECTED_CORE
    for name in names:
        assert hasattr(ctx_memory, name), name
        assert not name.startswith("_") or name == "__version__"


def test_py_typed_ships():
    from importlib.resources import files

    assert files("ctx_memory").joinpath("py.typed").is_file()


def test_optional_extras_load_lazily():
    # Present in the namespace on demand, never in __all__ (star-imports need no extra).
    assert ctx_memory.ContextMiddleware.__name__ == "ContextMiddleware"
    assert ctx_memory.ContextMemory.__name__ == "ContextMemory"
    assert "ContextMiddleware" not in ctx_memory.__all__
