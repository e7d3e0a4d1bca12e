"""Deprecated alias of :mod:`ctx_memory.web`, where ``ContextIntegration`` now lives.

Importing this module emits a ``DeprecationWarning``; import from ``ctx_memory.web`` (or
``ctx_memory``) instead.
"""

from __future__ import annotations

import warnings

from ctx_memory.web import (
    MODE_HEADERS,
    MODE_KEYS,
    SESSION_HEADERS,
    SESSION_KEYS,
    ContextIntegration,
    get_context_integration,
    reset_context_integration,
)

__all__ = [
    "MODE_HEADERS",
    "MODE_KEYS",
    "SESSION_HEADERS",
    "SESSION_KEYS",
    "ContextIntegration",
    "get_context_integration",
    "reset_context_integration",
]

warnings.warn(
    "ctx_memory.integration is deprecated: import ContextIntegration, "
    "get_context_integration and reset_context_integration from ctx_memory.web "
    "(or from ctx_memory)",
    DeprecationWarning,
    stacklevel=2,
)
