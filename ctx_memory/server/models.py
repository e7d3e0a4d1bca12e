"""What the HTTP service talks to: the chat model, the search retriever and agent tools.

Each comes from settings and each has a stand-in that needs no network and no API key:

* ``SERVER_CHAT_MODEL``: ``provider:model`` for LangChain's ``init_chat_model`` (e.g.
  ``openai:gpt-4o-mini``, with ``SERVER_CHAT_MODEL_KWARGS``; needs ``langchain`` and the
  provider's package), or ``fake``: :class:`DemoChatModel`, LangChain's
  ``GenericFakeChatModel`` answering from the prompt it gets.
* ``SERVER_RETRIEVER``: ``module:attr``, a LangChain retriever (an instance, a class
  built without arguments, or a function returning one), or ``fake``:
  :class:`DemoSearchRetriever` over a few fixed travel pages.
* ``SERVER_AGENT_TOOLS``: ``module:attr`` of each tool (a LangChain tool or a function)
  for the agent endpoint.

A wrong value is a :class:`~ctx_memory.errors.ConfigurationError` naming the key, raised
when the app is created.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator  # noqa: TC003 - pydantic reads the annotation
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.retrievers import BaseRetriever
from pydantic import Field
from typing_extensions import override

from ctx_memory.demo import SEARCH_RESULTS
from ctx_memory.errors import ConfigurationError
from ctx_memory.ranking import tokenize

if TYPE_CHECKING:
    from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun

    from ctx_memory.config import Settings

__all__ = [
    "FAKE",
    "DemoChatModel",
    "DemoSearchRetriever",
    "build_chat_model",
    "build_retriever",
    "build_tools",
    "load_object",
]

FAKE = "fake"
"""The value of ``SERVER_CHAT_MODEL`` / ``SERVER_RETRIEVER`` that picks the stand-in."""

_FIRST_SOURCE = re.compile(r"^\[1\] (.+)$", re.MULTILINE)


def _no_messages() -> Iterator[AIMessage | str]:
    return iter(())


class DemoChatModel(GenericFakeChatModel):
    """A chat model for the demo and tests: no network, no key, answers from its prompt.

    Its reply repeats the question and, when the prompt holds numbered sources, cites the
    first as ``[1]``; it streams word by word (``GenericFakeChatModel``'s streaming) and
    accepts ``bind_tools`` (it never calls a tool), so the agent endpoint runs on it too.

    Example:
        .. code-block:: python

            from ctx_memory.server.models import DemoChatModel

            reply = DemoChatModel().invoke("Where to?")
            assert "Where to?" in reply.text
    """

    messages: Iterator[AIMessage | str] = Field(default_factory=_no_messages)
    model_name: str = "fake"

    @property
    @override
    def _llm_type(self) -> str:
        return "ctx-memory-demo"

    @staticmethod
    def reply_to(messages: list[BaseMessage]) -> str:
        """The reply's text for a prompt (pure)."""
        question = next(
            (m.text for m in reversed(messages) if isinstance(m, HumanMessage)), ""
        ).strip()
        system = "\n".join(m.text for m in messages if isinstance(m, SystemMessage))
        text = f"(demo model, no LLM called) You asked: {question}"
        source = _FIRST_SOURCE.search(system)
        if source is not None:
            text += f" The most relevant source is [1]: {source.group(1).strip()}."
        return text

    @override
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(self.reply_to(messages), response_metadata={"model_name": "fake"})
        return ChatResult(generations=[ChatGeneration(message=message)])

    @override
    def bind_tools(self, tools: Any, **kwargs: Any) -> DemoChatModel:
        return self


class DemoSearchRetriever(BaseRetriever):
    """A search "engine" over a few fixed pages (the demo's), most query-term hits first.

    Each document's metadata holds ``title``, ``url``, ``site_name``, ``published_date``
    and ``snippet`` when the page has them: what a web-search retriever returns.

    Example:
        .. code-block:: python

            from ctx_memory.server.models import DemoSearchRetriever

            docs = DemoSearchRetriever(k=1).invoke("flexible fares")
            assert docs[0].metadata["url"] == "https://fares.example/flex"
    """

    k: int = 5

    @override
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        terms = set(tokenize(query))
        scored = []
        for index, page in enumerate(SEARCH_RESULTS):
            text = " ".join(str(page.get(k, "")) for k in ("title", "snippet", "body"))
            hits = sum(1 for term in tokenize(text) if term in terms)
            scored.append((-hits, index, page))
        scored.sort(key=lambda entry: (entry[0], entry[1]))
        return [
            Document(
                page_content=str(page["body"]),
                metadata={k: v for k, v in page.items() if k != "body"},
            )
            for _, _, page in scored[: self.k]
        ]


def load_object(path: str, key: str) -> Any:
    """The object at ``module:attr`` (``attr`` may be dotted).

    Raises:
        ConfigurationError: Names ``key``: a malformed path, a module that does not
            import (with its error's type) or a missing attribute.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        msg = f"must be 'module:attribute' (e.g. 'my_app.search:retriever'), got {path!r}"
        raise ConfigurationError(key, msg)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as e:
        msg = f"cannot import {module_name!r} ({type(e).__name__}: {e})"
        raise ConfigurationError(key, msg) from e
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            msg = f"{module_name!r} has no attribute {attr!r}"
            raise ConfigurationError(key, msg) from None
    return target


def build_chat_model(settings: Settings) -> BaseChatModel:
    """The chat model ``SERVER_CHAT_MODEL`` names (``fake``: :class:`DemoChatModel`).

    Raises:
        ConfigurationError: ``init_chat_model`` refused the name or its keyword
            arguments (the provider's package missing, an unknown provider).
    """
    name = settings.server_chat_model
    if name == FAKE:
        return DemoChatModel()
    try:
        from langchain.chat_models import init_chat_model  # noqa: PLC0415 - optional
    except ImportError as e:
        msg = (
            f"{name!r} needs LangChain's init_chat_model: install the agents extra"
            " (pip install 'ctx-memory[server,agents]') and the provider's package"
        )
        raise ConfigurationError("SERVER_CHAT_MODEL", msg) from e
    try:
        model = init_chat_model(name, **settings.server_chat_model_kwargs)
    except (ImportError, ValueError, TypeError) as e:
        msg = f"init_chat_model({name!r}) failed: {type(e).__name__}: {e}"
        raise ConfigurationError("SERVER_CHAT_MODEL", msg) from None
    if not isinstance(model, BaseChatModel):  # pragma: no cover - init_chat_model's contract
        msg = f"init_chat_model({name!r}) returned {type(model).__name__}"
        raise ConfigurationError("SERVER_CHAT_MODEL", msg)
    return model


def build_retriever(settings: Settings) -> BaseRetriever:
    """The retriever ``SERVER_RETRIEVER`` names (``fake``: :class:`DemoSearchRetriever`).

    Raises:
        ConfigurationError: The path does not load, or what it names is not a retriever
            (nor a class or function that makes one).
    """
    path = settings.server_retriever
    if path == FAKE:
        return DemoSearchRetriever(k=settings.server_retriever_k)
    target = load_object(path, "SERVER_RETRIEVER")
    if not isinstance(target, BaseRetriever) and callable(target):
        target = target()
    if not isinstance(target, BaseRetriever):
        msg = f"{path!r} is a {type(target).__name__}, not a LangChain BaseRetriever"
        raise ConfigurationError("SERVER_RETRIEVER", msg)
    return target


def build_tools(settings: Settings) -> list[Any]:
    """The agent's tools: each of ``SERVER_AGENT_TOOLS`` loaded (a tool or a function).

    Raises:
        ConfigurationError: A path does not load or names something not callable.
    """
    tools = []
    for path in settings.server_agent_tools:
        target = load_object(path, "SERVER_AGENT_TOOLS")
        if not callable(target) and not hasattr(target, "invoke"):
            msg = f"{path!r} is a {type(target).__name__}, not a tool or a function"
            raise ConfigurationError("SERVER_AGENT_TOOLS", msg)
        tools.append(target)
    return tools
