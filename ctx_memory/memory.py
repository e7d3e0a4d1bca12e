"""Deprecated alias of :mod:`ctx_memory.classic`, where ``ContextMemory`` now lives.

Importing this module emits a ``DeprecationWarning``; import ``ContextMemory`` from
``ctx_memory.classic`` (or ``ctx_memory``) instead. Not to be confused with
``ctx_memory.stores.memory``, the in-memory store.
"""

from __future__ import annotations

import warnings

from ctx_memory.classic import ContextMemory

__all__ = ["ContextMemory"]

warnings.warn(
    "ctx_memory.memory is deprecated: import ContextMemory from ctx_memory.classic "
    "(or from ctx_memory)",
    DeprecationWarning,
    stacklevel=2,
)
