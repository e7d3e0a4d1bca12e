"""The pure half of :mod:`ctx_memory.recall`: terms, and the BM25 (+ vector) index.

:class:`RecallIndex` takes records in history order and answers searches with no I/O;
:func:`recall_terms` and :func:`record_text` say what of a record is indexed. Everything
here is re-exported by :mod:`ctx_memory.recall`, which documents it.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Any, NamedTuple

from ctx_memory.ranking import _STOPWORDS, BM25_B, BM25_K1, tokenize

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from ctx_memory.ranking import Tokenizer

__all__ = [
    "CONTEXT_WEIGHT",
    "ECHO_TOOLS",
    "RRF_DEPTH",
    "RRF_K",
    "RecallHit",
    "RecallIndex",
    "VectorKey",
    "indexed_text",
    "recall_terms",
    "record_text",
    "text_key",
    "unit_vector",
]

CONTEXT_WEIGHT = 0.2
"""How much a message's neighbours' BM25 adds to its own in the assembler's recall and the
``recall`` tool, lexical or hybrid (:meth:`RecallIndex.search`'s ``context``): a fifth of
each. Measured by ``ctx-memory eval`` on LoCoMo: gold-turn coverage at 4,000 tokens 78.3 %
without, 82.9 % with; 0.1 to 0.5 all land within a point of that."""

RRF_K = 60
"""Reciprocal rank fusion's constant: a message at rank ``r`` of a ranking adds
``1 / (RRF_K + r)`` to its fused score (60, as in Cormack, Clarke and Büttcher, 2009)."""

RRF_DEPTH = 100
"""Each ranking (BM25, cosine) contributes its best ``max(k, RRF_DEPTH)`` messages."""

VectorKey = tuple[str, int]  # (message id, text_key of the embedded text): carries vectors over


def text_key(text: str) -> int:
    """A stable 64-bit digest of ``text`` (BLAKE2b): the same in every process and release.

    With the message id, it says which text a vector was computed from (:data:`VectorKey`),
    in the process and in saved segments.
    """
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big"
    )


_RECALL_STOPWORDS = frozenset(
    (
        *("did", "has", "have", "had", "been", "being", "would", "could", "should"),
        *("about", "after", "before", "like", "just", "also", "get", "got", "very"),
        *("really", "am", "were", "im", "ive", "youre", "thats"),
    )
)


_SORT_LIMIT = 4096
"""Up to this many scores, :func:`_largest` sorts (in C) rather than running ``heapq``."""


def _largest(scores: dict[int, float], n: int) -> list[tuple[float, int]]:
    """The ``n`` best ``(score, position)``, best first, the newer first among equal scores.

    ``heapq.nlargest`` loops in Python over every score; up to :data:`_SORT_LIMIT` scores,
    sorting them in C to find the ``n``-th and sorting what reaches it is 2 to 4 times
    faster, with the same result.
    """
    if len(scores) > _SORT_LIMIT:
        return heapq.nlargest(n, zip(scores.values(), scores.keys(), strict=True))
    if len(scores) > n:
        cut = sorted(scores.values())[-n]
        return sorted([(v, p) for p, v in scores.items() if v >= cut], reverse=True)[:n]
    return sorted(zip(scores.values(), scores.keys(), strict=True), reverse=True)


def _in_context(
    scores: dict[int, float], k: int, limit: int, weight: float
) -> list[tuple[float, int]]:
    """The ``k`` best ``(score, position)`` once each score gains ``weight`` times its neighbours'.

    Re-scores the ``max(2k, 64)`` best positions by BM25 and their neighbours below
    ``limit`` (a position with no score of its own counts 0).
    """
    get = scores.get
    pool: set[int] = set()
    for _, position in _largest(scores, max(2 * k, 64)):
        pool.add(position)
        if position:
            pool.add(position - 1)
        if position + 1 < limit:
            pool.add(position + 1)
    return heapq.nlargest(
        k,
        ((get(p, 0.0) + weight * (get(p - 1, 0.0) + get(p + 1, 0.0)), p) for p in pool),
    )


def _strip_suffix(word: str) -> str:
    """A light English suffix stripper: ``painted``, ``paints``, ``painting`` -> ``paint``.

    Only ASCII words longer than four letters; plurals, ``-ing``, ``-ed``, ``-ly``,
    ``-ation``/``-ion`` and a final ``e`` go, and a doubled final consonant is undoubled
    (``running`` -> ``run``). Deterministic, no dictionary; good enough to match a
    question's wording with a conversation's.
    """
    if len(word) <= 4 or not word.isascii() or not word.isalpha():
        return word
    if word.endswith("ies"):
        word = word[:-3] + "y"
    elif word.endswith("sses"):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for suffix in ("ation", "ing", "ion", "ed", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


_NOT_WORD = bytes(c if chr(c).isalnum() or chr(c) == "_" else 32 for c in range(128)) + bytes(
    [32] * 128
)
"""A ``bytes.translate`` table: ASCII characters outside ``\\w`` to spaces, so ``split()``
then finds ``\\w+``. On ASCII text, through bytes: ``bytes.translate`` with a 256-byte table
is 1.6 times faster than ``str.translate`` with a dict, and both beat the regex."""

_TERMS: dict[str, str] = {}  # word -> its term, "" for a stop word (words repeat)
_TERMS_LIMIT = 1 << 16


def _term(word: str) -> str:
    """``word``'s recall term, ``""`` for a stop word; memoised in :data:`_TERMS`."""
    term = "" if word in _STOPWORDS or word in _RECALL_STOPWORDS else _strip_suffix(word)
    if len(_TERMS) < _TERMS_LIMIT:
        _TERMS[word] = term
    return term


def recall_terms(text: str) -> list[str]:
    """The recall index's terms: the ranking tokenizer's, lightly stemmed.

    :func:`~ctx_memory.ranking.tokenize`, a few more stop words dropped, each word
    through a light English suffix stripper (``painted`` and ``paints`` are ``paint``).

    Example:
        .. code-block:: python

            from ctx_memory.recall import recall_terms

            assert recall_terms("When did Melanie paint a sunrise?") == [
                "melani", "paint", "sunris"
            ]
            assert recall_terms("I painted the sunrises") == ["paint", "sunris"]
    """
    if text.isascii():
        words = text.lower().encode("ascii").translate(_NOT_WORD).decode("ascii").split()
    else:
        words = tokenize(text)
    known = _TERMS.get
    terms = []
    for word in words:
        term = known(word)
        if term is None:
            term = _term(word)
        if term:
            terms.append(term)
    return terms


def record_text(record: Mapping[str, Any]) -> str:
    """The searchable text of a stored message: its text, tool names and tool arguments."""
    content = record.get("content")
    if isinstance(content, str):
        parts = [content]
    else:
        parts = [
            str(block.get("text") or "") if isinstance(block, dict) else str(block)
            for block in content or ()
        ]
    for call in record.get("tool_calls") or ():
        parts.append(str(call.get("name") or ""))
        parts.append(json.dumps(call.get("args") or {}, ensure_ascii=False, sort_keys=True))
    if record.get("name"):
        parts.append(str(record["name"]))
    return " ".join(part for part in parts if part)


ECHO_TOOLS = frozenset({"recall", "restore_tool_result"})
"""The default names of ctx_memory's own tools (``make_recall_tool``,
``make_restore_tool``): their results repeat stored messages, so they are not indexed
(nor the calls' arguments, the queries): recall would find its own earlier answers, each
nested in the next, and through them text since edited away."""


def indexed_text(record: Mapping[str, Any]) -> str:
    """What the recall index takes of a stored message.

    :func:`record_text`, but nothing of a result of :data:`ECHO_TOOLS` and nothing of
    calls to them.
    """
    calls = record.get("tool_calls") or ()
    if record.get("role") == "tool" and record.get("name") in ECHO_TOOLS:
        return ""
    if any(isinstance(c, dict) and c.get("name") in ECHO_TOOLS for c in calls):
        kept = [c for c in calls if not (isinstance(c, dict) and c.get("name") in ECHO_TOOLS)]
        return record_text({**record, "tool_calls": kept})
    return record_text(record)


def _contains(postings: Sequence[int], position: int) -> bool:
    at = bisect_left(postings, position)
    return at < len(postings) and postings[at] == position


def unit_vector(vector: Sequence[float]) -> tuple[float, ...] | None:
    """``vector`` scaled to length 1, as floats; ``None`` if empty, zero or not finite."""
    values = tuple(map(float, vector))
    norm = math.hypot(*values) if values else 0.0
    if not norm or not math.isfinite(norm):
        return None
    return tuple(v / norm for v in values)


class RecallHit(NamedTuple):
    """One message found by :meth:`RecallIndex.hybrid_search`.

    Attributes:
        position: Its position in the history.
        score: Its fused score: ``1 / (RRF_K + bm25_rank) + 1 / (RRF_K + vector_rank)``,
            a missing rank adding nothing.
        terms: The query terms it matched, in query order (empty for a vector-only hit).
        bm25: Its BM25 score (``0.0``: no term shared with the query).
        similarity: Cosine similarity of its vector and the query's (``None``: no vector).
        bm25_rank: Its rank (from 1) in the BM25 ranking, ``None`` when not in it.
        vector_rank: Its rank (from 1) in the cosine ranking, ``None`` when not in it.
    """

    position: int
    score: float
    terms: tuple[str, ...]
    bm25: float
    similarity: float | None
    bm25_rank: int | None
    vector_rank: int | None


class RecallIndex:
    """A BM25 index over a session's messages, added in history order.

    Each message is one document at its position in the history. Adding is
    ``O(terms of the message)``; :meth:`search` touches only the postings of the
    query's terms. Ties in score go to the newer message, so results are deterministic.

    A message may also have a vector (:meth:`set_vector`; :class:`Recall` computes them
    with a LangChain ``Embeddings``): :meth:`hybrid_search` then fuses BM25 with cosine
    similarity. Vectors are kept as tuples of floats scaled to length 1 (about 32 bytes
    per dimension per message) and compared with :func:`math.dist` (``cos = 1 - d² / 2``
    for unit vectors; C speed, about 13 µs per 1,536-dimension vector).

    Args:
        tokenizer: Splits text into terms (default :func:`recall_terms`: the ranking
            tokenizer with more stop words and a light English stemmer).

    Example:
        .. code-block:: python

            from ctx_memory.recall import RecallIndex

            index = RecallIndex()
            index.extend([
                {"role": "user", "content": "My passport number is X123", "token_count": 9},
                {"role": "assistant", "content": "Noted.", "token_count": 5},
                {"role": "user", "content": "Book a hotel in Rome", "token_count": 9},
                {"role": "assistant", "content": "Done.", "token_count": 5},
            ])
            [(position, score, terms)] = index.search("what was my passport number?", k=1)
            assert position == 0 and terms == ("passport", "number")
            assert index.turn(1) == (0, 2)
    """

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self._split = recall_terms if tokenizer is None else tokenizer
        self._postings: dict[str, list[int]] = {}  # term -> ascending positions
        self._tfs: dict[str, list[int]] = {}  # term -> its frequency at each of those
        self.lengths: list[int] = []
        self.total_length = 0
        self.roles: list[str] = []
        self.ids: list[str | None] = []
        self.tokens: list[int] = []
        # Each message's searchable text hash, in this process only (:func:`_digest`), or
        # for a position loaded from a saved segment its terms line: an edit that keeps
        # every count is caught where the message is read again (:meth:`edited`).
        self.digests: list[int | str | None] = []
        self.token_sum = 0
        self.user_positions: list[int] = []
        self.vectors: list[tuple[float, ...] | None] = []  # by position; None: no vector
        self.vector_count = 0
        self.dimensions: int | None = None
        self.unembedded: dict[int, tuple[str, VectorKey | None]] = {}  # Recall's to-do
        self.vector_keys: dict[VectorKey, int] = {}
        self.saved = 0  # positions below this are in the store's saved segments (Recall)
        self.recent: list[list[str]] | None = None  # each message's terms from ``saved`` on

    def __len__(self) -> int:
        return len(self.lengths)

    def add(self, record: Mapping[str, Any]) -> int:
        """Index one stored message as the next position; return that position."""
        position = len(self.lengths)
        content = record.get("content")
        plain = type(content) is str and not record.get("tool_calls") and not record.get("name")
        text: str = content if plain else indexed_text(record)  # type: ignore[assignment]
        words = self._split(text)
        if self.recent is not None:
            self.recent.append(words)
        self._post(position, words)
        role = str(record.get("role"))
        self.roles.append(role)
        message_id = record.get("id")
        self.ids.append(str(message_id) if message_id is not None else None)
        tokens = int(record.get("token_count") or 0)
        self.tokens.append(tokens)
        self.digests.append(hash(text))
        self.token_sum += tokens
        if role == "user":
            self.user_positions.append(position)
        self.vectors.append(None)
        return position

    def _post(self, position: int, words: Sequence[str]) -> None:
        """Put the message at ``position`` (its ``words``) in the postings; its length."""
        counts: dict[str, int] = {}
        for word in words:  # a dict, not a Counter: faster on a message's few words
            counts[word] = counts.get(word, 0) + 1
        postings, tfs = self._postings, self._tfs
        for term, tf in counts.items():
            found = postings.get(term)
            if found is None:
                postings[term] = [position]
                tfs[term] = [tf]
            else:
                found.append(position)
                tfs[term].append(tf)
        self.lengths.append(len(words))
        self.total_length += len(words)

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Index messages in history order."""
        for record in records:
            self.add(record)

    def edited(
        self,
        reads: Iterable[tuple[int, Sequence[Mapping[str, Any]]]],
        first: int = 0,
        stop: int | None = None,
    ) -> bool:
        """Whether a message in ``reads`` (``(position, records)``) is not what this index holds.

        Only positions from ``first`` to ``stop`` (default: every indexed one) are compared.

        Another id, or the same id with other searchable text (its content, content
        blocks, tool names and arguments), at an indexed position: an edit made where no
        event reached this process (another process) that kept the message count and the
        token total, which :meth:`Recall.apply <ctx_memory.recall.Recall.apply>` checks.
        A position loaded from a saved segment is compared by its terms (what the index
        holds of it).
        """
        ids, digests = self.ids, self.digests
        size = len(self.lengths) if stop is None else min(stop, len(self.lengths))
        for start, records in reads:
            for position in range(max(start, first, 0), min(start + len(records), size)):
                record = records[position - start]
                found, expected = record.get("id"), ids[position]
                if found is not None and expected is not None and str(found) != expected:
                    return True
                digest = digests[position]
                if isinstance(digest, str):  # a saved segment's terms line
                    if sorted(digest.split()) != sorted(self._split(indexed_text(record))):
                        return True
                    continue
                content = record.get("content")  # else what :meth:`add` hashed: its text
                plain = type(content) is str and not record.get("tool_calls")
                text = content if plain and not record.get("name") else indexed_text(record)
                if digest is not None and hash(text) != digest:
                    return True
        return False

    # ------------------------------------------------------------ segments

    def segment(self, start: int, stop: int) -> dict[str, Any]:
        """What the index holds of positions ``start`` to ``stop - 1``, as plain data.

        ``words`` holds each message's terms (with repeats, in no particular order), a
        line per message, separated by spaces (a term is a run of word characters).
        :meth:`add_segment` of an index holding exactly ``start`` messages adds
        them back without their text (:mod:`ctx_memory.recall` saves segments in the
        store). Joined text (no per-term work) for the positions from :attr:`saved` on
        while :attr:`recent` keeps their terms, else a pass over every posting.
        """
        recent = self.recent
        if recent is not None and start == self.saved and stop - start == len(recent):
            lines = [" ".join(words) for words in recent]
        else:
            per: list[list[str]] = [[] for _ in range(stop - start)]
            for term, positions in self._postings.items():
                if positions[-1] < start:
                    continue
                lo = bisect_left(positions, start)
                hi = bisect_left(positions, stop, lo)
                for position, tf in zip(positions[lo:hi], self._tfs[term][lo:hi], strict=True):
                    per[position - start] += [term] * tf
            lines = [" ".join(words) for words in per]
        return {
            "start": start,
            "stop": stop,
            "ids": self.ids[start:stop],
            "roles": self.roles[start:stop],
            "tokens": self.tokens[start:stop],
            "words": "\n".join(lines),
        }

    def add_segment(self, segment: Mapping[str, Any]) -> None:
        """Add a :meth:`segment` of another index as the next positions.

        Raises:
            ValueError: It does not start where this index ends, or is malformed (then
                this index is unusable: build a new one).
        """
        start, stop = segment["start"], segment["stop"]
        count = stop - start
        ids, roles, tokens = (list(segment[key]) for key in ("ids", "roles", "tokens"))
        lines = segment["words"].split("\n")
        if start != len(self.lengths) or not (
            0 < count == len(ids) == len(roles) == len(tokens) == len(lines)
        ):
            msg = f"segment {start}..{stop} does not follow {len(self.lengths)} messages"
            raise ValueError(msg)
        for position, line in enumerate(lines, start):
            self._post(position, line.split())
        self.ids.extend(ids)
        self.roles.extend(roles)
        self.user_positions.extend(p for p, role in enumerate(roles, start) if role == "user")
        self.tokens.extend(tokens)
        self.digests.extend(lines)  # compared term by term when read again (:meth:`edited`)
        self.token_sum += sum(tokens)
        self.vectors.extend([None] * count)

    def search(
        self, query: str, k: int = 10, *, before: int | None = None, context: float = 0.0
    ) -> list[tuple[int, float, tuple[str, ...]]]:
        """The ``k`` best positions for ``query``: ``(position, score, matched terms)``.

        Only positions below ``before`` (default: all) are considered, best first, the
        newer first among equal scores. Matched terms are in query order.

        With ``context`` 0 (the default) the score is the message's BM25 and only
        messages that share a term with the query are returned. With ``context`` above 0
        a message's score is its BM25 plus ``context`` times its two neighbours' (the
        messages just before and after it): a message inside a passage about the query
        outranks a stray mention, and a message next to strong matches is found though
        it shares no term (its matched terms are then empty). The assembler's recall
        uses :data:`CONTEXT_WEIGHT`. The pool re-scored is the ``max(2k, 64)`` best by
        BM25 and their neighbours.
        """
        size = len(self.lengths)
        if size == 0 or k <= 0:
            return []
        limit = size if before is None else min(before, size)
        avgdl = (self.total_length / size) or 1.0
        c1, c2, k1p = BM25_K1 * (1 - BM25_B), BM25_K1 * BM25_B / avgdl, BM25_K1 + 1
        lengths = self.lengths
        scores: dict[int, float] = {}
        get = scores.get
        used: list[tuple[str, list[int]]] = []
        for term in dict.fromkeys(self._split(query)):  # each query term counts once
            postings = self._postings.get(term)
            if not postings:
                continue
            idf = math.log((size + 1) / len(postings))
            if idf <= 0.0:
                continue
            used.append((term, postings))
            if limit < size:
                postings = postings[: bisect_left(postings, limit)]
            weight = idf * k1p
            # The hot loop: one multiply-add and one dict update per posting.
            for position, tf in zip(postings, self._tfs[term], strict=False):
                scores[position] = get(position, 0.0) + weight * tf / (
                    c1 + c2 * lengths[position] + tf
                )
        if context > 0.0 and scores:
            best = _in_context(scores, k, limit, context)
        else:
            best = _largest(scores, k)
        out: list[tuple[int, float, tuple[str, ...]]] = []
        for score, position in best:
            terms = tuple(term for term, postings in used if _contains(postings, position))
            out.append((position, score, terms))
        return out

    # ------------------------------------------------------------ vectors

    def query_vector(self, vector: Sequence[float]) -> tuple[float, ...]:
        """``vector`` scaled to length 1, checked against the index's vectors.

        Raises:
            ValueError: It is empty, zero or not finite, or its length is not the one
                of the vectors already held.
        """
        unit = unit_vector(vector)
        if unit is None:
            msg = "the vector is empty, zero or not finite"
            raise ValueError(msg)
        if self.dimensions is not None and len(unit) != self.dimensions:
            msg = f"the vector has {len(unit)} dimensions, the index's have {self.dimensions}"
            raise ValueError(msg)
        return unit

    def set_vector(
        self, position: int, vector: Sequence[float], *, key: VectorKey | None = None
    ) -> None:
        """Give the message at ``position`` its vector (scaled to length 1 here).

        ``key`` (message id and text hash) lets a rebuilt index reuse it.

        Raises:
            ValueError: As :meth:`query_vector` (the first vector sets the length).
        """
        self._put(position, self.query_vector(vector), key)

    def _put(self, position: int, unit: tuple[float, ...], key: VectorKey | None) -> None:
        """Keep a checked unit vector (see :meth:`set_vector`)."""
        if self.dimensions is None:
            self.dimensions = len(unit)
        if self.vectors[position] is None:
            self.vector_count += 1
        self.vectors[position] = unit
        self.unembedded.pop(position, None)
        if key is not None:
            self.vector_keys[key] = position

    def similarities(
        self, query_vector: Sequence[float], *, before: int | None = None
    ) -> dict[int, float]:
        """Cosine similarity of ``query_vector`` with each vector below ``before``.

        Raises:
            ValueError: As :meth:`query_vector`.
        """
        query = self.query_vector(query_vector)
        if not self.vector_count:
            return {}
        limit = len(self.vectors) if before is None else min(before, len(self.vectors))
        dist = math.dist
        return {
            position: 1.0 - dist(query, vector) ** 2 / 2.0
            for position, vector in enumerate(self.vectors[:limit])
            if vector is not None
        }

    def hybrid_search(
        self,
        query: str,
        query_vector: Sequence[float],
        k: int = 10,
        *,
        before: int | None = None,
        context: float = 0.0,
    ) -> list[RecallHit]:
        """The ``k`` best positions for ``query`` by BM25 and by vector, fused.

        Reciprocal rank fusion: the messages below ``before`` are ranked twice, by BM25
        (as :meth:`search` with the same ``context``: those sharing a term with the query,
        and with ``context`` above 0 their neighbours) and by cosine
        similarity with ``query_vector`` (those with a vector and a similarity above 0);
        each ranking keeps its best ``max(k, RRF_DEPTH)``. A message's score is::

            1 / (RRF_K + bm25_rank) + 1 / (RRF_K + vector_rank)

        (ranks from 1; a ranking it is not in adds nothing), so a message found by both
        outranks one found by only one at the same rank, and a message sharing no term
        with the query is found by its vector alone. Best first, the newer first among
        equal scores.

        Raises:
            ValueError: ``query_vector`` is unusable (see :meth:`query_vector`).
        """
        size = len(self.lengths)
        if size == 0 or k <= 0:
            return []
        depth = max(k, RRF_DEPTH)
        similarity = self.similarities(query_vector, before=before)
        lexical = self.search(query, k=depth, before=before, context=context)
        nearest = heapq.nlargest(depth, ((s, p) for p, s in similarity.items() if s > 0.0))
        fused: dict[int, float] = {}
        bm25_ranks: dict[int, int] = {}
        found: dict[int, tuple[float, tuple[str, ...]]] = {}
        for rank, (position, score, terms) in enumerate(lexical, 1):
            fused[position] = 1.0 / (RRF_K + rank)
            bm25_ranks[position] = rank
            found[position] = (score, terms)
        vector_ranks: dict[int, int] = {}
        for rank, (_, position) in enumerate(nearest, 1):
            fused[position] = fused.get(position, 0.0) + 1.0 / (RRF_K + rank)
            vector_ranks[position] = rank
        best = heapq.nlargest(k, ((score, position) for position, score in fused.items()))
        return [
            RecallHit(
                position,
                score,
                found.get(position, (0.0, ()))[1],
                found.get(position, (0.0, ()))[0],
                similarity.get(position),
                bm25_ranks.get(position),
                vector_ranks.get(position),
            )
            for score, position in best
        ]

    def ranked(
        self,
        query: str,
        k: int = 10,
        *,
        query_vector: Sequence[float] | None = None,
        context: float = 0.0,
        before: int | None = None,
    ) -> list[tuple[int, float, tuple[str, ...]]]:
        """:meth:`hybrid_search` given a query vector (and vectors held), else :meth:`search`.

        ``(position, score, matched terms)``, best first; the score is the fused one of a
        hybrid search. Only positions below ``before`` (default: all).
        """
        if query_vector is not None and self.vector_count:
            hits = self.hybrid_search(query, query_vector, k=k, context=context, before=before)
            return [(hit.position, hit.score, hit.terms) for hit in hits]
        return self.search(query, k=k, context=context, before=before)

    # ------------------------------------------------------------ turns

    def turn(self, position: int) -> tuple[int, int]:
        """The whole turn around ``position`` as ``(start, stop)``, ``stop`` exclusive.

        A turn starts at a user message and runs to the next one (messages before the
        first user message form a turn of their own), so an AI tool call and its results
        stay together. A user message directly followed by a tool result does not start
        a turn: it was written while a tool ran (another writer in a shared session), and
        the result answers a call made before it, so the turn runs on through it.
        """
        users, roles = self.user_positions, self.roles
        last = len(roles) - 1

        def written_while_a_tool_ran(at: int) -> bool:
            user = users[at]
            return user < last and roles[user + 1] == "tool"

        first = bisect_right(users, position)
        after = first
        while first and written_while_a_tool_ran(first - 1):
            first -= 1
        while after < len(users) and written_while_a_tool_ran(after):
            after += 1
        start = users[first - 1] if first else 0
        stop = users[after] if after < len(users) else len(self.lengths)
        return start, stop

    def cost(self, start: int, stop: int) -> int:
        """Cached tokens of messages ``start`` to ``stop - 1``."""
        return sum(self.tokens[start:stop])
