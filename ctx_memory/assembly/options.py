"""The assembler's options, checked once when it is made (a clear error for each)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctx_memory.errors import ValidationError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["check_options"]

_HINTS = frozenset({"anthropic", "openai"})


def _fail(msg: str) -> None:
    raise ValidationError(msg)


def check_options(
    *,
    max_tokens: int,
    reserve_tokens: int,
    sources_share: float,
    layout: str,
    recall_share: float,
    recall_max_tokens: int | None,
    trim_block: float,
    cache_hints: Sequence[str],
    pinned_source_types: Sequence[str],
) -> None:
    """Raise :class:`~ctx_memory.errors.ValidationError` naming the first bad option."""
    if max_tokens <= 0 or reserve_tokens < 0 or reserve_tokens >= max_tokens:
        _fail(
            "need max_tokens > reserve_tokens >= 0, got "
            f"max_tokens={max_tokens}, reserve_tokens={reserve_tokens}"
        )
    if not 0.0 <= sources_share <= 1.0:
        _fail(f"sources_share must be between 0 and 1, got {sources_share}")
    if layout not in ("classic", "stable"):
        _fail(f"layout must be 'classic' or 'stable', got {layout!r}")
    if not 0.0 <= recall_share < 1.0:
        _fail(f"recall_share must be at least 0 and below 1, got {recall_share}")
    if recall_max_tokens is not None and (
        isinstance(recall_max_tokens, bool)
        or not isinstance(recall_max_tokens, int)
        or recall_max_tokens < 0
    ):
        _fail(f"recall_max_tokens must be an int >= 0 or None, got {recall_max_tokens!r}")
    if not 0.0 <= trim_block < 1.0:
        _fail(f"trim_block must be at least 0 and below 1, got {trim_block}")
    if isinstance(cache_hints, str) or set(cache_hints) - _HINTS:
        _fail(f"cache_hints takes a list of 'anthropic' and 'openai', got {cache_hints!r}")
    if isinstance(pinned_source_types, str):
        _fail(f"pinned_source_types takes a list of source types, got {pinned_source_types!r}")
