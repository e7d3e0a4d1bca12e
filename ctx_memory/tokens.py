"""Exact token counting with tiktoken, the way OpenAI's chat API counts messages.

A chat message costs::

    TOKENS_PER_MESSAGE (3)
    + tokens(role) + tokens(content text)
    + (TOKENS_PER_NAME (1) + tokens(name))        if the message has a name
    + tokens(tool_call_id)                        for tool results
    + tokens(JSON of [{name, arguments}, ...])    for assistant tool calls

and a whole request adds REPLY_PRIMING (3) for the assistant's reply. This count is
computed once, when a message is written, and stored with it as ``token_count``;
``metadata.token_count`` is the sum over the stored history.

Content-block lists count each block by what it is, in every block form LangChain passes
on (OpenAI's ``image_url`` / ``input_image`` / ``input_audio`` / ``file``, LangChain's
standard ``image`` / ``audio`` / ``video`` / ``file`` / ``text-plain`` blocks with
``base64``, ``url``, ``file_id`` or the older ``source_type`` + ``data``, Anthropic's
``source`` dict, ``media``)::

    text block                the tokens of its text
    image block               OpenAI's vision formula (:func:`ctx_memory.images.image_tokens`):
                              85 for detail "low"; for "high" or "auto" (counted as high)
                              85 + 170 per 512 px tile of the image scaled into 2048 x 2048
                              and then to a shortest side of at most 768 px, with the size
                              read from the PNG/JPEG/GIF/WebP header in the base64 data
    image of unknown size     UNKNOWN_IMAGE_TOKENS (765, what a 1024 x 1024 image costs
                              at high detail): an http(s) URL, a file id, a format whose
                              header is not read; 85 at detail "low"
    audio block               AUDIO_BLOCK_TOKENS (1,000) each, whatever its length
    file / video block        FILE_BLOCK_TOKENS (1,500) each: about one PDF page (its image
                              at high detail and a page of text); a text-plain block with
                              its text inline counts that text
    any other block           the tokens of its compact JSON (tool calls, reasoning, ...)

Base64 data is never counted as text: the image cost replaces it, and audio and file
costs are fixed reservations for the budget, not the provider's bill (pass
``audio_tokens`` / ``file_tokens`` / ``unknown_image_tokens`` to :class:`TokenCounter`
to reserve what your files take).

The approximate mode (about four characters a token, the seed's behaviour) is used only
when asked for (``TOKEN_COUNTER=approximate``).
"""

from __future__ import annotations

import functools
import json
import os
from typing import TYPE_CHECKING, Any

import tiktoken

from ctx_memory.errors import ConfigurationError, TokenizerError, UntokenizableTextError
from ctx_memory.images import (
    LOW_DETAIL_TOKENS,
    image_size_from_base64,
    image_size_from_bytes,
    image_tokens,
    parse_data_url,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from langchain_core.messages import BaseMessage

__all__ = [
    "AUDIO_BLOCK_TOKENS",
    "DEFAULT_ENCODING",
    "FILE_BLOCK_TOKENS",
    "REPLY_PRIMING",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "UNKNOWN_IMAGE_TOKENS",
    "TokenCounter",
    "block_kind",
    "encoding_for_model",
]

DEFAULT_ENCODING = "o200k_base"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
APPROXIMATE = "approximate"
_CHARS_PER_TOKEN = 4
UNKNOWN_IMAGE_TOKENS = 765
AUDIO_BLOCK_TOKENS = 1000
FILE_BLOCK_TOKENS = 1500

_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})
_AUDIO_TYPES = frozenset({"audio", "input_audio"})
_FILE_TYPES = frozenset({"file", "input_file", "document", "video", "text-plain", "media"})
_KINDS = {
    **dict.fromkeys(_IMAGE_TYPES, "image"),
    **dict.fromkeys(_AUDIO_TYPES, "audio"),
    **dict.fromkeys(_FILE_TYPES, "file"),
}


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


def block_kind(block: Mapping[str, Any]) -> str:
    """What a content block holds: ``"text"``, ``"image"``, ``"audio"``, ``"file"`` or ``"other"``.

    ``file``, ``media`` and similar blocks whose MIME type is ``image/*`` or
    ``audio/*`` count as images or audio.
    """
    kind = block.get("type")
    if kind == "text":
        return "text" if isinstance(block.get("text"), str) else "other"
    if kind in _FILE_TYPES:
        mime = str(block.get("mime_type") or "").lower()
        kind = {"image": "image", "audio": "audio"}.get(mime.partition("/")[0], "file")
    return _KINDS.get(kind, "other") if isinstance(kind, str) else "other"


def _image_detail(block: Mapping[str, Any]) -> str | None:
    for holder in (block, block.get("image_url"), block.get("extras")):
        if isinstance(holder, dict) and isinstance(holder.get("detail"), str):
            return str(holder["detail"]).lower()
    return None


def _image_data(block: Mapping[str, Any]) -> str | bytes | None:
    """The image's bytes or base64 text, if the block carries them (not for a URL)."""
    image_url = block.get("image_url")
    source = block.get("source")
    urls = (image_url.get("url") if isinstance(image_url, dict) else image_url, block.get("url"))
    inline = [block.get("base64")]
    if isinstance(source, dict) and source.get("type") == "base64":  # Anthropic
        inline.append(source.get("data"))
    if block.get("source_type") in (None, "base64"):  # LangChain's older data blocks, media
        inline.append(block.get("data"))
    for value in urls:
        data_url = parse_data_url(value) if isinstance(value, str) else None
        if data_url is not None:
            return data_url.payload if data_url.base64 else None
    for value in inline:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, str) and value:
            data_url = parse_data_url(value)
            if data_url is None:
                return value  # bare base64
            return data_url.payload if data_url.base64 else None
    return None


class TokenCounter:
    """Counts tokens for text and chat messages with one tiktoken encoding.

    Args:
        model: A model name; its tiktoken encoding is used (unknown models fall back to
            ``o200k_base``). Ignored when ``encoding`` is given.
        encoding: A tiktoken encoding name such as ``"cl100k_base"``.
        approximate: Count about four characters a token instead of encoding (text
            only: content blocks count the same in both modes).
        unknown_image_tokens: What an image costs whose size is not known (a URL, a
            file id, an unread format) at detail "high" or "auto".
        audio_tokens: What each audio block costs.
        file_tokens: What each file or video block costs.

    Example:
        .. code-block:: python

            from ctx_memory import TokenCounter

            counter = TokenCounter("gpt-4o")
            assert counter.encoding_name == "o200k_base"
            assert counter.count("hello world") == 2
            # 3 per message + role + content, and 3 to prime the reply:
            assert counter.count_chat([{"role": "user", "content": "hello world"}]) == 9
            # An image costs what OpenAI's vision formula says, never its base64 text:
            image = {"type": "image_url", "image_url": {"url": "https://a.example/cat.png"}}
            assert counter.count_content([image]) == 765  # size unknown: 1024 x 1024
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        encoding: str | None = None,
        approximate: bool = False,
        unknown_image_tokens: int = UNKNOWN_IMAGE_TOKENS,
        audio_tokens: int = AUDIO_BLOCK_TOKENS,
        file_tokens: int = FILE_BLOCK_TOKENS,
    ) -> None:
        self.approximate = approximate
        self.unknown_image_tokens = unknown_image_tokens
        self.audio_tokens = audio_tokens
        self.file_tokens = file_tokens
        self._role_tokens: dict[str, int] = {}  # the four roles, counted once
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
        try:
            return len(self._encoding.encode_ordinary(text))
        except BaseException as e:  # tiktoken's Rust panic is a BaseException
            if type(e).__name__ != "PanicException":
                raise
            raise UntokenizableTextError(len(text), self.encoding_name, str(e)) from None

    def truncate(self, text: str, max_tokens: int) -> str:
        """``text`` cut to at most ``max_tokens`` tokens (whole tokens, from the start)."""
        if max_tokens <= 0:
            return ""
        if self._encoding is None:
            return text[: max_tokens * _CHARS_PER_TOKEN]
        try:
            tokens = self._encoding.encode_ordinary(text)
        except BaseException as e:  # tiktoken's Rust panic is a BaseException
            if type(e).__name__ != "PanicException":
                raise
            raise UntokenizableTextError(len(text), self.encoding_name, str(e)) from None
        if len(tokens) <= max_tokens:
            return text
        cut = self._encoding.decode(tokens[:max_tokens])
        # A cut inside a multi-byte character decodes to U+FFFD: drop it.
        return cut.rstrip("\ufffd")

    def count_content(self, content: str | Sequence[str | Mapping[str, Any]]) -> int:
        """Tokens in message content: a string or a list of content blocks."""
        if isinstance(content, str):
            return self.count(content)
        return sum(
            self.count(block) if isinstance(block, str) else self.count_block(block)
            for block in content
        )

    def count_block(self, block: Mapping[str, Any]) -> int:
        """Tokens of one content block, by what it holds (see the module docstring)."""
        kind = block_kind(block)
        if kind == "text":
            return self.count(block["text"])
        if kind == "image":
            return self.count_image(block)
        if kind == "audio":
            return self.audio_tokens
        if kind == "file":
            text = block.get("text")
            return self.count(text) if isinstance(text, str) else self.file_tokens
        return self.count(json.dumps(block, separators=(",", ":"), sort_keys=True, default=str))

    def count_image(self, block: Mapping[str, Any]) -> int:
        """Tokens of an image block: OpenAI's formula from the size in its header."""
        detail = _image_detail(block)
        if detail == "low":
            return LOW_DETAIL_TOKENS
        data = _image_data(block)
        if isinstance(data, bytes):
            size = image_size_from_bytes(data)
        else:
            size = image_size_from_base64(data) if data else None
        if size is None:
            return self.unknown_image_tokens
        return image_tokens(*size, detail)

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
        role_tokens = self._role_tokens.get(role)
        if role_tokens is None:
            role_tokens = self._role_tokens[role] = self.count(role)
        total = TOKENS_PER_MESSAGE + role_tokens + self.count_content(content)
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
        """Tokens of one LangChain message, overhead included.

        Malformed tool calls (``invalid_tool_calls``, their arguments as the raw text the
        model wrote) count with the others: chat APIs send them as tool calls.
        """
        from ctx_memory.schema import validate_role  # noqa: PLC0415 - avoid import cycle

        role = message.role if message.type == "chat" else message.type  # type: ignore[attr-defined]
        return self.count_message(
            validate_role(role.removesuffix("Chunk").lower()),
            message.content,
            name=message.name,
            tool_calls=[
                *(getattr(message, "tool_calls", None) or ()),
                *(getattr(message, "invalid_tool_calls", None) or ()),
            ],
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
