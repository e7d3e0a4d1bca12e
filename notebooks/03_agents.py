# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Agents: `create_agent` middleware and the classic `AgentExecutor`
#
# Agents get a ctx_memory session two ways:
#
# * **LangChain 1.x `create_agent`**: `ContextMiddleware` stores every message of the run
#   (the question, tool calls, tool results, the answer) and gives the model the
#   session's system prompt, sources and as much stored history as fits the budget.
#   Needs the `agents` extra (`pip install ctx-memory[agents]`).
# * **Classic `AgentExecutor`** (langchain-classic): `ContextMemory`, a token-budgeted
#   memory class. Needs the `classic` extra.
#
# The models are LangChain's `GenericFakeChatModel` with scripted replies (including a
# tool call), taught to accept `bind_tools`; no API key needed.

# %%
from typing import Any

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from pydantic import Field

from ctx_memory import ContextManager, show_session


class FakeToolModel(GenericFakeChatModel):
    """LangChain's fake chat model, accepting tools and remembering what it was sent."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    def bind_tools(self, tools: Any, **kwargs: Any) -> "FakeToolModel":
        """Accept the tools; the scripted replies decide which one to call."""
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"Sunny and 24°C in {city}"


def weather_call(city: str, call_id: str) -> dict[str, Any]:
    """A tool call the fake model will "decide" to make."""
    return {"name": "get_weather", "args": {"city": city}, "id": call_id}


cm = ContextManager()

# %% [markdown]
# ## `create_agent` + `ContextMiddleware`
#
# The session id comes from `config["configurable"]["session_id"]` (or the runtime
# context, or a checkpointer's `thread_id`).

# %%
from langchain.agents import create_agent

from ctx_memory.middleware import ContextMiddleware

SESSION = "trip-agent"
cm.set_system_prompt(SESSION, "You are a travel agent. Use tools when they help.")
cm.add_fetched_context(
    SESSION,
    "web_search",
    "Lisbon averages 300 days of sunshine a year.",
    url="https://climate.example/lisbon",
    extracted_data={"title": "Lisbon climate"},
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
middleware = ContextMiddleware(cm, max_tokens=4_000, reserve_tokens=1_000, model_name="fake-agent")
agent = create_agent(model, tools=[get_weather], middleware=[middleware])
config: RunnableConfig = {"configurable": {"session_id": SESSION}}

result = agent.invoke({"messages": [HumanMessage("What's the weather in Lisbon?")]}, config)
result["messages"][-1].content

# %% [markdown]
# A new run starts with only the new question in the agent's state; the middleware
# brings the earlier turn back from the store (a checkpointer is not required):

# %%
result = agent.invoke({"messages": [HumanMessage("What did I ask you before?")]}, config)
print(result["messages"][-1].content)
print("the model was sent:")
for message in model.seen[-1]:
    print(f"  {message.type:>6}: {str(message.content)[:70]!r}")

# %% [markdown]
# Every message of both runs is in the session, tool calls and results included:

# %%
[
    (r["role"], r["content"][:40], [c["name"] for c in r.get("tool_calls", [])])
    for r in cm.get_history(SESSION)
]

# %%
show_session(cm, SESSION, budget=4_000, reserve_tokens=1_000)

# %% [markdown]
# ## Classic `AgentExecutor` + `ContextMemory`
#
# `ContextMemory` keeps the full history in the session and loads the newest whole turns
# that fit `max_token_limit`, from token counts cached at write time.

# %%
from langchain_classic.agents import AgentExecutor, create_tool_calling_agent
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from ctx_memory.classic import ContextMemory

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

# %%
memory.load_memory_variables({})["chat_history"]

# %% [markdown]
# **Using a real model.** Swap the fake model for any tool-calling chat model (not run
# here; needs `pip install langchain-openai` and an API key):
#
# ```python
# from langchain_openai import ChatOpenAI
#
# agent = create_agent(
#     ChatOpenAI(model="gpt-4o-mini"),
#     tools=[get_weather],
#     middleware=[ContextMiddleware(cm, max_tokens=128_000, reserve_tokens=4_000)],
# )
# ```

# %%
cm.close()
