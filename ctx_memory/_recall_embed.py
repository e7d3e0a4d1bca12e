"""The embedding half of :class:`ctx_memory.recall.Recall` (hybrid recall), as a mixin.

Apart from :mod:`ctx_memory.recall` to keep each module to one idea; documented there
(``Recall(embeddings=...)``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ctx_memory._recall_index import unit_vector

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence

    from langchain_core.embeddings import Embeddings

    from ctx_memory._recall_index import RecallIndex, VectorKey

__all__ = ["RecallEmbedding"]

logger = logging.getLogger("ctx_memory.recall")


class RecallEmbedding:
    """Embedding the messages of :class:`~ctx_memory.recall.RecallIndex` es, and queries."""

    embeddings: Embeddings | None
    embed_batch_size: int
    _lock: threading.Lock

    def _take(self, index: RecallIndex) -> list[list[tuple[int, str, VectorKey | None]]]:
        """Claim the index's messages to embed, in batches (another caller gets none)."""
        with self._lock:
            work = sorted((p, text, key) for p, (text, key) in index.unembedded.items())
            index.unembedded.clear()
        size = self.embed_batch_size
        return [work[i : i + size] for i in range(0, len(work), size)]

    def _store(
        self,
        index: RecallIndex,
        batch: Sequence[tuple[int, str, VectorKey | None]],
        vectors: Sequence[Sequence[float]],
    ) -> None:
        """Keep a batch's vectors, all or none.

        A vector that is empty, zero or not finite (a bag-of-words model given a text of
        words it does not know) is no vector: that message is found by BM25 alone, and is
        not sent again; the others keep theirs.

        Raises:
            ValueError: Not one vector per text, or vectors of different lengths.
        """
        if len(vectors) != len(batch):
            msg = f"embed_documents returned {len(vectors)} vectors for {len(batch)} texts"
            raise ValueError(msg)
        with self._lock:
            units = [unit_vector(v) for v in vectors]
            lengths = {len(u) for u in units if u is not None}
            if index.dimensions is not None:
                lengths.add(index.dimensions)
            if len(lengths) > 1:
                msg = "embed_documents returned vectors of different lengths"
                raise ValueError(msg)
            for (position, _, key), unit in zip(batch, units, strict=True):
                if unit is not None:
                    index._put(position, unit, key)  # checked just above
        if unusable := sum(u is None for u in units):
            logger.info("embeddings: %d empty or zero vectors: BM25 alone finds those", unusable)

    def _failed(
        self,
        index: RecallIndex,
        batches: Sequence[Sequence[tuple[int, str, VectorKey | None]]],
        session_id: str,
        error: Exception,
        notes: list[str] | None,
    ) -> None:
        """Put back what was not embedded (retried at the next update); warn; note."""
        left = [item for batch in batches for item in batch]
        with self._lock:
            for position, text, key in left:
                index.unembedded[position] = (text, key)
        reason = (
            f"embeddings: {len(left)} messages of session {session_id!r} not embedded "
            f"({type(error).__name__}: {error}); they are found by BM25 alone until a "
            "later update embeds them"
        )
        logger.warning("%s", reason)
        if notes is not None:
            notes.append(reason)

    def embed_pending(
        self, index: RecallIndex, session_id: str = "", *, notes: list[str] | None = None
    ) -> None:
        """Embed the index's messages that have no vector yet (``embed_documents``).

        Done by :meth:`index`. A failing call is logged as a warning (and appended to
        ``notes``); the messages it was for are retried at the next update.
        """
        if self.embeddings is None or not index.unembedded:
            return
        batches = self._take(index)
        for i, batch in enumerate(batches):
            try:
                vectors = self.embeddings.embed_documents([text for _, text, _ in batch])
                self._store(index, batch, vectors)
            except Exception as e:  # noqa: BLE001 - recall must not break the assembly
                self._failed(index, batches[i:], session_id, e, notes)
                return

    async def aembed_pending(
        self, index: RecallIndex, session_id: str = "", *, notes: list[str] | None = None
    ) -> None:
        """Async :meth:`embed_pending` (``aembed_documents``)."""
        if self.embeddings is None or not index.unembedded:
            return
        batches = self._take(index)
        for i, batch in enumerate(batches):
            try:
                vectors = await self.embeddings.aembed_documents([text for _, text, _ in batch])
                self._store(index, batch, vectors)
            except Exception as e:  # noqa: BLE001 - recall must not break the assembly
                self._failed(index, batches[i:], session_id, e, notes)
                return

    def _query_failed(self, error: Exception, notes: list[str] | None) -> None:
        reason = (
            f"embeddings: the query was not embedded ({type(error).__name__}: {error}); "
            "recall was lexical (BM25) for this request"
        )
        logger.warning("%s", reason)
        if notes is not None:
            notes.append(reason)

    def _for_query(self, query: str, index: RecallIndex | None) -> Embeddings | None:
        """The embeddings to embed ``query`` with for ``index``, if there is a point."""
        if index is None or not index.vector_count or not query.strip():
            return None
        return self.embeddings

    def embed_query(
        self, query: str, index: RecallIndex | None, *, notes: list[str] | None = None
    ) -> tuple[float, ...] | None:
        """The query's vector for a hybrid search of ``index`` (``embed_query``), or ``None``.

        ``None`` (a lexical search) without embeddings, when the index holds no vector,
        for a blank query, or when the call fails or gives an unusable vector (logged as
        a warning and appended to ``notes``).
        """
        embeddings = self._for_query(query, index)
        if embeddings is None or index is None:
            return None
        try:
            return index.query_vector(embeddings.embed_query(query))
        except Exception as e:  # noqa: BLE001 - recall must not break the assembly
            self._query_failed(e, notes)
            return None

    async def aembed_query(
        self, query: str, index: RecallIndex | None, *, notes: list[str] | None = None
    ) -> tuple[float, ...] | None:
        """Async :meth:`embed_query` (``aembed_query``)."""
        embeddings = self._for_query(query, index)
        if embeddings is None or index is None:
            return None
        try:
            return index.query_vector(await embeddings.aembed_query(query))
        except Exception as e:  # noqa: BLE001 - recall must not break the assembly
            self._query_failed(e, notes)
            return None
