from __future__ import annotations

import pytest
import tiktoken
from image_files import b64, data_url, gif, jpeg, png, webp_lossless
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from ctx_memory import TokenCounter, TokenizerError
from ctx_memory.errors import ConfigurationError
from ctx_memory.tokens import REPLY_PRIMING, TOKENS_PER_MESSAGE, _load_encoding, encoding_for_model


def test_encoding_from_model_name_and_fallback():
    assert TokenCounter("gpt-4o").encoding_name == "o200k_base"
    assert TokenCounter("gpt-4").encoding_name == "cl100k_base"
    assert TokenCounter("text-davinci-003").encoding_name == "p50k_base"
    assert TokenCounter("my-local-llama").encoding_name == "o200k_base"
    assert encoding_for_model("claude-whatever") == "o200k_base"
    assert TokenCounter().encoding_name == "o200k_base"


def test_encoding_by_name_wins_over_model():
    assert TokenCounter("gpt-4o", encoding="cl100k_base").encoding_name == "cl100k_base"


def test_unknown_encoding_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="TOKEN_ENCODING"):
        TokenCounter(encoding="nope_base")


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base", "p50k_base"])
@pytest.mark.parametrize(
    "text", ["", "hello world", "Ünïcode 🚀 text", "<|endoftext|> is plain text here"]
)
def test_count_matches_tiktoken(encoding, text):
    expected = len(tiktoken.get_encoding(encoding).encode(text, disallowed_special=()))
    assert TokenCounter(encoding=encoding).count(text) == expected


def test_chat_overhead_follows_openai():
    counter = TokenCounter(encoding="cl100k_base")
    enc = tiktoken.get_encoding("cl100k_base")
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hi there", "name": "bob"},
    ]
    expected = REPLY_PRIMING
    for m in messages:
        expected += TOKENS_PER_MESSAGE + len(enc.encode(m["role"])) + len(enc.encode(m["content"]))
        if "name" in m:
            expected += 1 + len(enc.encode(m["name"]))
    assert counter.count_chat(messages) == expected


def test_langchain_messages_count_like_their_records():
    counter = TokenCounter()
    ai = AIMessage(content="", tool_calls=[{"name": "search", "args": {"q": "x"}, "id": "c1"}])
    tool = ToolMessage(content="result", tool_call_id="c1")
    human = HumanMessage(
        content=[
            {"type": "text", "text": "hello"},
            {"type": "image_url", "image_url": {"url": "u"}},
        ]
    )
    for message in (ai, tool, human):
        assert counter.count_lc_message(message) > TOKENS_PER_MESSAGE
    assert counter.count_chat([ai, tool]) == REPLY_PRIMING + counter.count_lc_message(
        ai
    ) + counter.count_lc_message(tool)


def test_truncate_cuts_to_whole_tokens():
    counter = TokenCounter()
    text = "The quick brown fox jumps over the lazy dog. " * 20
    cut = counter.truncate(text, 10)
    assert counter.count(cut) <= 10
    assert text.startswith(cut)
    assert counter.truncate("short", 100) == "short"
    assert counter.truncate("anything", 0) == ""


def test_approximate_mode_is_four_chars_a_token():
    counter = TokenCounter(approximate=True)
    assert counter.encoding_name == "approximate"
    assert counter.count("") == 0
    assert counter.count("abcd") == 1
    assert counter.count("abcde") == 2
    assert counter.count("x" * 400) == 100
    assert len(counter.truncate("x" * 100, 5)) == 20


def test_offline_encoding_error_names_both_remedies(monkeypatch, tmp_path):
    """With an empty cache and no network, the error says what to do."""
    import tiktoken.load

    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    _load_encoding.cache_clear()
    try:
        with pytest.raises(TokenizerError) as info:
            TokenCounter(encoding="cl100k_base")
    finally:
        _load_encoding.cache_clear()
    message = str(info.value)
    assert "TIKTOKEN_CACHE_DIR" in message
    assert str(tmp_path) in message
    assert "approximate" in message


# --------------------------------------------------------------------------- non-text content


def _image_blocks(data: bytes, mime_type: str, detail: str | None = None) -> list[dict]:
    """The same image in every block form LangChain passes on."""
    url: dict = {"url": f"data:{mime_type};base64,{b64(data)}"}
    extras: dict = {}
    if detail is not None:
        url["detail"] = detail
        extras = {"detail": detail}
    return [
        {"type": "image_url", "image_url": url},  # OpenAI chat completions
        {"type": "input_image", "image_url": url["url"], **extras},  # OpenAI responses
        {"type": "image", "base64": b64(data), "mime_type": mime_type, "extras": extras},
        {"type": "image", "url": url["url"], "extras": extras},
        {"type": "image", "source_type": "base64", "data": b64(data), "mime_type": mime_type}
        | extras,  # langchain-core 0.3 data blocks
        {"type": "image", "source": {"type": "base64", "media_type": mime_type, "data": b64(data)}}
        | extras,  # Anthropic
        {"type": "media", "mime_type": mime_type, "data": b64(data)} | extras,  # Gemini
        {"type": "file", "mime_type": mime_type, "base64": b64(data)} | extras,
    ]


@pytest.mark.parametrize(
    ("data", "mime_type", "expected"),
    [
        (png(1024, 1024), "image/png", 765),
        (png(2048, 4096), "image/png", 1105),
        (jpeg(1920, 1080, exif_bytes=20_000), "image/jpeg", 1105),
        (jpeg(300, 200, sof=0xC2), "image/jpeg", 255),
        (gif(513, 100), "image/gif", 425),
        (webp_lossless(4000, 3000), "image/webp", 765),
    ],
)
def test_image_blocks_cost_what_openai_bills(data, mime_type, expected):
    counter = TokenCounter()
    for block in _image_blocks(data, mime_type):
        assert counter.count_block(block) == expected, block["type"]
        assert counter.count_content([block]) == expected
    for block in _image_blocks(data, mime_type, detail="high"):
        assert counter.count_block(block) == expected, block
    for block in _image_blocks(data, mime_type, detail="auto"):
        assert counter.count_block(block) == expected, block
    for block in _image_blocks(data, mime_type, detail="low"):
        assert counter.count_block(block) == 85, block


def test_images_of_unknown_size_cost_a_1024_square():
    counter = TokenCounter()
    unknown = [
        {"type": "image_url", "image_url": {"url": "https://cdn.example/cat.png"}},
        {"type": "image_url", "image_url": "https://cdn.example/cat.png"},
        {"type": "image", "url": "https://cdn.example/cat.png"},
        {"type": "image", "source_type": "url", "url": "https://cdn.example/cat.png"},
        {"type": "image", "file_id": "file-abc123"},
        {"type": "input_image", "file_id": "file-abc123"},
        {"type": "image", "source": {"type": "url", "url": "https://cdn.example/cat.png"}},
        {"type": "image", "base64": b64(b"BM" + b"\0" * 60), "mime_type": "image/bmp"},
        {"type": "image_url", "image_url": {"url": "data:image/svg+xml,%3Csvg%3E"}},
    ]
    for block in unknown:
        assert counter.count_block(block) == 765, block
    low = {
        "type": "image_url",
        "image_url": {"url": "https://cdn.example/cat.png", "detail": "low"},
    }
    assert counter.count_block(low) == 85
    assert TokenCounter(unknown_image_tokens=1105).count_block(unknown[0]) == 1105


def test_audio_and_file_blocks_cost_a_fixed_amount():
    counter = TokenCounter()
    wav = b64(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\0" * 5000)
    pdf = b64(b"%PDF-1.7\n" + b"x" * 50_000)
    audio = [
        {"type": "audio", "base64": wav, "mime_type": "audio/wav"},
        {"type": "audio", "url": "https://cdn.example/a.mp3"},
        {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
        {"type": "media", "mime_type": "audio/mpeg", "data": wav},
    ]
    files = [
        {"type": "file", "base64": pdf, "mime_type": "application/pdf"},
        {"type": "file", "file_id": "file-abc"},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf}"}},
        {"type": "input_file", "file_data": f"data:application/pdf;base64,{pdf}"},
        {"type": "document", "source": {"type": "base64", "data": pdf}},
        {"type": "video", "base64": pdf, "mime_type": "video/mp4"},
        {"type": "text-plain", "base64": pdf, "mime_type": "text/plain"},
    ]
    for block in audio:
        assert counter.count_block(block) == 1000, block
    for block in files:
        assert counter.count_block(block) == 1500, block
    inline = {"type": "text-plain", "text": "hello world", "mime_type": "text/plain"}
    assert counter.count_block(inline) == counter.count("hello world")
    custom = TokenCounter(audio_tokens=600, file_tokens=2500)
    assert custom.count_block(audio[0]) == 600
    assert custom.count_block(files[0]) == 2500


def test_base64_is_never_counted_as_text():
    big = png(800, 600, noise=True)  # incompressible: ~1.4 MB
    small = png(800, 600)
    counter = TokenCounter()
    assert len(big) > 1_000_000
    assert counter.count_block({"type": "image_url", "image_url": {"url": data_url(big)}}) == (
        counter.count_block({"type": "image_url", "image_url": {"url": data_url(small)}})
    )
    mixed = [
        {"type": "text", "text": "What is in this picture?"},
        _image_blocks(big, "image/png")[0],
    ]
    assert counter.count_content(mixed) == counter.count("What is in this picture?") + 765


def test_other_blocks_still_count_their_json():
    counter = TokenCounter()
    block = {"type": "reasoning", "reasoning": "think"}
    assert counter.count_block(block) == counter.count('{"reasoning":"think","type":"reasoning"}')


def test_images_count_the_same_in_approximate_mode():
    block = _image_blocks(png(1024, 1024), "image/png")[0]
    assert TokenCounter(approximate=True).count_block(block) == 765


def test_a_150_kb_image_fits_the_default_budget():
    from ctx_memory import ContextManager, ContextPromptAssembler, InMemoryStore

    image = png(1000, 50, noise=True)  # 2 x 1 tiles: 425 tokens
    assert 150_000 <= len(image) <= 160_000
    question = HumanMessage(
        content=[
            {"type": "text", "text": "What does this chart show?"},
            {"type": "image_url", "image_url": {"url": data_url(image)}},
        ]
    )
    counter = TokenCounter()
    expected = TOKENS_PER_MESSAGE + counter.count("user")
    expected += counter.count("What does this chart show?") + 425
    assert counter.count_lc_message(question) == expected
    manager = ContextManager(store=InMemoryStore())
    manager.add_messages("s1", [question])
    [stored] = manager.get_history("s1")
    assert stored["token_count"] == expected
    result = ContextPromptAssembler(manager).assemble("s1", question)  # default 8000 - 1000
    assert result.report.question_tokens == expected
    assert result.report.total_tokens == counter.count_chat(result.messages) < 1000


def test_text_tiktoken_cannot_tokenize_is_a_validation_error_and_nothing_is_written() -> None:
    """tiktoken's Rust core overflows its stack on a run of about a million spaces and
    raises a PanicException (a BaseException): refused as bad input instead."""
    from ctx_memory import (
        ContextIntegration,
        ContextManager,
        UntokenizableTextError,
        ValidationError,
    )

    hostile = "a" + " " * 1_200_000 + "b"
    with pytest.raises(UntokenizableTextError) as caught:
        TokenCounter("o200k_base").count(hostile)
    assert isinstance(caught.value, ValidationError)
    assert caught.value.length == len(hostile)
    assert "1,200,002 characters" in str(caught.value)
    manager = ContextManager()
    with pytest.raises(UntokenizableTextError):
        manager.add_user_message("s", hostile)
    assert manager.get_context("s") == {}
    manager.add_user_message("s", "hello")
    before = manager.export_session("s")
    with pytest.raises(UntokenizableTextError):
        ContextIntegration(manager).add_web_content(
            text_content=hostile, current_url="https://x.example", session_id="s"
        )
    assert manager.export_session("s") == before


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_summary_tiktoken_cannot_tokenize_is_reported_not_raised(mode: str) -> None:
    """A summariser answering such a text changes nothing: the outcome says why."""
    from langchain_core.runnables import RunnableLambda

    from ctx_memory import ContextManager
    from ctx_memory.compaction import CompactionPolicy, acompact, compact

    manager = ContextManager()
    for i in range(20):
        manager.add_user_message("c", f"question {i} " * 20)
        manager.add_assistant_message("c", f"answer {i} " * 20)
    before = manager.export_session("c")
    degenerate = RunnableLambda(lambda _messages: "Summary:" + " " * 1_200_000 + "end")
    policy = CompactionPolicy(summarize_at=10, keep_recent=4, block=2, summarizer=degenerate)
    if mode == "async":
        outcome = await acompact(manager, "c", policy)
    else:
        outcome = compact(manager, "c", policy)
    assert outcome.entry is None
    assert outcome.reason.startswith("summary not stored: UntokenizableTextError")
    assert outcome.failed
    assert manager.export_session("c") == before
