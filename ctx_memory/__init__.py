"""ctx_memory: one coherent, token-budgeted context per LLM session.

The public API lives here; submodules hold the implementation.

The adapters that need an optional extra are not imported eagerly, so ``import ctx_memory``
works without them: ``ContextMiddleware`` (extra ``agents``) and ``ContextMemory`` (extra
``classic``) live in :mod:`ctx_memory.middleware` and :mod:`ctx_memory.classic`, and
``ctx_memory.ContextMiddleware`` / ``ctx_memory.ContextMemory`` load them on first access
(an ``ImportError`` names the extra to install). They are left out of ``__all__`` so that
``from ctx_memory import *`` never needs an extra.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ctx_memory.chat import ContextualChat
from ctx_memory.config import Settings, load_settings
from ctx_memory.display import (
    SessionView,
    render_assembly_html,
    render_session_html,
    show_session,
)
from ctx_memory.errors import (
    BudgetExceededError,
    ConfigurationError,
    CtxMemoryError,
    DocumentImportError,
    InvalidMessageError,
    InvalidRoleError,
    InvalidSessionIdError,
    InvalidTTLError,
    MessageNotFoundError,
    NotSerializableError,
    RequestBodyNotReadError,
    SessionNotFoundError,
    SharedStateTooLargeError,
    StoreError,
    StoreUnavailableError,
    StoreVersionError,
    TokenizerError,
    UntokenizableTextError,
    ValidationError,
)
from ctx_memory.events import Event, EventEmitter, EventType
from ctx_memory.history import ContextChatMessageHistory
from ctx_memory.manager import ContextManager, get_context_manager, reset_context_manager
from ctx_memory.prompt import AssembledPrompt, AssemblyReport, ContextPromptAssembler
from ctx_memory.retrievers import FetchedContextRetriever, SourceRecordingRetriever
from ctx_memory.schema import (
    ContextMode,
    FetchedItem,
    MessageRecord,
    SessionDocument,
    SessionMetadata,
)
from ctx_memory.stores import BaseStore, InMemoryStore, create_store
from ctx_memory.tokens import TokenCounter
from ctx_memory.web import ContextIntegration, get_context_integration

try:
    __version__ = version("ctx-memory")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AssembledPrompt",
    "AssemblyReport",
    "BaseStore",
    "BudgetExceededError",
    "ConfigurationError",
    "ContextChatMessageHistory",
    "ContextIntegration",
    "ContextManager",
    "ContextMode",
    "ContextPromptAssembler",
    "ContextualChat",
    "CtxMemoryError",
    "DocumentImportError",
    "Event",
    "EventEmitter",
    "EventType",
    "FetchedContextRetriever",
    "FetchedItem",
    "InMemoryStore",
    "InvalidMessageError",
    "InvalidRoleError",
    "InvalidSessionIdError",
    "InvalidTTLError",
    "MessageNotFoundError",
    "MessageRecord",
    "NotSerializableError",
    "RequestBodyNotReadError",
    "SessionDocument",
    "SessionMetadata",
    "SessionNotFoundError",
    "SessionView",
    "Settings",
    "SharedStateTooLargeError",
    "SourceRecordingRetriever",
    "StoreError",
    "StoreUnavailableError",
    "StoreVersionError",
    "TokenCounter",
    "TokenizerError",
    "UntokenizableTextError",
    "ValidationError",
    "__version__",
    "create_store",
    "get_context_integration",
    "get_context_manager",
    "load_settings",
    "render_assembly_html",
    "render_session_html",
    "reset_context_manager",
    "show_session",
]

_OPTIONAL = {"ContextMemory": "ctx_memory.classic", "ContextMiddleware": "ctx_memory.middleware"}


def __getattr__(name: str) -> Any:
    """Load the optional-extra adapters on first access (see the module docstring)."""
    module = _OPTIONAL.get(name)
    if module is None:
        msg = f"module 'ctx_memory' has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(import_module(module), name)
