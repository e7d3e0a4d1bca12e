"""What ctx_memory finishes when the program exits, in a fixed order.

Background work first (a summary being written after a reply), then the events that work
and every write before it emitted (sent to other processes). ``atexit`` runs its handlers
last registered first, and the modules registering them are imported in no set order, so
they register here instead and :func:`_run` calls them in their phase's order.
"""

from __future__ import annotations

import atexit
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["at_exit"]

_PHASES: dict[str, list[Callable[[], None]]] = {"work": [], "events": []}


def at_exit(callback: Callable[[], None], phase: Literal["work", "events"]) -> None:
    """Call ``callback`` when the program exits: every ``work`` one before any ``events``."""
    _PHASES[phase].append(callback)


@atexit.register
def _run() -> None:
    for phase in ("work", "events"):
        for callback in _PHASES[phase]:
            callback()
