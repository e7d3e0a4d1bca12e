"""What ContextualChat gives back beyond the model's message (issue 9, item 7).

``response_metadata["ctx_memory"]`` on the reply (and on a stream's final chunk): the
numbered sources of the prompt, the ones the reply cites, the budget report; the same
report as the output of the assembly's child run, seen by LangChain callbacks; the
prompt sized to the chat model's ``profile["max_input_tokens"]``. Real LangChain fake
chat models, callback handlers and runnables, sync and async.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest
from adapter_fakes import fake_model
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    message_chunk_to_message,
)
from langchain_core.runnables import RunnableGenerator

from ctx_memory import (
    BudgetExceededError,
    ContextPromptAssembler,
    ContextualChat,
    TokenCounter,
    ValidationError,
)
from ctx_memory.analytics import Aggregator
from ctx_memory.chat import METADATA_KEY, cited_sources, reply_metadata

if TYPE_CHECKING:
    from uuid import UUID

CONFIG = {"configurable": {"session_id": "s1"}}
MODES = ["invoke", "ainvoke", "stream", "astream", "batch", "abatch"]
REPORT_KEYS = {
    "budget",
    "max_tokens",
    "reserve_tokens",
    "total_tokens",
    "remaining_tokens",
    "system_tokens",
    "sources_tokens",
    "history_tokens",
    "question_tokens",
    "priming_tokens",
    "sources_included",
    "sources_truncated",
    "sources_dropped",
    "history_messages",
    "history_left_out_messages",
    "history_left_out_tokens",
    "history_repaired_messages",
    "encoding",
    "recalled",
    "recall_tokens",
    "window_budget",
    "stable_prefix_tokens",
    "layout",
}


class SeeingModel(GenericFakeChatModel):
    """GenericFakeChatModel that keeps the prompts it was sent (it streams word by word)."""

    seen: list[list[BaseMessage]] = []  # noqa: RUF012 - replaced per instance below

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        object.__setattr__(self, "seen", [])

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def seeing(*replies: str) -> SeeingModel:
    return SeeingModel(messages=iter([AIMessage(r) for r in replies]))


class ProfiledModel(GenericFakeChatModel):
    """A fake chat model declaring a profile, the way partner packages do."""

    def _resolve_model_profile(self) -> Any:
        return {"max_input_tokens": 600, "max_output_tokens": 200, "tool_calling": True}


async def ask(
    chat: Any, mode: str, question: Any, config: Any = CONFIG
) -> tuple[AIMessage, list[AIMessage]]:
    """The reply through one entry point, and the chunks when streamed."""
    if mode == "invoke":
        return chat.invoke(question, config=config), []
    if mode == "ainvoke":
        return await chat.ainvoke(question, config=config), []
    if mode == "batch":
        return chat.batch([question], config=config)[0], []
    if mode == "abatch":
        return (await chat.abatch([question], config=config))[0], []
    if mode == "stream":
        chunks = list(chat.stream(question, config=config))
    else:
        chunks = [c async for c in chat.astream(question, config=config)]
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    return message_chunk_to_message(whole), chunks  # type: ignore[return-value]


def headings(system: str) -> dict[int, str]:
    """``{n: heading line}`` of the numbered sources in a system message."""
    return {int(m[1]): m[0] for m in re.finditer(r"^\[(\d+)\] .*$", system, flags=re.M)}


# --------------------------------------------------------------------------- the reply


@pytest.mark.parametrize("mode", MODES)
async def test_the_reply_says_which_sources_were_in_the_prompt_and_which_it_cites(seeded, mode):
    model = seeing("Non-stop from $420 [2]; book 6-8 weeks ahead [1][2]. See [2024] and [7].")
    chat = ContextualChat(seeded, model, max_tokens=3000, reserve_tokens=500)
    question = "When should I book cheap Paris flights?"
    expected = ContextPromptAssembler(seeded, max_tokens=3000, reserve_tokens=500).assemble(
        "s1", question
    )

    reply, _ = await ask(chat, mode, question)

    ours = reply.response_metadata[METADATA_KEY]
    assert set(ours) == {"session_id", "sources_used", "cited", "report"}
    assert ours["session_id"] == "s1"
    # The numbers are the prompt's: each [n] heading the model saw names that title and URL.
    shown = headings(model.seen[0][0].text)
    assert [s["n"] for s in ours["sources_used"]] == sorted(shown) == [1, 2, 3]
    for source in ours["sources_used"]:
        assert shown[source["n"]].startswith(f"[{source['n']}] {source['title']} - {source['url']}")
    by_url = {s["url"]: s for s in ours["sources_used"]}
    assert by_url["https://paris.example/flights"]["title"] == "Paris flights"
    assert by_url["https://airline.example/paris"]["source_type"] == "js_scraping"
    assert by_url["https://rome.example"]["source_type"] == "web_search"
    # Cited: [1] and [2], once each; [2024] and [7] are no source of this prompt.
    assert ours["cited"] == [1, 2]
    # The budget report is the assembler's, for the very prompt the model was sent.
    report = ours["report"]
    assert set(report) == REPORT_KEYS
    assert report == {
        k: v for k, v in expected.report.as_dict().items() if k not in {"session_id", "source_urls"}
    }
    assert report["budget"] == 2500
    assert report["total_tokens"] == TokenCounter().count_chat(model.seen[0])
    assert report["total_tokens"] == sum(
        report[f"{part}_tokens"] for part in ("system", "sources", "history", "question", "priming")
    )
    assert report["sources_included"] == 3
    assert report["history_messages"] == 4
    assert report["history_left_out_messages"] == 0


def without_annotation(message):
    """``message`` without ``response_metadata["ctx_memory"]``."""
    meta = {k: v for k, v in message.response_metadata.items() if k != METADATA_KEY}
    return message.model_copy(update={"response_metadata": meta})


@pytest.mark.parametrize("mode", MODES)
async def test_the_stored_reply_is_the_returned_one(seeded, mode):
    chat = ContextualChat(seeded, seeing("Book early [1]."), max_tokens=3000)
    reply, _ = await ask(chat, mode, "When?")
    stored = seeded.get_messages("s1")[-1]
    assert stored == without_annotation(reply)  # the model's message, whole
    record = seeded.get_history("s1")[-1]
    assert METADATA_KEY not in record.get("response_metadata", {})
    # The record's own metadata: the sources' URLs in order and the cited numbers.
    urls = [s["url"] for s in reply.response_metadata[METADATA_KEY]["sources_used"]]
    assert record["metadata"]["sources_used"] == urls
    assert record["metadata"]["cited"] == reply.response_metadata[METADATA_KEY]["cited"] == [1]
    # One turn, question and reply in one write, as before.
    assert [r["role"] for r in seeded.get_history("s1")[-3:]] == ["assistant", "user", "assistant"]
    assert seeded.get_history("s1")[-2]["metadata"] == {}


def test_the_models_own_response_metadata_is_kept(manager):
    reply = AIMessage("Done.", response_metadata={"model_name": "gpt-x", "finish_reason": "stop"})
    chat = ContextualChat(manager, GenericFakeChatModel(messages=iter([reply])), session_id="s1")
    returned = chat.invoke("Do it.")
    assert returned.response_metadata["model_name"] == "gpt-x"
    assert returned.response_metadata["finish_reason"] == "stop"
    assert returned.response_metadata[METADATA_KEY]["sources_used"] == []
    assert returned.response_metadata[METADATA_KEY]["cited"] == []


def test_a_tool_call_reply_cites_nothing_and_still_reports(seeded):
    call = AIMessage("", tool_calls=[{"name": "search", "args": {"q": "[1]"}, "id": "c1"}])
    chat = ContextualChat(seeded, fake_model(call), max_tokens=3000)
    ours = chat.invoke("Search it", config=CONFIG).response_metadata[METADATA_KEY]
    assert ours["cited"] == []
    assert len(ours["sources_used"]) == 3


def test_sources_left_out_are_counted_not_listed(seeded):
    chat = ContextualChat(seeded, seeing("ok [1]"), max_tokens=3000, max_sources=1)
    ours = chat.invoke("Paris flights", config=CONFIG).response_metadata[METADATA_KEY]
    assert [s["n"] for s in ours["sources_used"]] == [1]
    assert ours["report"]["sources_included"] == 1
    assert ours["report"]["sources_dropped"] == 2


def test_a_source_without_url_or_title(manager):
    manager.add_fetched_context("s1", "notes", "The user prefers trains.")
    chat = ContextualChat(manager, seeing("Trains [1]."), session_id="s1")
    [source] = chat.invoke("How do I travel?").response_metadata[METADATA_KEY]["sources_used"]
    assert source == {"n": 1, "url": None, "title": "Untitled", "source_type": "notes"}


def test_a_source_without_url_is_stored_as_none_not_its_title(manager):
    """Stored ``sources_used`` held headings ("Untitled") that analytics counted as URLs."""
    manager.add_fetched_context("s1", "notes", "The user prefers trains.")
    manager.add_fetched_context("s1", "notes", "The user hates buses.")
    manager.add_fetched_context(
        "s1", "web_search", "Trains to Lyon leave hourly.", url="https://rail.example/lyon"
    )
    chat = ContextualChat(manager, seeing("Trains [1][2][3]."), session_id="s1")
    shown = chat.invoke("How do I travel by train?").response_metadata[METADATA_KEY]
    stored = manager.get_history("s1")[-1]["metadata"]
    assert stored["sources_used"] == [s["url"] for s in shown["sources_used"]]
    assert sorted(stored["sources_used"], key=str) == [None, None, "https://rail.example/lyon"]
    assert stored["cited"] == [1, 2, 3]
    aggregator = Aggregator()
    aggregator.add(manager.get_context("s1"))
    sources = aggregator.report().sources
    assert (sources.fetched_urls, sources.used_urls, sources.cited_urls) == (1, 1, 1)


def test_batch_over_sessions_reports_each_session(seeded):
    chat = ContextualChat(seeded, seeing("a [1]", "b [1]"), max_tokens=3000)
    replies = chat.batch(
        [{"question": "paris", "session_id": "s1"}, {"question": "x", "session_id": "empty"}]
    )
    first, second = (r.response_metadata[METADATA_KEY] for r in replies)
    assert (first["session_id"], len(first["sources_used"]), first["cited"]) == ("s1", 3, [1])
    assert (second["session_id"], second["sources_used"], second["cited"]) == ("empty", [], [])


# --------------------------------------------------------------------------- streams


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_a_stream_carries_the_metadata_on_its_final_chunk_only(seeded, mode):
    chat = ContextualChat(seeded, seeing("Book six weeks ahead [1]."), max_tokens=3000)
    whole, chunks = await ask(chat, mode, "When?")
    assert len(chunks) > 3
    assert [METADATA_KEY in c.response_metadata for c in chunks] == [False] * (len(chunks) - 1) + [
        True
    ]
    assert [c.chunk_position for c in chunks] == [None] * (len(chunks) - 1) + ["last"]
    assert whole.content == "Book six weeks ahead [1]."
    assert whole.response_metadata[METADATA_KEY]["cited"] == [1]
    # Adding the chunks up gives the reply as stored, plus the annotation.
    assert without_annotation(whole) == seeded.get_messages("s1")[-1]


def test_the_turn_is_recorded_before_the_final_chunk_is_yielded(manager):
    chat = ContextualChat(manager, seeing("one two"), session_id="s1")
    seen_stored: list[int] = []
    for chunk in chat.stream("q"):
        seen_stored.append(len(manager.get_history("s1")))
        if chunk.chunk_position == "last":
            break  # a consumer that stops at the last chunk: the turn is already there
    assert seen_stored == [0, 0, 2]
    assert [r["content"] for r in manager.get_history("s1")] == ["q", "one two"]


async def test_a_stream_cut_before_its_final_chunk_records_nothing(manager):
    chat = ContextualChat(manager, seeing("one two three"), session_id="s1")
    async for chunk in chat.astream("q"):
        assert METADATA_KEY not in chunk.response_metadata
        if chunk.content == "two":
            break
    assert manager.get_history("s1") == []


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_a_model_that_does_not_stream_yields_one_annotated_message(seeded, mode):
    chat = ContextualChat(seeded, fake_model("Whole [3]."), max_tokens=3000)  # disable_streaming
    whole, chunks = await ask(chat, mode, "Which flight?")
    assert len(chunks) == 1
    assert chunks[0].response_metadata[METADATA_KEY]["cited"] == [3]
    assert without_annotation(whole) == seeded.get_messages("s1")[-1]


def test_a_whole_message_stream_is_recorded_when_its_only_item_arrives(manager):
    chat = ContextualChat(manager, fake_model("All at once."), session_id="s1")
    for message in chat.stream("q"):
        # The only item is the final one: the turn is recorded before it is yielded.
        question, reply = manager.get_messages("s1")
        assert (question.content, reply) == ("q", without_annotation(message))
        break


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_chunks_without_a_final_mark_get_an_empty_final_chunk(manager, mode):
    def words(_: Any) -> Any:
        yield from (AIMessageChunk(content=w) for w in ("a ", "b ", "[1]"))

    async def awords(_: Any) -> Any:
        for word in ("a ", "b ", "[1]"):
            yield AIMessageChunk(content=word)

    manager.add_fetched_context("s1", "web_search", "a b", url="https://ab.example")
    chat = ContextualChat(manager, RunnableGenerator(words, awords), session_id="s1")
    whole, chunks = await ask(chat, mode, "q")
    assert [c.content for c in chunks] == ["a ", "b ", "[1]", ""]
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].response_metadata[METADATA_KEY]["cited"] == [1]
    assert without_annotation(whole) == manager.get_messages("s1")[-1]


# --------------------------------------------------------------------------- traces


class Runs(BaseCallbackHandler):
    """Every chain run's start (name, type, parent, metadata), end (outputs) and error."""

    def __init__(self) -> None:
        self.runs: dict[UUID, dict[str, Any]] = {}

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.runs[run_id] = {
            "name": kwargs.get("name"),
            "run_type": kwargs.get("run_type"),
            "parent": kwargs.get("parent_run_id"),
            "metadata": kwargs.get("metadata") or {},
            "inputs": inputs,
        }

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.runs[run_id]["outputs"] = outputs

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.runs[run_id]["error"] = error

    def named(self, name: str) -> tuple[UUID, dict[str, Any]]:
        [found] = [(run_id, run) for run_id, run in self.runs.items() if run["name"] == name]
        return found


class AsyncRuns(AsyncCallbackHandler, Runs):
    """The same, as an async handler (its methods awaited on the async paths)."""

    async def on_chain_start(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        Runs.on_chain_start(self, *args, **kwargs)

    async def on_chain_end(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        Runs.on_chain_end(self, *args, **kwargs)

    async def on_chain_error(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        Runs.on_chain_error(self, *args, **kwargs)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("handler_type", [Runs, AsyncRuns])
async def test_the_assembly_is_a_child_run_whose_output_is_the_report(seeded, mode, handler_type):
    handler = handler_type()
    config = {**CONFIG, "callbacks": [handler], "metadata": {"user": "u-1"}}
    chat = ContextualChat(seeded, seeing("Six weeks ahead [2]."), max_tokens=3000)
    reply, _ = await ask(chat, mode, "When?", config)
    ours = reply.response_metadata[METADATA_KEY]

    chat_id, chat_run = handler.named("ContextualChat")
    _, assembly = handler.named("ContextPromptAssembler")
    assert assembly["parent"] == chat_id
    assert assembly["run_type"] == "prompt"
    assert assembly["metadata"]["user"] == "u-1"  # the run's metadata is inherited
    assert assembly["inputs"] == {"question": "When?", "session_id": "s1"}
    # Its output is the reply's metadata less what only the reply can say.
    assert assembly["outputs"] == {k: v for k, v in ours.items() if k != "cited"}
    # The chat run's own output is the reply (for a stream, the chunks added up): with it.
    output = chat_run["outputs"]
    assert output.response_metadata[METADATA_KEY] == ours


@pytest.mark.parametrize("handler_type", [Runs, AsyncRuns])
async def test_an_over_budget_assembly_ends_its_child_run_with_the_error(manager, handler_type):
    handler = handler_type()
    chat = ContextualChat(manager, seeing("never"), max_tokens=60, reserve_tokens=0)
    config = {**CONFIG, "callbacks": [handler]}
    with pytest.raises(BudgetExceededError):
        await chat.ainvoke("word " * 200, config=config)
    _, assembly = handler.named("ContextPromptAssembler")
    assert isinstance(assembly["error"], BudgetExceededError)
    assert "outputs" not in assembly


async def test_astream_events_show_the_report(seeded):
    chat = ContextualChat(seeded, seeing("Early [1]."), max_tokens=3000)
    ends = [
        event
        async for event in chat.astream_events("When?", config=CONFIG, version="v2")
        if event["event"] == "on_prompt_end"
    ]
    [end] = ends
    assert end["name"] == "ContextPromptAssembler"
    assert end["data"]["output"]["report"]["sources_included"] == 3


# --------------------------------------------------------------------------- profile


def test_the_models_profile_sizes_the_prompt(manager):
    for i in range(60):
        manager.add_user_message("s1", f"Earlier question number {i} about trains and fares")
        manager.add_assistant_message("s1", f"Earlier answer number {i} about trains and fares")
    model = ProfiledModel(messages=iter([AIMessage("ok"), AIMessage("ok")]))
    assert model.profile is not None
    assert model.profile["max_input_tokens"] == 600
    chat = ContextualChat(manager, model, reserve_tokens=100, session_id="s1")
    assert chat.assembler.max_tokens == 600
    report = chat.invoke("q").response_metadata[METADATA_KEY]["report"]
    assert (report["max_tokens"], report["budget"]) == (600, 500)
    assert report["total_tokens"] <= 500
    assert report["history_left_out_messages"] > 0
    # An explicit max_tokens wins over the profile.
    assert ContextualChat(manager, model, max_tokens=5000).assembler.max_tokens == 5000


async def test_the_profile_is_read_through_retries_and_bindings(manager):
    model = ProfiledModel(messages=iter([AIMessage("a"), AIMessage("b")]))
    retrying = ContextualChat(manager, model.with_retry(), reserve_tokens=100, session_id="s1")
    bound = ContextualChat(manager, model.bind(stop=["x"]), reserve_tokens=100, session_id="s1")
    assert retrying.assembler.max_tokens == bound.assembler.max_tokens == 600
    reply = await retrying.ainvoke("q")
    assert reply.response_metadata[METADATA_KEY]["report"]["max_tokens"] == 600


def test_without_a_profile_the_default_stays(manager):
    assert GenericFakeChatModel(messages=iter([])).profile is None
    assert ContextualChat(manager, seeing()).assembler.max_tokens == 8000
    no_window = GenericFakeChatModel(messages=iter([]), profile={"tool_calling": True})
    assert ContextualChat(manager, no_window).assembler.max_tokens == 8000
    # A given assembler is used as it is.
    assembler = ContextPromptAssembler(manager, max_tokens=3000)
    model = ProfiledModel(messages=iter([]))
    assert ContextualChat(manager, model, assembler=assembler).assembler.max_tokens == 3000


def test_a_profile_smaller_than_the_reserve_says_where_the_size_came_from(manager):
    model = ProfiledModel(messages=iter([]))  # 600 input tokens, default reserve 1000
    with pytest.raises(ValidationError, match=r"profile\['max_input_tokens'\]"):
        ContextualChat(manager, model)


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("text", "count", "cited"),
    [
        ("No citation.", 3, []),
        ("Book early [2]. Really [2]!", 3, [2]),
        ("Both [3][1] and [1, 2].", 3, [1, 2, 3]),
        ("A range [1-3], en dash [2\u20133], semicolons [1; 3].", 4, [1, 2, 3]),
        ("Out of range [0] [4] [2024] [1-99999999].", 3, []),
        ("Not a citation: [a], [1a], [ 1 ], (1).", 3, []),
        ("[1](https://x.example) as a markdown link", 1, [1]),
        ("Anything [1] without sources.", 0, []),
    ],
)
def test_cited_sources(text, count, cited):
    assert cited_sources(text, count) == cited


def test_reply_metadata_is_json_native(seeded):
    prompt = ContextPromptAssembler(seeded, max_tokens=3000).assemble("s1", "paris")
    ours = reply_metadata(prompt, AIMessage([{"type": "text", "text": "See [1]."}]))
    assert json.loads(json.dumps(ours)) == ours
    assert ours["cited"] == [1]
    assert "cited" not in reply_metadata(prompt)
    assert [s["n"] for s in prompt.sources_used()] == [1, 2, 3]
