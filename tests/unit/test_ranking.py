from __future__ import annotations

import inspect
import re
import textwrap
from collections import Counter

import pytest
from rank_bm25 import BM25Plus

from ctx_memory import ranking
from ctx_memory.ranking import bm25_scores, fold, rank_sources, tokenize


def source(url: str, content: str, title: str = "", timestamp: str = "2026-01-01") -> dict:
    return {
        "url": url,
        "content": content,
        "timestamp": timestamp,
        "extracted_data": {"title": title} if title else {},
    }


def best(query: str, items: list[dict], **kwargs) -> str:
    score, item = rank_sources(query, items, **kwargs)[0]
    assert score > 0, f"{query!r} matched nothing"
    return str(item["url"])


# --------------------------------------------------------------------------- folding


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Café CRÈME brûlée", "cafe creme brulee"),
        ("\u00c5ngstr\u00f6m", "angstrom"),  # precomposed Å
        ("A\u030angstro\u0308m", "angstrom"),  # decomposed
        ("\u212bngstr\u00f6m", "angstrom"),  # the ANGSTROM SIGN
        ("Straße", "strasse"),
        ("Søren Kierkegaard, Æsir, Łódź, Œuvre", "soren kierkegaard, aesir, lodz, oeuvre"),
        ("\uff21\uff22\uff23 \ufb01le", "abc file"),  # full-width letters, fi ligature
        ("İstanbul", "istanbul"),
        ("Ёлка", "елка"),
        ("Ελληνικά", "ελληνικα"),
        ("مَرْحَبًا", "مرحبا"),  # Arabic vowel marks
        ("がっこう ガッコウ", "がっこう ガッコウ"),  # voicing marks make other letters
        ("\uff76\uff9e\uff6f\uff7a\uff73", "ガッコウ"),  # half-width katakana
        ("한국어", "한국어"),  # Hangul syllables come back whole
        ("नमस्ते", "नमस्ते"),  # Indic vowel signs are kept
        ("plain ascii TEXT", "plain ascii text"),
    ],
)
def test_fold(text, folded):
    assert fold(text) == folded


# --------------------------------------------------------------------------- tokenize


def test_ascii_tokenization_is_unchanged():
    assert tokenize("How do I book a CHEAP flight to Paris?") == [
        "book",
        "cheap",
        "flight",
        "paris",
    ]
    assert tokenize("e-mail: don't_stop 42") == ["e", "mail", "don", "t_stop", "42"]


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("東京", ["東京"]),
        ("東京都", ["東京", "京都"]),
        ("日本語を勉強", ["日本", "本語", "語を", "を勉", "勉強"]),
        ("東", ["東"]),
        ("カタカナ", ["カタ", "タカ", "カナ"]),
        ("東京・大阪", ["東京", "大阪"]),  # the katakana middle dot separates
        ("서울에서 만나요", ["서울", "울에", "에서", "만나", "나요"]),
        ("สวัสดี", ["สว", "วั", "ัส", "สด", "ดี"]),
        ("Tokyo 東京 café", ["tokyo", "東京", "cafe"]),
        ("नमस्ते दुनिया", ["नमस्ते", "दुनिया"]),  # words stay whole with their vowel signs
        ("Der Zug nach München", ["der", "zug", "nach", "munchen"]),
        ("the café", ["cafe"]),  # English stop words, also in non-ASCII text
    ],
)
def test_tokenize_segments_every_script(text, terms):
    assert tokenize(text) == terms


# --------------------------------------------------------------------------- ranking


TRAVEL = [
    source("https://tokyo.example", "東京は日本の首都です。東京タワーと浅草寺が有名です。", "東京"),
    source("https://kyoto.example", "京都には千年の歴史と多くの寺があります。", "京都"),
    source("https://osaka.example", "大阪はたこ焼きとお好み焼きで有名な食の街です。", "大阪"),
    source("https://beijing.example", "北京是中国的首都，有故宫和长城。", "北京"),  # noqa: RUF001
    source("https://shanghai.example", "上海是中国最大的城市，外滩很有名。", "上海"),  # noqa: RUF001
    source("https://seoul.example", "서울은 한국의 수도입니다. 경복궁이 유명합니다.", "서울"),
    source("https://busan.example", "부산은 해운대 해수욕장으로 유명합니다.", "부산"),
    source("https://bangkok.example", "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย", "กรุงเทพ"),
    source(
        "https://paris.example", "Café de Flore and the crème brûlée of Saint-Germain.", "Paris"
    ),
    source("https://physics.example", "Wavelengths are measured in Ångström units.", "Physics"),
    source("https://school.example", "日本語の勉強は漢字とひらがなとカタカナから。", "日本語学校"),
    source("https://zurich.example", "Zürich: Altstadt, Grossmünster und der See.", "Zürich"),
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("東京", "https://tokyo.example"),
        ("東京タワーはどこ", "https://tokyo.example"),
        ("京都の寺", "https://kyoto.example"),
        ("たこ焼き", "https://osaka.example"),
        ("お好み焼き", "https://osaka.example"),
        ("日本語", "https://school.example"),
        ("ひらがな", "https://school.example"),
        ("カタカナ", "https://school.example"),
        ("故宫", "https://beijing.example"),
        ("中国最大的城市", "https://shanghai.example"),
        ("서울", "https://seoul.example"),
        ("경복궁", "https://seoul.example"),
        ("해운대", "https://busan.example"),
        ("เมืองหลวง", "https://bangkok.example"),
        ("cafe de flore", "https://paris.example"),
        ("CAFÉ", "https://paris.example"),
        ("creme brulee", "https://paris.example"),
        ("angstrom", "https://physics.example"),
        ("ÅNGSTRÖM", "https://physics.example"),
        ("zurich", "https://zurich.example"),
        ("Grossmünster", "https://zurich.example"),
        ("Großmünster", "https://zurich.example"),
    ],
)
def test_the_right_source_comes_first_in_every_language(query, expected):
    assert best(query, TRAVEL) == expected


def test_a_query_in_an_unrelated_script_matches_nothing():
    assert all(score == 0 for score, _ in rank_sources("Lisbon trams", TRAVEL))
    assert all(score == 0 for score, _ in rank_sources("リスボン", TRAVEL))


def test_accented_sources_are_found_by_plain_queries_and_back():
    items = [
        source("a", "cafe opening hours"),
        source("b", "a museum of modern art"),
    ]
    assert best("Café", items) == "a"
    assert best("CAFÉ", items) == "a"


def test_custom_tokenizer():
    calls: list[str] = []

    def phrases(text: str) -> list[str]:  # "|"-separated phrases, each one term
        calls.append(text)
        return [t.strip().lower() for t in text.split("|") if t.strip()]

    items = [
        source("a", "york minster|new look", title="UK|"),
        source("b", "new york|hotels", title="US|"),
    ]
    ranked = rank_sources("New York", items, tokenizer=phrases)
    assert [(score > 0, item["url"]) for score, item in ranked] == [(True, "b"), (False, "a")]
    assert calls[-1] == "New York"  # the question goes through it too
    assert "US| new york|hotels" in calls
    # The default tokenizer splits words, so both sources match both words.
    assert all(score > 0 for score, _ in rank_sources("New York", items))


def test_a_cache_keeps_the_terms_of_each_source():
    cache: dict = {}
    calls: list[str] = []

    def counting(text: str) -> list[str]:
        calls.append(text)
        return tokenize(text)

    rank_sources("東京", TRAVEL, cache=cache, tokenizer=counting)
    first = len(calls)
    assert first == len(TRAVEL) + 1
    rank_sources("大阪", TRAVEL, cache=cache, tokenizer=counting)
    assert len(calls) == first + 1  # only the new question


def test_bm25_matches_rank_bm25_on_cjk_and_accented_text():
    corpus = [tokenize(item["content"]) for item in TRAVEL]
    query = tokenize("東京の寺 café")
    ours = bm25_scores(query, [Counter(d) for d in corpus], [len(d) for d in corpus])
    reference = BM25Plus(corpus, k1=1.5, b=0.75, delta=0).get_scores(query)
    assert ours == pytest.approx(list(reference))


_EXAMPLE = re.compile(r"Example:\s*\n\s*\.\. code-block:: python\s*\n\n((?:[ \t]+.*\n|\s*\n)+)")


def test_function_examples_run():
    examples = [
        textwrap.dedent(m[1])
        for _, fn in inspect.getmembers(ranking, inspect.isfunction)
        if (m := _EXAMPLE.search((inspect.getdoc(fn) or "") + "\n"))
    ]
    assert len(examples) >= 2
    for code in examples:
        exec(compile(code, "<docstring example>", "exec"), {})
