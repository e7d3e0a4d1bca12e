# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Redis: the same code, switched by configuration
#
# The in-memory store lives and dies with one process. Redis keeps sessions across
# restarts and shares them between processes and machines; SQLite keeps them in one
# file on one machine. Switching is configuration only:
#
# ```toml
# # settings.toml (or CTX_MEMORY_STORE=redis, CTX_MEMORY_REDIS_URL=... in the environment)
# [ctx_memory]                             # ctx_memory's own table; top-level keys are your app's
# STORE = "redis"
# REDIS_URL = "redis://localhost:6379/0"   # rediss://user:password@host:port/db for TLS + ACL
# ```
#
# This notebook uses `REDIS_URL` from the environment if it is set; otherwise it starts
# a throw-away `redis-server` (it must be installed: `apt-get install redis-server`,
# `brew install redis`) on a free port in a temporary directory, and stops it at the end.

# %%
import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

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
    address = ["--port", str(port), "--bind", "127.0.0.1", "--dir", workdir]
    no_persistence = ["--save", "", "--appendonly", "no"]
    server = subprocess.Popen(
        [exe, *address, *no_persistence],
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


# %% [markdown]
# ## One function, two stores
#
# The application code takes a `ContextManager` and never asks which store it is on.


# %%
def plan_trip(cm: ContextManager, session_id: str) -> dict[str, Any]:
    """Plan a trip in a session: the same calls on any store."""
    cm.set_system_prompt(session_id, "You are a travel assistant.")
    cm.update_metadata(session_id, current_url="https://airline.example/lisbon")
    cm.add_fetched_context(
        session_id,
        "web_search",
        "Non-stop JFK to LIS from $389.",
        url="https://fares.example/lis",
        extracted_data={"title": "Lisbon fares"},
    )
    cm.add_user_message(session_id, "Find me a cheap flight to Lisbon.")
    cm.add_assistant_message(session_id, "TAP flies from $389 [1].", model="fake-model")
    cm.update_partial_context(session_id, {"trip": {"destination": "LIS", "travellers": 2}})
    return cm.get_memory_stats(session_id)


with ContextManager() as in_memory:  # the default store
    print(in_memory.store.name, plan_trip(in_memory, "trip-1")["total_tokens"], "tokens")

# %% [markdown]
# Now the same function on Redis, selected by configuration alone. Setting the
# environment here stands in for a deployment's settings; the key prefix keeps this
# notebook's keys apart from anything else on the server.

# %%
PREFIX = f"nb04-{uuid.uuid4().hex[:8]}"
os.environ["CTX_MEMORY_STORE"] = "redis"
os.environ["CTX_MEMORY_REDIS_URL"] = REDIS_URL
os.environ["CTX_MEMORY_REDIS_KEY_PREFIX"] = PREFIX

cm = ContextManager()
print(cm.store.name, plan_trip(cm, "trip-1")["total_tokens"], "tokens")


# %% [markdown]
# ## Shared between processes
#
# Another process, configured the same way (it inherits this kernel's environment),
# sees the session at once: here the `ctx-memory` command line, run as a separate
# Python process.


# %%
def ctx_memory_cli(*args: str) -> str:
    """Run `ctx-memory ARGS` in a new process; return what it printed."""
    env = {**os.environ, "TTY_COMPATIBLE": "0"}  # plain text (Jupyter sets FORCE_COLOR)
    done = subprocess.run(
        [sys.executable, "-m", "ctx_memory", *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return done.stdout + done.stderr


print(ctx_memory_cli("sessions", "list", "--long"))
print(ctx_memory_cli("show", "trip-1", "--last", "1"))

# %% [markdown]
# Writes are atomic on the server (Lua scripts), so concurrent writers never lose a
# message. Two managers stand in for two workers here:

# %%
from concurrent.futures import ThreadPoolExecutor

with ContextManager() as worker_a, ContextManager() as worker_b:

    def write(i: int) -> None:
        """Add message i through one of the two workers."""
        (worker_a if i % 2 else worker_b).add_user_message("busy", f"message {i}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, range(200)))

cm.get_memory_stats("busy")["message_count"]

# %% [markdown]
# ## The HTML view works the same on every store

# %%
show_session(cm, "trip-1", budget=8_000, reserve_tokens=1_000)

# %% [markdown]
# ## Moving sessions between stores
#
# `ctx-memory export --all` writes JSON Lines; `ctx-memory import` validates every
# document before writing any. Here: Redis → file → a SQLite file.

# %%
dump = os.path.join(workdir, "sessions.jsonl")
sqlite_file = os.path.join(workdir, "sessions.db")
print(ctx_memory_cli("export", "--all", "-o", dump))
print(ctx_memory_cli("--store", "sqlite", "--sqlite-path", sqlite_file, "import", dump))
print(ctx_memory_cli("--store", "sqlite", "--sqlite-path", sqlite_file, "sessions", "list"))

# %% [markdown]
# ## Clean up: delete this notebook's sessions, stop the server we started

# %%
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
