# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # ctx_memory quickstart
#
# One session = one JSON document: system prompt, metadata, fetched sources,
# conversation history and shared state. This notebook uses the **in-memory store**
# (the default, nothing to install) and LangChain's **fake chat model**, so it runs
# without an API key.
#
# You will: create a session, chat with memory through `ContextualChat`, stream a reply,
# look at what is stored, and see the session as HTML with its token budget.

# %%
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig

from ctx_memory import ContextManager, ContextMode, ContextualChat, show_session

cm = ContextManager()  # settings from settings.toml / CTX_MEMORY_* ; default STORE=memory
cm.store.name

# %% [markdown]
# ## A session
#
# Sessions are created on first write. Seed 001's calls set the system prompt and the
# request metadata (mode, the page the user is on, their local time).

# %%
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

# %% [markdown]
# ## Chat with memory
#
# `ContextualChat` is one Runnable for the whole request: it assembles a token-budgeted
# prompt (system prompt + header, sources, as much history as fits, the question), calls
# the model, then records the question and the reply (with the model name, response time
# and sources used) in one write, so a failed call records nothing. The fake model
# below replays canned answers; a real model is a one-line swap (see the end of the
# notebook).

# %%
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
chat = ContextualChat(cm, model, max_tokens=4_000, reserve_tokens=1_000, model_name="fake-model")
config: RunnableConfig = {"configurable": {"session_id": SESSION}}

chat.invoke("When is the best time to visit Lisbon?", config=config).content

# %%
chat.invoke("What did I just ask you?", config=config).content

# %% [markdown]
# The second prompt contained the first turn. You can see exactly what the model was
# sent by assembling the prompt yourself:

# %%
prompt = chat.assembler.assemble(SESSION, "What should I pack?")
[(m.type, m.content[:60]) for m in prompt.messages]

# %% [markdown]
# Streaming yields the model's chunks and stores the whole reply when the stream ends:

# %%
for chunk in chat.stream("What should I pack?", config=config):
    print(chunk.content, end="")

# %% [markdown]
# Every method has an async twin; notebooks can `await` directly:

# %%
reply = await chat.ainvoke("Any food I must try?", config=config)
reply.content

# %% [markdown]
# ## What is stored
#
# Storage keeps the full history; trimming only happens when a prompt is assembled.
# Each record keeps its role, content, timestamp, metadata and its token count, counted
# once when it was written.

# %%
[(r["role"], r["token_count"], r["metadata"].get("model")) for r in cm.get_history(SESSION)]

# %%
cm.get_formatted_messages_for_api(SESSION, last_k=2)

# %%
cm.get_memory_stats(SESSION)

# %% [markdown]
# ## The HTML view
#
# `show_session` (or `SessionView`) renders the session when it is a cell's last
# expression: metadata, sources, the conversation with roles and timestamps (long
# messages fold away) and a token-budget bar. Give it a budget to see what would fit.
# The view reads the session afresh each time the cell runs.

# %% tags=["screenshot-quickstart"]
show_session(cm, SESSION, budget=4_000, reserve_tokens=1_000)

# %% [markdown]
# Its plain `repr` stays one short line and never shows content or credentials:

# %%
print(repr(show_session(cm, SESSION)))

# %% [markdown]
# ## Export and import
#
# A session is portable JSON. `import_session` validates the whole document before it
# writes anything. The `ctx-memory` command line does the same for files with many
# sessions (`ctx-memory export --all -o sessions.jsonl`, `ctx-memory import
# sessions.jsonl`).

# %%
exported = cm.export_session(SESSION)
print(exported[:300], "...")

with ContextManager() as other:
    other.import_session(exported, session_id="copy")
    assert other.get_history("copy") == cm.get_history(SESSION)

# %% [markdown]
# **Using a real model.** Everything above works with any LangChain chat model; only the
# model object changes. For example (needs `pip install langchain-openai` and an API key,
# so it is not run here):
#
# ```python
# from langchain_openai import ChatOpenAI
#
# model = ChatOpenAI(model="gpt-4o-mini")  # reads OPENAI_API_KEY
# chat = ContextualChat(cm, model, max_tokens=16_000, reserve_tokens=2_000)
# ```
#
# `langchain-anthropic`'s `ChatAnthropic(model="claude-...")`, or any other chat model,
# slots in the same way. Token counts use tiktoken's encoding for `DEFAULT_MODEL`
# (unknown models fall back to `o200k_base`).

# %%
cm.close()
