"""Searching a session's history for people: the recall index behind a plain function.

:func:`search_history` (and :func:`asearch_history`) answer "where in this session was
X said?" with the stored messages themselves, best first: what the ``ctx-memory search``
command, the service's ``GET /v1/sessions/{id}/search`` and the inspector's search box
show. Re-exported by :mod:`ctx_memory.recall`, which documents the index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ctx_memory.errors import ValidationError

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from ctx_memory._recall_index import RecallIndex
    from ctx_memory.manager import ContextManager

__all__ = ["MAX_SEARCH_HITS", "HistoryHit", "asearch_history", "search_history"]

MAX_SEARCH_HITS = 100
"""The most hits one search returns (``k`` above it is refused)."""


@dataclass(frozen=True)
class HistoryHit:
    """One stored message a search found.

    Attributes:
        position: Its place in the history (0 is the first message).
        score: Its relevance: BM25, or the fused rank score of a hybrid search.
        terms: The query's recall terms it contains (folded and stemmed, as indexed).
        message: The stored message record (``id``, ``role``, ``content``, ...).
    """

    position: int
    score: float
    terms: tuple[str, ...]
    message: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The hit as a JSON-native dict."""
        return {
            "position": self.position,
            "score": self.score,
            "terms": list(self.terms),
            "message": self.message,
        }


def _check(query: object, k: object) -> str:
    if not isinstance(query, str):
        msg = f"query must be a str, got {type(query).__name__}"
        raise ValidationError(msg)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_SEARCH_HITS:
        msg = f"k must be an int from 1 to {MAX_SEARCH_HITS}, got {k!r}"
        raise ValidationError(msg)
    return query


_SEARCHES = 3
"""Searches at most, each after a hit's text was found edited since it was indexed."""


def _hits(
    index: RecallIndex,
    found: list[tuple[int, float, tuple[str, ...]]],
    records: list[list[dict[str, Any]]],
) -> list[HistoryHit]:
    """The hits whose read-back message is the one ranked.

    Gone: the history was shortened since it was indexed. Edited: another writer changed
    it (again) while the search ran; its text may not hold the terms it was ranked for.
    """
    return [
        HistoryHit(position, score, terms, read[0])
        for (position, score, terms), read in zip(found, records, strict=True)
        if read and not index.edited([(position, read)])
    ]


def _edited(
    index: RecallIndex,
    found: list[tuple[int, float, tuple[str, ...]]],
    records: list[list[dict[str, Any]]],
) -> bool:
    return index.edited([(p, r) for (p, _, _), r in zip(found, records, strict=True)])


def search_history(
    manager: ContextManager,
    session_id: str,
    query: str,
    *,
    k: int = 10,
    embeddings: Embeddings | None = None,
) -> list[HistoryHit]:
    """The ``k`` stored messages of ``session_id`` that best match ``query``, best first.

    The whole history is searched, however long, with the index the assembler's recall
    uses (:func:`~ctx_memory.recall.recall_for`: BM25 over folded, stemmed words; with
    ``embeddings``, hybrid with cosine similarity). Only messages sharing a term with
    the query are found (or, hybrid, close in meaning). A session that does not exist
    has no hits.

    Raises:
        ValidationError: ``query`` is not a str, or ``k`` not an int from 1 to
            :data:`MAX_SEARCH_HITS`.

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager
            from ctx_memory.recall import search_history

            manager = ContextManager()
            manager.add_user_message("s1", "My passport number is X1234567")
            manager.add_assistant_message("s1", "Noted.")
            manager.add_user_message("s1", "Book the train to Lyon")
            [hit] = search_history(manager, "s1", "passport", k=3)
            assert hit.position == 0 and hit.terms == ("passport",)
            assert hit.message["content"] == "My passport number is X1234567"
    """
    from ctx_memory.recall import recall_for  # noqa: PLC0415 - recall imports this module

    query = _check(query, k)
    recall = recall_for(manager, embeddings)
    for _ in range(_SEARCHES):  # a hit edited elsewhere: rebuilt, searched again
        header = manager.get_header(session_id)
        if header is None:
            return []
        index = recall.index(manager, session_id, header)
        found = index.ranked(query, k, query_vector=recall.embed_query(query, index))
        reads = manager.get_message_spans(session_id, [(p, p) for p, _, _ in found])
        if not _edited(index, found, reads):
            break
        recall.forget(session_id, keep_vectors=True)
    return _hits(index, found, reads)


async def asearch_history(
    manager: ContextManager,
    session_id: str,
    query: str,
    *,
    k: int = 10,
    embeddings: Embeddings | None = None,
) -> list[HistoryHit]:
    """Async :func:`search_history`."""
    from ctx_memory.recall import recall_for  # noqa: PLC0415 - recall imports this module

    query = _check(query, k)
    recall = recall_for(manager, embeddings)
    for _ in range(_SEARCHES):  # a hit edited elsewhere: rebuilt, searched again
        header = await manager.aget_header(session_id)
        if header is None:
            return []
        index = await recall.aindex(manager, session_id, header)
        found = index.ranked(query, k, query_vector=await recall.aembed_query(query, index))
        reads = await manager.aget_message_spans(session_id, [(p, p) for p, _, _ in found])
        if not _edited(index, found, reads):
            break
        recall.forget(session_id, keep_vectors=True)
    return _hits(index, found, reads)
