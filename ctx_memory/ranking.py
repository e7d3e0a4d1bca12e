"""Ranking a session's sources against a question: tokenization and BM25, in any language.

Pure functions, shared by the prompt assembler (which sources go in, in which order) and
:class:`~ctx_memory.retrievers.FetchedContextRetriever`.

:func:`tokenize` turns text into BM25 terms the same way for a question and a source:

* **case and accents are folded** (:func:`fold`): ``casefold()``, compatibility forms
  (full-width letters, ligatures, half-width katakana) unified with NFKD, diacritics
  dropped (Latin, Greek and Cyrillic accents, Hebrew points, Arabic vowel marks), and
  ``ø æ œ ł đ ð þ`` and the dotless i spelled out, so ``Café``, ``cafe`` and ``CAFÉ``
  are one term and ``Ångström`` is ``angstrom``. Marks that make a different letter
  (Japanese voicing marks, Hangul syllables, Indic vowel signs) are kept;
* **spaced scripts** are split into words (letters, digits and the combining marks that
  belong to them), dropping a short list of English stop words;
* **unspaced scripts** (Chinese ideographs, hiragana, katakana, Hangul, Thai, Lao,
  Khmer, Myanmar) are cut into overlapping character bigrams (``東京都`` gives ``東京``
  and ``京都``; a lone character is its own term), so ``東京`` finds a page about
  Tokyo without a dictionary. Pass your own tokenizer (any ``str -> list[str]``, e.g.
  a morphological analyser) for word-level segmentation.

ASCII text takes a fast path: lower-cased words, exactly the split of earlier versions.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping, Sequence

__all__ = [
    "BM25_B",
    "BM25_K1",
    "Tokenizer",
    "bm25_scores",
    "fold",
    "instant",
    "item_key",
    "item_title",
    "rank_sources",
    "tokenize",
]

Tokenizer = Callable[[str], list[str]]
"""A tokenizer for ranking: text in, terms out (the same function for query and sources)."""

BM25_K1 = 1.5
BM25_B = 0.75

_STOPWORD_TEXT = (
    "a an and are as at be but by can do does for from how i if in into is it its me my "
    "of on or our so that the their them then there these they this to was we what when "
    "where which who why will with you your"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"\w+")

# Diacritics dropped by fold(): combining diacritical marks (and their extensions and
# supplements), Cyrillic titlo marks, Hebrew points and cantillation, Arabic vowel marks.
_DIACRITICS = re.compile(
    "[\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7"
    "\u0610-\u061a\u064b-\u065f\u0670\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"
)
# Letters NFKD leaves whole although they are commonly written without their stroke.
_LETTERS = str.maketrans(
    {"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "\u0131": "i"}
)
# Scripts written without spaces between words, cut into character bigrams.
_UNSPACED = (
    "\u0e01-\u0e3a\u0e40-\u0e4e"  # Thai letters, vowels and tone marks
    "\u0e81-\u0ecd"  # Lao
    "\u1000-\u103f\u1050-\u109f"  # Myanmar
    "\u1780-\u17d3"  # Khmer
    "\u1100-\u11ff\u3131-\u318e\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff"  # Hangul
    "\u3005-\u3007"  # iteration mark, closing mark, ideographic zero
    "\u3041-\u3096\u3099-\u309f"  # hiragana (and voicing marks)
    "\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff"  # katakana (not the middle dot)
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\U00020000-\U0003134f"  # CJK ideographs, extensions B-H
)


def fold(text: str) -> str:
    """``text`` with case and accents folded (see the module docstring).

    Example:
        .. code-block:: python

            from ctx_memory.ranking import fold

            assert fold("Café CRÈME") == "cafe creme"
            assert fold("Ångström") == "angstrom"
            assert fold("Straße") == "strasse"
            assert fold("がっこう") == "がっこう"  # voicing marks make other letters: kept
    """
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKD", text.casefold())
    text = _DIACRITICS.sub("", text).translate(_LETTERS)
    return unicodedata.normalize("NFC", text)  # Hangul syllables, voiced kana back whole


def _mark_ranges() -> str:
    """Character-class ranges of every combining mark (``M*``) up to U+1FFFF."""
    ranges: list[str] = []
    start: int | None = None
    for cp in range(0x20000):
        is_mark = unicodedata.category(chr(cp)).startswith("M")
        if is_mark and start is None:
            start = cp
        elif not is_mark and start is not None:
            ranges.append(f"{re.escape(chr(start))}-{re.escape(chr(cp - 1))}")
            start = None
    return "".join(ranges)


@functools.cache
def _token_pattern() -> re.Pattern[str]:
    """Unspaced runs, or words: word characters and the marks that belong to them.

    Built once, on the first non-ASCII text (scanning the marks and compiling take
    under 0.1 s), for the running Python's Unicode version.
    """
    word = f"(?:[^\\W{_UNSPACED}]|[{_mark_ranges()}])+"
    return re.compile(f"([{_UNSPACED}]+)|({word})")


def tokenize(text: str) -> list[str]:
    """BM25 terms of ``text``: folded words and bigrams of unspaced scripts.

    Example:
        .. code-block:: python

            from ctx_memory.ranking import tokenize

            assert tokenize("How do I book a CHEAP flight?") == ["book", "cheap", "flight"]
            assert tokenize("Café in Zürich") == ["cafe", "zurich"]
            assert tokenize("東京都の天気") == ["東京", "京都", "都の", "の天", "天気"]
            assert tokenize("서울 날씨") == ["서울", "날씨"]
    """
    folded = fold(text)
    if folded.isascii():
        return [w for w in _WORD.findall(folded) if w not in _STOPWORDS]
    terms: list[str] = []
    for run, word in _token_pattern().findall(folded):
        if run:
            terms.extend([run[i : i + 2] for i in range(len(run) - 1)] or [run])
        elif word not in _STOPWORDS:
            terms.append(word)
    return terms


def bm25_scores(
    query: Sequence[str],
    documents: Sequence[Mapping[str, int]],
    lengths: Sequence[int],
    *,
    k1: float = BM25_K1,
    b: float = BM25_B,
) -> list[float]:
    """Okapi BM25 scores of ``documents`` (term counts) for the ``query`` tokens.

    The IDF is ``ln((N + 1) / n(q))``, which is never negative, so a document that shares
    no term with the query scores exactly 0. Only the query's terms are looked up, so the
    cost is ``O(len(query) * len(documents))`` given each document's term counts. The
    scores equal ``rank_bm25.BM25Plus(corpus, k1=k1, b=b, delta=0).get_scores(query)``
    (a test pins this); rank_bm25 itself would rebuild the whole corpus index on every
    call, which is what made it 10x too slow for per-prompt ranking.
    """
    n_docs = len(documents)
    if n_docs == 0:
        return []
    avgdl = (sum(lengths) / n_docs) or 1.0
    norms = [k1 * (1 - b + b * length / avgdl) for length in lengths]
    scores = [0.0] * n_docs
    idf_cache: dict[str, float] = {}
    for term in query:
        idf = idf_cache.get(term)
        if idf is None:
            containing = sum(1 for doc in documents if term in doc)
            idf = math.log((n_docs + 1) / containing) if containing else 0.0
            idf_cache[term] = idf
        if idf == 0.0:
            continue
        for i, doc in enumerate(documents):
            tf = doc.get(term)
            if tf:
                scores[i] += idf * (tf * (k1 + 1)) / (norms[i] + tf)
    return scores


def item_key(item: Mapping[str, Any]) -> tuple[Any, ...]:
    """A cheap identity of a fetched item, for caches of its terms or its cut text."""
    content = item.get("content") or ""
    return (
        item.get("source_type"),
        item.get("url"),
        item.get("timestamp"),
        item.get("token_count"),
        len(content),
        content[:64],
    )


def item_title(item: Mapping[str, Any]) -> str:
    """A fetched item's title: ``extracted_data`` title, else site name, else URL."""
    data = item.get("extracted_data") or {}
    return str(data.get("title") or data.get("site_name") or item.get("url") or "Untitled")


def rank_sources(
    question: str,
    items: Sequence[Mapping[str, Any]],
    *,
    cache: MutableMapping[tuple[Any, ...], tuple[Counter[str], int]] | None = None,
    tokenizer: Tokenizer | None = None,
) -> list[tuple[float, Mapping[str, Any]]]:
    """``items`` with their BM25 scores against ``question``, most relevant first.

    Each item is scored on its title and content; ties (including items that share no
    term with the question, which score 0) go to the most recent ``timestamp`` first.
    ``tokenizer`` splits the question and the items into terms (default:
    :func:`tokenize`). ``cache`` maps an item's identity to its term counts so repeated
    rankings over the same sources do not re-tokenize them; keep one cache per
    tokenizer.
    """
    split = tokenize if tokenizer is None else tokenizer
    documents: list[Counter[str]] = []
    lengths: list[int] = []
    for item in items:
        key = item_key(item)
        cached = cache.get(key) if cache is not None else None
        if cached is None:
            words = list(split(f"{item_title(item)} {item.get('content') or ''}"))
            cached = (Counter(words), len(words))
            if cache is not None:
                cache[key] = cached
        documents.append(cached[0])
        lengths.append(cached[1])
    scores = bm25_scores(list(split(question)), documents, lengths)
    order = sorted(
        range(len(items)),
        key=lambda i: (scores[i], instant(items[i].get("timestamp")), -i),
        reverse=True,
    )
    return [(scores[i], items[i]) for i in order]


def instant(timestamp: object) -> float:
    """A stored timestamp as seconds since the epoch (its offset applied; naive is UTC).

    Recency compares instants, not text: ``10:00+09:00`` is before ``05:00+00:00``.
    Unreadable or missing: ``-inf``, the oldest.

    Example:
        .. code-block:: python

            from ctx_memory.ranking import instant

            assert instant("2026-03-02T18:00:00+09:00") < instant("2026-03-02T10:00:00+00:00")
            assert instant("2026-03-02T09:00:00") == instant("2026-03-02T09:00:00+00:00")
            assert instant("yesterday") == instant(None) == float("-inf")
    """
    if not timestamp:
        return -math.inf
    try:
        when = datetime.fromisoformat(str(timestamp))
    except ValueError:
        return -math.inf
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
