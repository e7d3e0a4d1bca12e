from __future__ import annotations

import pytest
import tiktoken
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
