"""Stored records as LangChain messages, fast: what a prompt's history is made of.

:func:`attach_context` puts the stable layout's per-question and volatile parts on the user's
messages.

:func:`records_to_messages` gives what ``[record_to_message(r) for r in records]`` gives,
message for message, but builds plain text messages (most of any history) without
re-running pydantic validation on values known valid (:class:`_PlainMessageFactory`,
which checks itself against the real constructor and steps aside if they ever differ).
Everything else goes through :func:`~ctx_memory.schema.record_to_message`; an AI message
then loses the calls that no stored result can answer (:func:`_sendable`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from ctx_memory.schema import record_to_message

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = ["CONTEXT_CLOSE", "CONTEXT_OPEN", "attach_context", "records_to_messages"]

CONTEXT_OPEN = "<context>"
CONTEXT_CLOSE = "</context>"
"""What the stable layout wraps its per-question and volatile parts in, on user messages."""

_PLAIN_CLASSES: dict[str, type[BaseMessage]] = {
    "user": HumanMessage,
    "assistant": AIMessage,
    "system": SystemMessage,
}
_RICH_KEYS = (
    "name",
    "additional_kwargs",
    "response_metadata",
    "tool_calls",
    "invalid_tool_calls",
    "usage_metadata",
)
_RICH_KEY_SET = frozenset(_RICH_KEYS)
_set_attr = object.__setattr__


class _PlainMessageFactory:
    """Builds ``cls(content=text, id=id)`` without re-running pydantic validation.

    A message with plain string content, a str id (every stored message has one) and
    nothing else (no name, kwargs, tool calls) always validates to the same field values:
    the defaults plus ``content`` and ``id``.
    This factory copies those values from one validated prototype (with fresh empty
    containers, so no two messages share a mutable default) and sets the same fields-set,
    extra and private state pydantic would, about 4x faster than the constructor. It
    checks itself against the real constructor once and, if anything differs (another
    pydantic or langchain-core version), builds messages the ordinary way instead.
    """

    __slots__ = ("cls", "containers", "ok", "template")

    def __init__(self, cls: type[BaseMessage]) -> None:
        self.cls = cls
        proto = cls(content="")
        self.template = dict(proto.__dict__)
        self.containers = tuple(
            (key, type(value))
            for key, value in self.template.items()
            if isinstance(value, (dict, list))
        )
        self.ok = (
            getattr(cls, "__pydantic_post_init__", None) is None
            and proto.model_fields_set == {"content"}
            and proto.__pydantic_extra__ == {}
            and proto.__pydantic_private__ is None
            and all(not self.template[key] for key, _ in self.containers)
        )
        if self.ok:
            for probe, probe_id in (("", None), ("probe text", "id-1"), (" \n[1] x\u00e9 ", "é")):
                fast = self._build(probe, probe_id)
                slow = cls(content=probe) if probe_id is None else cls(content=probe, id=probe_id)
                if not (
                    fast == slow
                    and fast.model_dump() == slow.model_dump()
                    and fast.model_fields_set == slow.model_fields_set
                    and fast.__pydantic_extra__ == slow.__pydantic_extra__
                    and fast.__pydantic_private__ == slow.__pydantic_private__
                    and type(fast) is type(slow)
                ):
                    self.ok = False
                    break

    def _build(self, content: str, message_id: str | None = None) -> BaseMessage:
        values = self.template.copy()
        values["content"] = content
        for key, factory in self.containers:
            values[key] = factory()
        message = self.cls.__new__(self.cls)
        if message_id is None:
            fields_set = {"content"}
        else:
            values["id"] = message_id
            fields_set = {"content", "id"}
        _set_attr(message, "__dict__", values)
        _set_attr(message, "__pydantic_fields_set__", fields_set)
        _set_attr(message, "__pydantic_extra__", {})
        _set_attr(message, "__pydantic_private__", None)
        return message

    def __call__(self, content: str, message_id: str | None = None) -> BaseMessage:
        if self.ok:
            return self._build(content, message_id)
        if message_id is None:
            return self.cls(content=content)
        return self.cls(content=content, id=message_id)


_factories: dict[str, _PlainMessageFactory] = {}


def _factory(role: str) -> _PlainMessageFactory:
    factory = _factories.get(role)
    if factory is None:
        factory = _factories[role] = _PlainMessageFactory(_PLAIN_CLASSES[role])
    return factory


def _builder(role: str) -> Callable[[str, str | None], BaseMessage]:
    factory = _factory(role)
    return factory._build if factory.ok else factory


def records_to_messages(records: Iterable[Mapping[str, Any]]) -> list[BaseMessage]:
    """Stored records as a prompt sends them: ``record_to_message`` of each, faster.

    Plain text records (user, assistant or system; string content; a str id or none; no
    name, kwargs, response metadata or tool calls), most of any history, take a fast path
    that skips re-validating what is known valid (see :class:`_PlainMessageFactory`);
    all others go through :func:`~ctx_memory.schema.record_to_message`, and an AI message
    loses the calls no stored result can answer (:func:`_sendable`: malformed tool calls,
    a legacy function call).
    """
    out: list[BaseMessage] = []
    append = out.append
    isdisjoint = _RICH_KEY_SET.isdisjoint
    builders: dict[str, Callable[[str, str | None], BaseMessage]] = {}
    for record in records:
        role = record.get("role")
        content = record.get("content")
        message_id = record.get("id")
        if (
            type(content) is str
            and role in _PLAIN_CLASSES
            and (message_id is None or type(message_id) is str)
            and (isdisjoint(record) or all(record.get(key) is None for key in _RICH_KEYS))
        ):
            build = builders.get(role)
            if build is None:
                build = builders[role] = _builder(role)
            append(build(content, message_id))
        else:
            append(_sendable(record_to_message(record)))
    return out


_UNSENT_KWARGS = ("function_call", "tool_calls")


def _sendable(message: BaseMessage) -> BaseMessage:
    """A stored AI message as a prompt sends it: without calls no stored result answers.

    A model's malformed tool call (``invalid_tool_calls``: arguments that are not JSON)
    and a legacy ``additional_kwargs["function_call"]`` stay in the store, lossless, but
    are not sent from it: chat APIs send both as calls that need a result (``ChatOpenAI``
    sends invalid calls as tool calls), the store never holds one (LangChain's agent
    answers an invalid call with an error result in that request only), and the stored
    ``token_count`` leaves them out. The raw ``additional_kwargs["tool_calls"]`` go with
    them (the parsed ``tool_calls``, which chat models send, stay).
    """
    if not isinstance(message, AIMessage):
        return message
    kwargs = message.additional_kwargs
    if not message.invalid_tool_calls and "function_call" not in kwargs:
        return message
    kept = {key: value for key, value in kwargs.items() if key not in _UNSENT_KWARGS}
    return message.model_copy(update={"invalid_tool_calls": [], "additional_kwargs": kept})


def attach_context(
    tail: Sequence[BaseMessage], context: str, volatile: str = ""
) -> list[BaseMessage]:
    """``tail`` with the stable layout's context attached (a copy).

    ``context`` is what belongs to the question (ranked sources, recalled turns): it goes
    before the text of the last user message. ``volatile`` is what changes with the clock
    or the page (local time, current page): it goes last. When the last message is the
    user's, both go on it, ``volatile`` first. In an agent's tool loop the question is
    followed by tool calls and their results: the question keeps its context, so each
    step's request begins with the previous one (the question and the earlier steps as
    they were sent), and ``volatile`` follows the last message as a user message of its
    own. Without a user message the context goes first, as one of its own. Empty parts
    change nothing.
    """
    out = list(tail)
    if not out:
        joined = "\n\n".join(p for p in (volatile, context) if p)
        return [HumanMessage(content=_wrapped(joined))] if joined else out
    if context:
        for i in range(len(out) - 1, -1, -1):
            if isinstance(out[i], HumanMessage):
                out = _prepended(out, i, context)
                break
        else:
            out.insert(0, HumanMessage(content=_wrapped(context)))
    if volatile:
        out.append(HumanMessage(content=_wrapped(volatile)))
    return out


def _wrapped(context: str) -> str:
    return f"{CONTEXT_OPEN}\n{context}\n{CONTEXT_CLOSE}"


def _prepended(out: list[BaseMessage], i: int, context: str) -> list[BaseMessage]:
    """``out`` with ``context`` (wrapped) before the text of ``out[i]`` (in place)."""
    if not context:
        return out
    wrapped = _wrapped(context)
    message = out[i]
    content = message.content
    if isinstance(content, str):
        new: Any = f"{wrapped}\n\n{content}" if content else wrapped
    else:
        new = [{"type": "text", "text": wrapped}, *content]
    out[i] = message.model_copy(update={"content": new})
    return out
