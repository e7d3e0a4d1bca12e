# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Long sessions: recall, cache-stable prompts and compaction
#
# A session that outgrows the model's context usually loses its beginning: the prompt keeps
# the newest turns that fit. ctx_memory keeps every message and decides per request what to
# send, inside an exact token budget:
#
# 1. **recall** brings back the older turns the question is about, with a report of why;
# 2. the **stable layout** keeps the start of consecutive prompts identical, so the
#    provider's prompt cache can serve it;
# 3. **compaction** clears old tool outputs and summarises old turns, as data in the
#    session: nothing stored is changed, and everything cleared can be brought back.
#
# In-memory store, no API key.

# %%
from langchain_core.messages import AIMessage, ToolMessage

from ctx_memory import ContextManager, ContextPromptAssembler
from ctx_memory.recall import search_history

cm = ContextManager()
SESSION = "trip-planning"
cm.set_system_prompt(SESSION, "You are a concise travel assistant.")

cm.add_user_message(SESSION, "My passport number is X1234567, keep it for the bookings.")
cm.add_assistant_message(SESSION, "Saved: passport X1234567.")
for day in range(150):
    cm.add_user_message(SESSION, f"Day {day}: what is the weather forecast for the coast?")
    cm.add_assistant_message(SESSION, f"Day {day}: sunny spells, 24 C, light wind from the west.")
cm.get_metadata(SESSION)["message_count"], cm.get_metadata(SESSION)["token_count"]

# %% [markdown]
# ## Recency alone forgets
#
# With `recall_share=0.0` the assembler keeps the newest turns that fit 2,000 tokens. The
# passport number, 300 messages back, is not in the prompt:

# %%
QUESTION = "Which passport number should I use for the hotel?"
recency = ContextPromptAssembler(cm, max_tokens=2000, reserve_tokens=0, recall_share=0.0)
prompt = recency.assemble(SESSION, QUESTION)
assert not any("X1234567" in m.text for m in prompt.messages)
prompt.report.history_messages, prompt.report.history_left_out_messages

# %% [markdown]
# ## Recall: nothing out of reach, inside the budget
#
# With the default `recall_share=0.5`, half of the history budget keeps the newest turns and
# the other half goes to the turns that best match the question (BM25 over the whole
# session, kept up to date as messages are written). Recalled turns come whole, in their
# order, with a marker for the gap; the report says what was recalled and why:

# %%
assembler = ContextPromptAssembler(cm, max_tokens=2000, reserve_tokens=0)
prompt = assembler.assemble(SESSION, QUESTION)
assert any("X1234567" in m.text for m in prompt.messages)
assert prompt.report.total_tokens <= prompt.report.budget
prompt.report.recalled

# %% [markdown]
# In a notebook the assembled prompt shows itself as HTML: each section's tokens against the
# budget, and the messages as the model gets them.

# %%
prompt

# %% [markdown]
# People can search the same index: `search_history` gives the best-matching stored
# messages, however old (`ctx-memory search ID "words"` does it from a shell, and the
# service's inspector has a search box).

# %%
[(hit.position, hit.message["role"], hit.terms) for hit in search_history(cm, SESSION, "passport")]

# %% [markdown]
# The index lives in the process and, once a session passes 256 messages, is also saved in
# the store beside it (this one has 302): a restarted server or another worker loads it
# instead of reading and tokenizing the whole history again. An edit of the history drops
# it; `Recall.reindex` (or `ctx-memory reindex`) rebuilds it ahead of time.

# %%
from ctx_memory.recall import Recall

another_process = Recall()  # nothing indexed in its memory yet
index = another_process.index(cm, SESSION, cm.get_header(SESSION))
assert (another_process.loads, another_process.rebuilds) == (1, 0)
len(index), len(cm.store.get_recall_segments(SESSION))

# %% [markdown]
# ## Cache-stable prompts
#
# Providers cache prompt prefixes (OpenAI from 1,024 tokens, Anthropic at breakpoints), but
# only while the prefix is byte-identical. `layout="stable"` puts what changes per request
# last (the question's sources and recalled turns on the question, the local time in a
# message of its own after it) and trims the history window in blocks, so consecutive
# prompts share their start.
# `report.stable_prefix_tokens` counts it; `cache_hints` adds Anthropic's `cache_control`
# breakpoints and OpenAI's `prompt_cache_key`.

# %%
stable = ContextPromptAssembler(
    cm, max_tokens=2000, reserve_tokens=0, layout="stable", cache_hints=["anthropic", "openai"]
)
first = stable.assemble(SESSION, "Will it rain tomorrow?")
cm.add_user_message(SESSION, "Will it rain tomorrow?")
cm.add_assistant_message(SESSION, "No rain expected tomorrow.")
second = stable.assemble(SESSION, "And the day after?")


def shared_prefix(a: list[str], b: list[str]) -> int:
    """How many leading messages two prompts have in common."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


texts_1 = [str(m.text) for m in first.messages[:-1]]  # without the volatile last message
texts_2 = [str(m.text) for m in second.messages]
print("messages shared:", shared_prefix(texts_1, texts_2), "of", len(texts_1))
print("stable prefix tokens:", second.report.stable_prefix_tokens, "of", second.report.total_tokens)
second.model_kwargs

# %% [markdown]
# ## Compaction: old tool outputs cleared, summaries stored as data
#
# Agents drown in old tool outputs nobody needs verbatim. A `CompactionPolicy` clears the
# outputs of finished turns from the prompt (a placeholder keeps the tool-call id, and the
# `restore_tool_result` tool brings one back) and summarises old turns with any Runnable
# (the offline default is a deterministic extractive summariser). The summary is an entry in
# the session, next to the messages it stands for, which stay as they were.

# %%
from ctx_memory.compaction import (
    CompactionPolicy,
    get_compactions,
    make_restore_tool,
    remove_compaction,
)

AGENT = "agent-run"
for task in range(30):
    cm.add_user_message(AGENT, f"Task {task}: check the status of order {1000 + task}.")
    call_id = f"call_{task}"
    rows = ", ".join(f'{{"row": {r}, "order": {1000 + task}}}' for r in range(40))
    cm.add_messages(
        AGENT,
        [
            AIMessage("", tool_calls=[{"name": "query_db", "args": {"id": task}, "id": call_id}]),
            ToolMessage(
                f'[{rows}, {{"status": "shipped", "code": "FX-{task:04d}"}}]',
                tool_call_id=call_id,
                name="query_db",
            ),
            AIMessage(f"Order {1000 + task} has shipped."),
        ],
    )
stored_before = cm.get_history(AGENT)
print("history tokens:", cm.get_metadata(AGENT)["token_count"])

policy = CompactionPolicy(summarize_at=6000, keep_recent=16, block=8)
compacting = ContextPromptAssembler(cm, max_tokens=8000, reserve_tokens=0, compaction=policy)
result = compacting.assemble(AGENT, "Which orders have shipped?")
report = result.report
print("prompt tokens:", report.total_tokens, "| outputs cleared:", len(report.tool_outputs_cleared))
report.compactions

# %% [markdown]
# The stored history is untouched, every cleared output is one tool call away, and removing
# the compaction gives the prompt without it:

# %%
assert cm.get_history(AGENT) == stored_before
restore = make_restore_tool(cm, AGENT)
print(restore.invoke({"tool_call_id": "call_3"})[:120], "...")
[entry] = get_compactions(cm, AGENT)
remove_compaction(cm, AGENT, entry["id"])
plain = ContextPromptAssembler(cm, max_tokens=8000, reserve_tokens=0)
assert not plain.assemble(AGENT, "Which orders have shipped?").report.compactions

# %% [markdown]
# `ContextualChat(..., compaction=policy)` and `ContextMiddleware(manager, compaction=policy)`
# do the same in a chain or a `create_agent` agent (with `compaction_mode="background"` the
# summary is written after the reply, so no user waits), and `ctx-memory prompt ID
# "question"` prints the prompt and its report for any stored session.
#
# More: [the assembler](../docs/langchain/assembler.md) (recall, layouts, cache hints),
# [compaction](../docs/langchain/compaction.md), and `ctx-memory eval`, which measures all of
# it on LoCoMo and generated agent traces ([docs/eval.md](../docs/eval.md)).
