"""Write the tutorial notebooks from the cell sources below (run from the repository root).

    uv run python notebooks/_build.py

The notebooks are committed without outputs; ``tests/test_notebooks.py`` executes each one
top to bottom in a fresh kernel. Edit the cells here (or edit a notebook in Jupyter and
port the change back) so the notebooks and this file stay in step.
"""

from __future__ import annotations

import sys
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

REAL_MODEL = """
**Using a real model.** Everything above works with any LangChain chat model; only the
model object changes. For example (needs `pip install langchain-openai` and an API key,
so it is not run here):

```python
from langchain_openai import ChatOpenAI

model = ChatOpenAI(model="gpt-4o-mini")  # reads OPENAI_API_KEY
chat = ContextualChat(cm, model, max_tokens=16_000, reserve_tokens=2_000)
```

`langchain-anthropic`'s `ChatAnthropic(model="claude-...")`, or any other chat model,
slots in the same way. Token counts use tiktoken's encoding for `DEFAULT_MODEL`
(unknown models fall back to `o200k_base`).
"""


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(dedent(text).strip())


def code(text: str, *tags: str) -> nbformat.NotebookNode:
    cell = new_code_cell(dedent(text).strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


# --------------------------------------------------------------------------- 01


QUICKSTART = [
    md("""
    # ctx_memory quickstart

    One session = one JSON document: system prompt, metadata, fetched sources,
    conversation history and shared state. This notebook uses the **in-memory store**
    (the default, nothing to install) and LangChain's **fake chat model**, so it runs
    without an API key.

    You will: create a session, chat with memory through `ContextualChat`, stream a reply,
    look at what is stored, and see the session as HTML with its token budget.
    """),
    code("""
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from ctx_memory import ContextManager, ContextMode, ContextualChat, show_session

    cm = ContextManager()  # settings from settings.toml / CTX_MEMORY_* ; default STORE=memory
    cm.store.name
    """),
    md("""
    ## A session

    Sessions are created on first write. Seed 001's calls set the system prompt and the
    request metadata (mode, the page the user is on, their local time).
    """),
    code("""
    SESSION = "quickstart"
    cm.set_system_prompt(SESSION, "You are a concise travel assistant.")
    cm.update_metadata(
        SESSION,
        mode=ContextMode.THINKING,
        current_url="https://travel.example/lisbon",
        user_timezone="Europe/Lisbon",
        user_time="2026-11-21T09:30:00",
    )
    cm.get_metadata(SESSION)
    """),
    md("""
    ## Chat with memory

    `ContextualChat` is one Runnable for the whole request: it records the question,
    assembles a token-budgeted prompt (system prompt + header, sources, as much history
    as fits, the question), calls the model and records the reply with the model name,
    response time and sources used. The fake model below replays canned answers; a real
    model is a one-line swap (see the end of the notebook).
    """),
    code("""
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage("Lisbon is lovely in spring: mild, sunny and before the crowds."),
                AIMessage("You asked about the best season to visit Lisbon."),
                AIMessage("Pack light layers and comfortable shoes for the hills."),
                AIMessage("Try pastel de nata in Belem."),
            ]
        )
    )
    chat = ContextualChat(
        cm, model, max_tokens=4_000, reserve_tokens=1_000, model_name="fake-model"
    )
    config = {"configurable": {"session_id": SESSION}}

    chat.invoke("When is the best time to visit Lisbon?", config=config).content
    """),
    code("""
    chat.invoke("What did I just ask you?", config=config).content
    """),
    md("""
    The second prompt contained the first turn. You can see exactly what the model was
    sent by assembling the prompt yourself:
    """),
    code("""
    prompt = chat.assembler.assemble(SESSION, "What should I pack?")
    [(m.type, m.content[:60]) for m in prompt.messages]
    """),
    md("Streaming yields the model's chunks and stores the whole reply when the stream ends:"),
    code("""
    for chunk in chat.stream("What should I pack?", config=config):
        print(chunk.content, end="")
    """),
    md("Every method has an async twin; notebooks can `await` directly:"),
    code("""
    reply = await chat.ainvoke("Any food I must try?", config=config)
    reply.content
    """),
    md("""
    ## What is stored

    Storage keeps the full history; trimming only happens when a prompt is assembled.
    Each record keeps its role, content, timestamp, metadata and its token count, counted
    once when it was written.
    """),
    code("""
    [(r["role"], r["token_count"], r["metadata"].get("model")) for r in cm.get_history(SESSION)]
    """),
    code("""
    cm.get_formatted_messages_for_api(SESSION, last_k=2)
    """),
    code("""
    cm.get_memory_stats(SESSION)
    """),
    md("""
    ## The HTML view

    `show_session` (or `SessionView`) renders the session when it is a cell's last
    expression: metadata, sources, the conversation with roles and timestamps (long
    messages fold away) and a token-budget bar. Give it a budget to see what would fit.
    The view reads the session afresh each time the cell runs.
    """),
    code(
        """
    show_session(cm, SESSION, budget=4_000, reserve_tokens=1_000)
    """,
        "screenshot-quickstart",
    ),
    md("Its plain `repr` stays one short line and never shows content or credentials:"),
    code("""
    print(repr(show_session(cm, SESSION)))
    """),
    md("""
    ## Export and import

    A session is portable JSON. `import_session` validates the whole document before it
    writes anything. The `ctx-memory` command line does the same for files with many
    sessions (`ctx-memory export --all -o sessions.jsonl`, `ctx-memory import
    sessions.jsonl`).
    """),
    code("""
    exported = cm.export_session(SESSION)
    print(exported[:300], "...")

    with ContextManager() as other:
        other.import_session(exported, session_id="copy")
        assert other.get_history("copy") == cm.get_history(SESSION)
    """),
    md(REAL_MODEL),
    code("""
    cm.close()
    """),
]


# --------------------------------------------------------------------------- 02


SOURCES = [
    md("""
    # Sources, retrievers and prompt assembly under a budget

    A research session gathers material: web search results, the text of the page the
    user is on, documents a retriever found. ctx_memory files all of it under
    `fetched_context`, ranks it against each question (BM25) and packs the prompt so it
    never exceeds the model's budget. The report says what each section cost and what was
    left out. Runs on the in-memory store with a fake model.
    """),
    code("""
    from langchain_core.documents import Document
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.retrievers import BaseRetriever

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
    """),
    md("""
    ## Search results and page content (seed 001's integration)

    `add_search_results` takes the usual result dicts (title, snippet/body, url, site
    name, published date) and stores each once, however often the same result comes back.
    `add_web_content` stores the text scraped from the user's current page and records
    its URL as the session's `current_url`.
    """),
    code("""
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
    """),
    md("""
    ## Retrieval over what the session fetched

    `FetchedContextRetriever` is a LangChain retriever over the session's sources, ranked
    with BM25 against the query (newest first among equals). It fits anywhere a retriever
    does: chains, tools, `langchain-tests`' retriever suite.
    """),
    code("""
    retriever = FetchedContextRetriever(manager=cm, session_id=SESSION, k=2)
    for doc in retriever.invoke("cheap flights to Lisbon"):
        print(f"{doc.metadata['score']:.2f}  {doc.metadata['title']}  {doc.metadata['url']}")
    """),
    md("""
    `SourceRecordingRetriever` wraps *any* retriever (web search, a vector store) and
    files what it returns into the session, so the assembler and the HTML view can use it
    later. Here a tiny keyword search stands in for a real search API.
    """),
    code("""
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
        \"\"\"Returns the corpus documents sharing a word with the query.\"\"\"

        def _get_relevant_documents(self, query, *, run_manager):
            words = set(query.lower().split())
            return [d for d in CORPUS if words & set(d.page_content.lower().split())]


    recording = SourceRecordingRetriever(retriever=KeywordSearch(), manager=cm)
    docs = recording.invoke("trams in lisbon", config={"configurable": {"session_id": SESSION}})
    [d.metadata["title"] for d in docs], len(cm.get_fetched_context(SESSION)["web_search"])
    """),
    md("""
    ## Assembly under a budget

    A long conversation and six sources do not fit a small context. The assembler keeps
    the system prompt and the question whole, gives sources at most `sources_share` of
    the rest (each cut to `source_token_cap`, most relevant first), then fills the
    remaining room with the newest whole turns. The result never exceeds
    `max_tokens - reserve_tokens`, counted the way the chat API counts.
    """),
    code("""
    for i in range(30):
        cm.add_user_message(SESSION, f"Question {i}: what should I know about day {i}?")
        cm.add_assistant_message(
            SESSION, f"Day {i}: " + "walk the old town, try the local food and rest. " * 4,
            model="fake-model",
        )

    assembler = ContextPromptAssembler(
        cm, max_tokens=1_500, reserve_tokens=400, max_sources=4, source_token_cap=60
    )
    result = assembler.assemble(SESSION, "How do I get cheap flights to Lisbon?")
    result.report.as_dict()
    """),
    md("""
    The result renders as HTML: the budget bar (system, sources, history, question, free
    room, reserve, and on its own row what was left out), the report and the messages.
    """),
    code(
        """
    result
    """,
        "screenshot-assembly",
    ),
    md("""
    The assembler is a Runnable, so it also slots straight into a chain; the session id
    comes from the config, as with LangChain's own history-aware runnables:
    """),
    code("""
    model = GenericFakeChatModel(messages=iter([AIMessage("Book 6-8 weeks ahead [1].")]))
    chain = assembler | model
    config = {"configurable": {"session_id": SESSION}}
    chain.invoke("How do I get cheap flights to Lisbon?", config=config).content
    """),
    md("""
    The session view shows the sources with their links, site names and dates, and the
    token bar against the same budget: stored tokens far exceed it, and the overflow is
    what assembly leaves out (the oldest turns first).
    """),
    code(
        """
    show_session(cm, SESSION, budget=1_500, reserve_tokens=400, max_messages=6)
    """,
        "screenshot-session",
    ),
    md(
        REAL_MODEL.replace(
            "chat = ContextualChat(cm, model, max_tokens=16_000, reserve_tokens=2_000)",
            "chain = ContextPromptAssembler(cm, max_tokens=16_000) | model",
        )
    ),
    code("""
    cm.close()
    """),
]


# --------------------------------------------------------------------------- 03


AGENT_SETUP = """
from typing import Any

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import tool

from ctx_memory import ContextManager, show_session


class FakeToolModel(GenericFakeChatModel):
    \"\"\"LangChain's fake chat model, accepting tools and remembering what it was sent.\"\"\"

    seen: list = []

    def bind_tools(self, tools: Any, **kwargs: Any) -> "FakeToolModel":
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


@tool
def get_weather(city: str) -> str:
    \"\"\"The current weather in a city.\"\"\"
    return f"Sunny and 24°C in {city}"


def weather_call(city: str, call_id: str) -> dict:
    \"\"\"A tool call the fake model will \"decide\" to make.\"\"\"
    return {"name": "get_weather", "args": {"city": city}, "id": call_id}


cm = ContextManager()
"""

AGENTS = [
    md("""
    # Agents: `create_agent` middleware and the classic `AgentExecutor`

    Agents get a ctx_memory session two ways:

    * **LangChain 1.x `create_agent`**: `ContextMiddleware` stores every message of the run
      (the question, tool calls, tool results, the answer) and gives the model the
      session's system prompt, sources and as much stored history as fits the budget.
      Needs the `agents` extra (`pip install ctx-memory[agents]`).
    * **Classic `AgentExecutor`** (langchain-classic): `ContextMemory`, a token-budgeted
      memory class. Needs the `classic` extra.

    The models are LangChain's `GenericFakeChatModel` with scripted replies (including a
    tool call), taught to accept `bind_tools`; no API key needed.
    """),
    code(AGENT_SETUP),
    md("""
    ## `create_agent` + `ContextMiddleware`

    The session id comes from `config["configurable"]["session_id"]` (or the runtime
    context, or a checkpointer's `thread_id`).
    """),
    code("""
    from langchain.agents import create_agent

    from ctx_memory.middleware import ContextMiddleware

    SESSION = "trip-agent"
    cm.set_system_prompt(SESSION, "You are a travel agent. Use tools when they help.")
    cm.add_fetched_context(
        SESSION, "web_search", "Lisbon averages 300 days of sunshine a year.",
        url="https://climate.example/lisbon", extracted_data={"title": "Lisbon climate"},
    )

    model = FakeToolModel(
        messages=iter(
            [
                AIMessage("", tool_calls=[weather_call("Lisbon", "call-1")]),
                AIMessage("It is sunny and 24°C in Lisbon: pack light [1]."),
                AIMessage("You asked about the weather in Lisbon."),
            ]
        )
    )
    middleware = ContextMiddleware(
        cm, max_tokens=4_000, reserve_tokens=1_000, model_name="fake-agent"
    )
    agent = create_agent(model, tools=[get_weather], middleware=[middleware])
    config = {"configurable": {"session_id": SESSION}}

    result = agent.invoke({"messages": [("user", "What's the weather in Lisbon?")]}, config)
    result["messages"][-1].content
    """),
    md("""
    A new run starts with only the new question in the agent's state; the middleware
    brings the earlier turn back from the store (a checkpointer is not required):
    """),
    code("""
    result = agent.invoke({"messages": [("user", "What did I ask you before?")]}, config)
    print(result["messages"][-1].content)
    print("the model was sent:")
    for message in model.seen[-1]:
        print(f"  {message.type:>6}: {str(message.content)[:70]!r}")
    """),
    md("Every message of both runs is in the session, tool calls and results included:"),
    code("""
    [
        (r["role"], r["content"][:40], [c["name"] for c in r.get("tool_calls", [])])
        for r in cm.get_history(SESSION)
    ]
    """),
    code("""
    show_session(cm, SESSION, budget=4_000, reserve_tokens=1_000)
    """),
    md("""
    ## Classic `AgentExecutor` + `ContextMemory`

    `ContextMemory` keeps the full history in the session and loads the newest whole turns
    that fit `max_token_limit`, from token counts cached at write time.
    """),
    code("""
    from langchain_classic.agents import AgentExecutor, create_tool_calling_agent
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

    from ctx_memory.memory import ContextMemory

    memory = ContextMemory(
        manager=cm,
        session_id="classic-agent",
        max_token_limit=1_000,
        memory_key="chat_history",
        return_messages=True,
    )
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are a travel agent."),
            MessagesPlaceholder("chat_history"),
            ("human", "{input}"),
            MessagesPlaceholder("agent_scratchpad"),
        ]
    )
    classic_model = FakeToolModel(
        disable_streaming=True,  # the classic agent streams; the fake model streams text only
        messages=iter(
            [
                AIMessage("", tool_calls=[weather_call("Porto", "call-2")]),
                AIMessage("Porto is sunny today."),
                AIMessage("You asked about the weather in Porto."),
            ]
        ),
    )
    executor = AgentExecutor(
        agent=create_tool_calling_agent(classic_model, [get_weather], prompt),
        tools=[get_weather],
        memory=memory,
    )
    print(executor.invoke({"input": "Weather in Porto?"})["output"])
    print(executor.invoke({"input": "What did I ask?"})["output"])
    """),
    code("""
    memory.load_memory_variables({})["chat_history"]
    """),
    md("""
    **Using a real model.** Swap the fake model for any tool-calling chat model (not run
    here; needs `pip install langchain-openai` and an API key):

    ```python
    from langchain_openai import ChatOpenAI

    agent = create_agent(
        ChatOpenAI(model="gpt-4o-mini"),
        tools=[get_weather],
        middleware=[ContextMiddleware(cm, max_tokens=128_000, reserve_tokens=4_000)],
    )
    ```
    """),
    code("""
    cm.close()
    """),
]


# --------------------------------------------------------------------------- 04


REDIS = [
    md("""
    # Redis: the same code, switched by configuration

    The in-memory store lives and dies with one process. Redis keeps sessions across
    restarts and shares them between processes and machines; SQLite keeps them in one
    file on one machine. Switching is configuration only:

    ```toml
    # settings.toml (or CTX_MEMORY_STORE=redis, CTX_MEMORY_REDIS_URL=... in the environment)
    [ctx_memory]                             # ctx_memory's own table; top-level keys are your app's
    STORE = "redis"
    REDIS_URL = "redis://localhost:6379/0"   # rediss://user:password@host:port/db for TLS + ACL
    ```

    This notebook uses `REDIS_URL` from the environment if it is set; otherwise it starts
    a throw-away `redis-server` (it must be installed: `apt-get install redis-server`,
    `brew install redis`) on a free port in a temporary directory, and stops it at the end.
    """),
    code("""
    import atexit
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    import uuid

    import redis

    from ctx_memory import ContextManager, show_session
    from ctx_memory.config import redact_url

    REDIS_URL = os.environ.get("REDIS_URL")
    server = None
    workdir = tempfile.mkdtemp(prefix="ctx-memory-nb-")

    if REDIS_URL is None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: install it, or set REDIS_URL")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        atexit.register(server.terminate)  # even if a cell below fails
        REDIS_URL = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(REDIS_URL)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"redis-server did not start on port {port}")
        client.close()

    print("using", redact_url(REDIS_URL), "(started here)" if server else "(from REDIS_URL)")
    """),
    md("""
    ## One function, two stores

    The application code takes a `ContextManager` and never asks which store it is on.
    """),
    code("""
    def plan_trip(cm: ContextManager, session_id: str) -> dict:
        cm.set_system_prompt(session_id, "You are a travel assistant.")
        cm.update_metadata(session_id, current_url="https://airline.example/lisbon")
        cm.add_fetched_context(
            session_id, "web_search", "Non-stop JFK to LIS from $389.",
            url="https://fares.example/lis", extracted_data={"title": "Lisbon fares"},
        )
        cm.add_user_message(session_id, "Find me a cheap flight to Lisbon.")
        cm.add_assistant_message(session_id, "TAP flies from $389 [1].", model="fake-model")
        cm.update_partial_context(session_id, {"trip": {"destination": "LIS", "travellers": 2}})
        return cm.get_memory_stats(session_id)


    with ContextManager() as in_memory:  # the default store
        print(in_memory.store.name, plan_trip(in_memory, "trip-1")["total_tokens"], "tokens")
    """),
    md("""
    Now the same function on Redis, selected by configuration alone. Setting the
    environment here stands in for a deployment's settings; the key prefix keeps this
    notebook's keys apart from anything else on the server.
    """),
    code("""
    PREFIX = f"nb04-{uuid.uuid4().hex[:8]}"
    os.environ["CTX_MEMORY_STORE"] = "redis"
    os.environ["CTX_MEMORY_REDIS_URL"] = REDIS_URL
    os.environ["CTX_MEMORY_REDIS_KEY_PREFIX"] = PREFIX

    cm = ContextManager()
    print(cm.store.name, plan_trip(cm, "trip-1")["total_tokens"], "tokens")
    """),
    md("""
    ## Shared between processes

    Another process, configured the same way (it inherits this kernel's environment),
    sees the session at once: here the `ctx-memory` command line, run as a separate
    Python process.
    """),
    code("""
    def ctx_memory_cli(*args: str) -> str:
        \"\"\"Run `ctx-memory ARGS` in a new process; return what it printed.\"\"\"
        env = {**os.environ, "TTY_COMPATIBLE": "0"}  # plain text (Jupyter sets FORCE_COLOR)
        done = subprocess.run(
            [sys.executable, "-m", "ctx_memory", *args],
            capture_output=True, text=True, check=True, env=env,
        )
        return done.stdout + done.stderr


    print(ctx_memory_cli("sessions", "list", "--long"))
    print(ctx_memory_cli("show", "trip-1", "--last", "1"))
    """),
    md("""
    Writes are atomic on the server (Lua scripts), so concurrent writers never lose a
    message. Two managers stand in for two workers here:
    """),
    code("""
    from concurrent.futures import ThreadPoolExecutor

    with ContextManager() as worker_a, ContextManager() as worker_b:
        def write(i: int) -> None:
            (worker_a if i % 2 else worker_b).add_user_message("busy", f"message {i}")

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(write, range(200)))

    cm.get_memory_stats("busy")["message_count"]
    """),
    md("## The HTML view works the same on every store"),
    code("""
    show_session(cm, "trip-1", budget=8_000, reserve_tokens=1_000)
    """),
    md("""
    ## Moving sessions between stores

    `ctx-memory export --all` writes JSON Lines; `ctx-memory import` validates every
    document before writing any. Here: Redis → file → a SQLite file.
    """),
    code("""
    dump = os.path.join(workdir, "sessions.jsonl")
    sqlite_file = os.path.join(workdir, "sessions.db")
    print(ctx_memory_cli("export", "--all", "-o", dump))
    print(ctx_memory_cli("--store", "sqlite", "--sqlite-path", sqlite_file, "import", dump))
    print(ctx_memory_cli("--store", "sqlite", "--sqlite-path", sqlite_file, "sessions", "list"))
    """),
    md("## Clean up: delete this notebook's sessions, stop the server we started"),
    code("""
    for session_id in cm.list_sessions():
        cm.delete_context(session_id)
    cm.close()
    for key in ("CTX_MEMORY_STORE", "CTX_MEMORY_REDIS_URL", "CTX_MEMORY_REDIS_KEY_PREFIX"):
        os.environ.pop(key, None)

    if server is not None:
        server.terminate()
        server.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)
    "stopped" if server is not None else "left the REDIS_URL server running"
    """),
]


NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_sources_and_retrievers.ipynb": SOURCES,
    "03_agents.ipynb": AGENTS,
    "04_redis.ipynb": REDIS,
}


def build(name: str, cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell.id = f"{Path(name).stem[:2]}-{i:02d}"  # stable ids: no diff noise on rebuild
    nbformat.validate(nb)
    return nb


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        path = HERE / name
        nbformat.write(build(name, cells), path)
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    sys.exit(main())
