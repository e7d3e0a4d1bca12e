# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sources, retrievers and prompt assembly under a budget
#
# A research session gathers material: web search results, the text of the page the
# user is on, documents a retriever found. ctx_memory files all of it under
# `fetched_context`, ranks it against each question (BM25) and packs the prompt so it
# never exceeds the model's budget. The report says what each section cost and what was
# left out. Runs on the in-memory store with a fake model.

# %%
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig

from ctx_memory import (
    ContextIntegration,
    ContextManager,
    ContextMode,
    ContextPromptAssembler,
    FetchedContextRetriever,
    SourceRecordingRetriever,
    show_session,
)

cm = ContextManager()
integration = ContextIntegration(cm)
SESSION = "research"
cm.set_system_prompt(SESSION, "You are a travel researcher. Cite sources as [n].")
cm.update_metadata(SESSION, mode=ContextMode.RESEARCH)

# %% [markdown]
# ## Search results and page content (seed 001's integration)
#
# `add_search_results` takes the usual result dicts (title, snippet/body, url, site
# name, published date) and stores each once, however often the same result comes back.
# `add_web_content` stores the text scraped from the user's current page and records
# its URL as the session's `current_url`.

# %%
results = [
    {
        "title": "Booking flights: a practical guide",
        "url": "https://travel.example/booking-guide",
        "snippet": "Compare fares and book 6-8 weeks ahead.",
        "body": "Compare fares across airlines and book economy 6-8 weeks ahead. "
        "Flexible dates often save 20% or more.",
        "site_name": "Travel Example",
        "published_date": "2026-10-02",
    },
    {
        "title": "Lisbon in spring",
        "url": "https://city.example/lisbon-spring",
        "body": "April and May bring 20°C days, jacaranda blossom and fewer crowds.",
        "site_name": "City Guides",
    },
    {
        "title": "Rome hotel prices by month",
        "url": "https://rome.example/hotels",
        "body": "Rome hotels are cheapest in January and February.",
    },
]
print(integration.add_search_results(SESSION, results), "new results")
print(integration.add_search_results(SESSION, results), "new results the second time")

integration.add_web_content(
    session_id=SESSION,
    text_content="TAP Air Portugal: New York (JFK) to Lisbon (LIS), daily non-stop, from $389.",
    current_url="https://airline.example/lisbon",
    title="Flights to Lisbon",
)
{kind: len(items) for kind, items in cm.get_fetched_context(SESSION).items()}

# %% [markdown]
# ## Retrieval over what the session fetched
#
# `FetchedContextRetriever` is a LangChain retriever over the session's sources, ranked
# with BM25 against the query (newest first among equals). It fits anywhere a retriever
# does: chains, tools, `langchain-tests`' retriever suite.

# %%
retriever = FetchedContextRetriever(manager=cm, session_id=SESSION, k=2)
for doc in retriever.invoke("cheap flights to Lisbon"):
    print(f"{doc.metadata['score']:.2f}  {doc.metadata['title']}  {doc.metadata['url']}")

# %% [markdown]
# `SourceRecordingRetriever` wraps *any* retriever (web search, a vector store) and
# files what it returns into the session, so the assembler and the HTML view can use it
# later. Here a tiny keyword search stands in for a real search API.

# %%
CORPUS = [
    Document(
        "Lisbon's trams climb steep hills; tram 28 passes most sights.",
        metadata={"url": "https://transit.example/lisbon-trams", "title": "Lisbon trams"},
    ),
    Document(
        "Porto is a three-hour train ride from Lisbon.",
        metadata={"url": "https://rail.example/porto", "title": "Lisbon to Porto by train"},
    ),
]


class KeywordSearch(BaseRetriever):
    """Returns the corpus documents sharing a word with the query."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        words = set(query.lower().split())
        return [d for d in CORPUS if words & set(d.page_content.lower().split())]


recording = SourceRecordingRetriever(retriever=KeywordSearch(), manager=cm)
docs = recording.invoke("trams in lisbon", config={"configurable": {"session_id": SESSION}})
[d.metadata["title"] for d in docs], len(cm.get_fetched_context(SESSION)["web_search"])

# %% [markdown]
# ## Assembly under a budget
#
# A long conversation and six sources do not fit a small context. The assembler keeps
# the system prompt and the question whole, gives sources at most `sources_share` of
# the rest (each cut to `source_token_cap`, most relevant first), then fills the
# remaining room with the newest whole turns. The result never exceeds
# `max_tokens - reserve_tokens`, counted the way the chat API counts.

# %%
for i in range(30):
    cm.add_user_message(SESSION, f"Question {i}: what should I know about day {i}?")
    cm.add_assistant_message(
        SESSION,
        f"Day {i}: " + "walk the old town, try the local food and rest. " * 4,
        model="fake-model",
    )

assembler = ContextPromptAssembler(
    cm, max_tokens=1_500, reserve_tokens=400, max_sources=4, source_token_cap=60
)
result = assembler.assemble(SESSION, "How do I get cheap flights to Lisbon?")
result.report.as_dict()

# %% [markdown]
# The result renders as HTML: the budget bar (system, sources, history, question, free
# room, reserve, and on its own row what was left out), the report and the messages.

# %% tags=["screenshot-assembly"]
result

# %% [markdown]
# The assembler is a Runnable, so it also slots straight into a chain; the session id
# comes from the config, as with LangChain's own history-aware runnables:

# %%
model = GenericFakeChatModel(messages=iter([AIMessage("Book 6-8 weeks ahead [1].")]))
chain = assembler | model
config: RunnableConfig = {"configurable": {"session_id": SESSION}}
chain.invoke("How do I get cheap flights to Lisbon?", config=config).content

# %% [markdown]
# The session view shows the sources with their links, site names and dates, and the
# token bar against the same budget: stored tokens far exceed it, and the overflow is
# what assembly leaves out (the oldest turns first).

# %% tags=["screenshot-session"]
show_session(cm, SESSION, budget=1_500, reserve_tokens=400, max_messages=6)

# %% [markdown]
# **Using a real model.** Everything above works with any LangChain chat model; only the
# model object changes. For example (needs `pip install langchain-openai` and an API key,
# so it is not run here):
#
# ```python
# from langchain_openai import ChatOpenAI
#
# model = ChatOpenAI(model="gpt-4o-mini")  # reads OPENAI_API_KEY
# chain = ContextPromptAssembler(cm, max_tokens=16_000) | model
# ```
#
# `langchain-anthropic`'s `ChatAnthropic(model="claude-...")`, or any other chat model,
# slots in the same way. Token counts use tiktoken's encoding for `DEFAULT_MODEL`
# (unknown models fall back to `o200k_base`).

# %%
cm.close()
