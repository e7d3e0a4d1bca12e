"""ctx_memory: one coherent, token-budgeted context per LLM session.

The public API lives here; submodules hold the implementation.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

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
    InvalidRoleError,
    InvalidSessionIdError,
    InvalidTTLError,
    NotSerializableError,
    SessionNotFoundError,
    StoreError,
    StoreUnavailableError,
    TokenizerError,
    ValidationError,
)
from ctx_memory.events import Event, EventEmitter, EventType
from ctx_memory.integration import ContextIntegration, get_context_integration
from ctx_memory.manager import ContextManager, get_context_manager, reset_context_manager
from ctx_memory.schema import (
    ContextMode,
    FetchedItem,
    MessageRecord,
    SessionDocument,
    SessionMetadata,
)
from ctx_memory.stores import BaseStore, InMemoryStore, create_store
from ctx_memory.tokens import TokenCounter

try:
    __version__ = version("ctx-memory")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
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
    "SessionView",
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
    "render_assembly_html",
    "render_session_html",
    "reset_context_manager",
    "show_session",
]
