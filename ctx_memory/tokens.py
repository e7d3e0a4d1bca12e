"""Exact token counting with tiktoken, the way OpenAI's chat API counts messages.

A chat message costs::

    TOKENS_PER_MESSAGE (3)
    + tokens(role) + tokens(content text)
    + (TOKENS_PER_NAME (1) + tokens(name))        if the message has a name
    + tokens(tool_call_id)                        for tool results
    + tokens(JSON of [{name, arguments}, ...])    for assistant tool calls

and a whole request adds REPLY_PRIMING (3) for the assistant's reply. Content-block lists
count the text of their text blocks and the compact JSON of any other block. This count is
computed once, when a message is written, and stored with it as ``token_count``;
``metadata.token_count`` is the sum over the stored history.

The approximate mode (about four characters a token, the seed's behaviour) is used only
when asked for (``TOKEN_COUNTER=approximate``).
"""

from __future__ import annotations

import functools
import json
import os
from typing import TYPE_CHECKING, Any

import tiktoken

from ctx_memory.errors import ConfigurationError, TokenizerError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from langchain_core.messages import BaseMessage

__all__ = [
    "DEFAULT_ENCODING",
    "REPLY_PRIMING",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "TokenCounter",
    "encoding_for_model",
]

DEFAULT_ENCODING = "o200k_base"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
APPROXIMATE = "approximate"
_CHARS_PER_TOKEN = 4


def encoding_for_model(model: str) -> str:
    """The tiktoken encoding name for ``model``; unknown models get ``o200k_base``."""
    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        return DEFAULT_ENCODING


@functools.lru_cache(maxsize=16)
def _load_encoding(name: str) -> tiktoken.Encoding:
    if name not in tiktoken.list_encoding_names():
        known = ", ".join(sorted(tiktoken.list_encoding_names()))
        raise ConfigurationError("TOKEN_ENCODING", f"unknown encoding {name!r} (known: {known})")
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # tiktoken raises requests/urllib/blobfile errors offline
        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
        where = f"TIKTOKEN_CACHE_DIR={cache!r}" if cache else "TIKTOKEN_CACHE_DIR is not set"
        msg = (
            f"cannot load the tiktoken encoding {name!r} ({type(e).__name__}: {e}); {where}. "
            "Either point TIKTOKEN_CACHE_DIR at a directory holding tiktoken's cached "
            "encoding files (or allow tiktoken to download them once), or set "
            "CTX_MEMORY_TOKEN_COUNTER=approximate to count about 4 characters a token."
        )
        raise TokenizerError(msg) from e


class TokenCounter:
    """Counts tokens for text and chat messages with one tiktoken encoding.

    Args:
        model: A model name; its tiktoken encoding is used (unknown models fall back to
            ``o200k_base``). Ignored when ``encoding`` is given.
        encoding: A tiktoken encoding name such as ``"cl100k_base"``.
        approximate: Count about four characters a token instead of encoding.

    Example:
        .. code-block:: python

            from ctx_memory import TokenCounter

            counter = TokenCounter("gpt-4o")
            assert counter.encoding_name == "o200k_base"
            assert counter.count("hello world") == 2
            # 3 per message + role + content, and 3 to prime the reply:
            assert counter.count_chat([{"role": "user", "content": "hello world"}]) == 9
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        encoding: str | None = None,
        approximate: bool = False,
    ) -> None:
        self.approximate = approximate
        if approximate:
            self.encoding_name = APPROXIMATE
            self._encoding: tiktoken.Encoding | None = None
        else:
            self.encoding_name = encoding or (
                encoding_for_model(model) if model else DEFAULT_ENCODING
            )
            self._encoding = _load_encoding(self.encoding_name)

    def __repr__(self) -> str:
        return f"TokenCounter(encoding={self.encoding_name!r})"

    def count(self, text: str) -> int:
        """Tokens in ``text`` (special-token markers are counted as plain text)."""
        if self._encoding is None:
            return -(-len(text) // _CHARS_PER_TOKEN)
        return len(self._encoding.encode_ordinary(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        """``text`` cut to at most ``max_tokens`` tokens (whole tokens, from the start)."""
        if max_tokens <= 0:
            return ""
        if self._encoding is None:
            return text[: max_tokens * _CHARS_PER_TOKEN]
        tokens = self._encoding.encode_ordinary(text)
        if len(tokens) <= max_tokens:
            return text
        cut = self._encoding.decode(tokens[:max_tokens])
        # A cut inside a multi-byte character decodes to U+FFFD: drop it.
        return cut.rstrip("\ufffd")

    def count_content(self, content: str | Sequence[str | Mapping[str, Any]]) -> int:
        """Tokens in message content: a string or a list of content blocks."""
        if isinstance(content, str):
            return self.count(content)
        total = 0
        for block in content:
            if isinstance(block, str):
                total += self.count(block)
            elif block.get("type") == "text" and isinstance(block.get("text"), str):
                total += self.count(block["text"])
            else:
                total += self.count(json.dumps(block, separators=(",", ":"), sort_keys=True))
        return total

    def count_message(
        self,
        role: str,
        content: str | Sequence[str | Mapping[str, Any]],
        *,
        name: str | None = None,
        tool_calls: Sequence[Mapping[str, Any]] | None = None,
        tool_call_id: str | None = None,
    ) -> int:
        """Tokens one chat message costs, overhead included (see the module docstring)."""
        total = TOKENS_PER_MESSAGE + self.count(role) + self.count_content(content)
        if name:
            total += TOKENS_PER_NAME + self.count(name)
        if tool_calls:
            calls = [
                {"name": call.get("name"), "arguments": call.get("args", call.get("arguments"))}
                for call in tool_calls
            ]
            total += self.count(json.dumps(calls, separators=(",", ":"), sort_keys=True))
        if tool_call_id:
            total += self.count(tool_call_id)
        return total

    def count_record(self, record: Mapping[str, Any]) -> int:
        """Tokens of a stored message dict (``role``, ``content`` and LangChain fields)."""
        return self.count_message(
            record["role"],
            record["content"],
            name=record.get("name"),
            tool_calls=record.get("tool_calls"),
            tool_call_id=record.get("tool_call_id"),
        )

    def count_lc_message(self, message: BaseMessage) -> int:
        """Tokens of one LangChain message, overhead included."""
        from ctx_memory.schema import validate_role  # noqa: PLC0415 - avoid import cycle

        role = message.role if message.type == "chat" else message.type  # type: ignore[attr-defined]
        return self.count_message(
            validate_role(role.removesuffix("Chunk").lower()),
            message.content,
            name=message.name,
            tool_calls=getattr(message, "tool_calls", None),
            tool_call_id=getattr(message, "tool_call_id", None),
        )

    def count_chat(self, messages: Iterable[Mapping[str, Any] | BaseMessage]) -> int:
        """Tokens a whole chat request costs: every message plus the reply priming."""
        total = REPLY_PRIMING
        for message in messages:
            if isinstance(message, dict):
                total += self.count_record(message)
            else:
                total += self.count_lc_message(message)  # type: ignore[arg-type]
        return total
