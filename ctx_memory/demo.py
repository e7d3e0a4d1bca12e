"""The demo behind ``ctx-memory demo``: seed 001's request flow on the configured store.

Part 1 is seed 001's request flow step by step on the manager; part 2 is the same flow as
a chat loop through LangChain: :class:`~ctx_memory.chat.ContextualChat` records each
question, assembles a token-budgeted prompt (system prompt + header, ranked sources,
history) and records the reply. It needs no API key: the replies come from LangChain's
``GenericFakeChatModel``, a scripted stand-in for an LLM.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from ctx_memory.chat import ContextualChat
from ctx_memory.prompt import ContextPromptAssembler
from ctx_memory.retrievers import FetchedContextRetriever
from ctx_memory.schema import ContextMode
from ctx_memory.web import ContextIntegration

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.manager import ContextManager

__all__ = ["run_chat_loop", "run_demo"]

SYSTEM_PROMPT = "You are a concise travel assistant. Cite sources as [n]."
SEARCH_RESULTS = [
    {
        "title": "Booking flights: a practical guide",
        "snippet": "Compare fares across airlines and book 6-8 weeks ahead.",
        "url": "https://travel.example/booking-guide",
        "body": "Compare fares across airlines, book 6-8 weeks ahead for economy, "
        "and use flexible dates to find the lowest price.",
        "site_name": "Travel Example",
        "published_date": "2026-10-02",
    },
    {
        "title": "Economy vs. flexible fares",
        "snippet": "Flexible economy fares allow free date changes.",
        "url": "https://fares.example/flex",
        "body": "Flexible economy fares cost more but allow free date changes and refunds.",
    },
]
PAGE_TEXT = "Paris (CDG) from New York (JFK): daily non-stop flights, from $420 round trip."
CHAT_TURNS = [
    (
        "Which source says when to book?",
        "The booking guide: book 6-8 weeks ahead for economy [1].",
    ),
    (
        "Is there a non-stop from JFK?",
        "Yes: daily non-stops JFK to CDG from $420 round trip [1].",
    ),
    (
        "Summarise my options in one line.",
        "Pick a flexible fare [1], book 6-8 weeks ahead [2] and take the $420 JFK non-stop.",
    ),
]


def run_demo(
    manager: ContextManager,
    *,
    session_id: str = "demo-session",
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run seed 001's flow on ``manager`` and print the document and stats.

    Returns:
        The final session document.
    """
    integration = ContextIntegration(manager)
    manager.delete_context(session_id)

    # 1. Start of the request: metadata.
    manager.set_system_prompt(session_id, SYSTEM_PROMPT)
    manager.update_metadata(
        session_id,
        mode=ContextMode.RESEARCH,
        current_url="https://airline.example/paris",
        user_timezone="America/New_York",
        user_time="2026-11-21T07:00:00",
    )
    # 2. The page the user is on, scraped by the browser extension.
    integration.add_web_content(
        {"session_id": session_id},
        PAGE_TEXT,
        "https://airline.example/paris",
        title="Flights to Paris",
    )
    # 3. The user's question, then a web search for it.
    question = "How do I book a cheap flight to Paris?"
    manager.add_user_message(session_id, question)
    integration.add_search_results(session_id, SEARCH_RESULTS)
    # 4. The model sees: system prompt, then history.
    messages = manager.get_formatted_messages_for_api(session_id)
    echo(f"Messages for the LLM API ({len(messages)}):")
    for message in messages:
        echo(f"  {message['role']:>9}: {str(message['content'])[:70]}")
    # 5. The (scripted) model answers; the reply is recorded with what produced it.
    manager.add_assistant_message(
        session_id,
        "Book 6-8 weeks ahead and compare fares [1]; a flexible fare lets you change dates [2].",
        model="scripted-demo-model",
        response_time_ms=850,
        sources_used=[r["url"] for r in SEARCH_RESULTS],
        tools_used=["web_search"],
    )
    manager.add_user_message(session_id, "And if my dates might change?")
    manager.add_assistant_message(
        session_id,
        "Choose a flexible economy fare: free date changes and refunds [2].",
        model="scripted-demo-model",
        response_time_ms=640,
        sources_used=["https://fares.example/flex"],
    )

    run_chat_loop(manager, session_id=session_id, echo=echo)

    document = manager.get_context(session_id)
    echo("\nSession document:")
    echo(json.dumps(document, indent=2, ensure_ascii=False))
    echo("\nMemory stats:")
    echo(json.dumps(manager.get_memory_stats(session_id), indent=2))
    return document


def run_chat_loop(
    manager: ContextManager,
    *,
    session_id: str = "demo-session",
    echo: Callable[[str], Any] = print,
    max_tokens: int = 560,
) -> list[AIMessage]:
    """Seed 001's flow as a LangChain chat loop with a fake chat model.

    Each turn goes through :class:`~ctx_memory.chat.ContextualChat`: the question is
    recorded, the prompt assembled within ``max_tokens`` (its report is printed), the
    fake model called and its reply recorded with model name, response time and the
    sources used. The last turn is streamed.

    Returns:
        The replies.
    """
    model = GenericFakeChatModel(messages=iter([AIMessage(reply) for _, reply in CHAT_TURNS]))
    assembler = ContextPromptAssembler(
        manager, max_tokens=max_tokens, reserve_tokens=250, source_token_cap=24
    )
    chat = ContextualChat(manager, model, assembler=assembler, model_name="fake-chat-model")
    config: Any = {"configurable": {"session_id": session_id}}
    echo(f"\nChat loop (ContextualChat + GenericFakeChatModel, {max_tokens}-token context):")
    replies: list[AIMessage] = []
    for index, (question, _) in enumerate(CHAT_TURNS):
        assembled = assembler.assemble(session_id, question)
        report = assembled.report
        echo(f"\n  user: {question}")
        if index == 0:
            echo("  system message the model gets:")
            echo("\n".join(f"    | {line}" for line in assembled.system.splitlines()))
        echo(
            f"  prompt: {report.total_tokens}/{report.budget} tokens = system "
            f"{report.system_tokens} + sources {report.sources_tokens} "
            f"({report.sources_included} in, {report.sources_truncated} cut, "
            f"{report.sources_dropped} out) + history {report.history_tokens} "
            f"({report.history_messages} messages, {report.history_left_out_messages} left out)"
            f" + question {report.question_tokens} + priming {report.priming_tokens}"
        )
        if index < len(CHAT_TURNS) - 1:
            reply = chat.invoke(question, config=config)
            echo(f"  assistant: {reply.content}")
        else:
            parts = [str(chunk.content) for chunk in chat.stream(question, config=config)]
            echo(f"  assistant (streamed in {len(parts)} chunks): {''.join(parts)}")
            reply = AIMessage("".join(parts))
        replies.append(reply)
    last = manager.get_history(session_id, last_k=1)[0]["metadata"]
    echo(f"\n  recorded with the last reply: {last}")
    retriever = FetchedContextRetriever(manager=manager, session_id=session_id, k=2)
    echo("\n  FetchedContextRetriever('flexible fares', k=2):")
    for doc in retriever.invoke("flexible fares"):
        echo(f"    {doc.metadata['score']:.2f}  {doc.metadata['title']}  {doc.metadata['url']}")
    return replies
