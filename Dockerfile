# The HTTP service (ctx-memory serve), docs/server.md. Build from the checkout:
#   docker build -t ctx-memory .
#   docker run -p 8000:8000 -v ./settings.toml:/data/settings.toml:ro ctx-memory
# Listening on every interface needs keys (SERVER_API_KEYS / SERVER_ADMIN_KEYS in
# settings.toml or CTX_MEMORY_* variables); the store is whatever settings select
# (STORE = "redis" with REDIS_URL, or "postgres"), SQLite in /data otherwise.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TIKTOKEN_CACHE_DIR=/opt/tiktoken

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY ctx_memory ./ctx_memory

# Extras: server (FastAPI, uvicorn, sse-starlette), postgres, agents (init_chat_model and
# create_agent), otel; Redis support (redis-py) is part of the base package. A chat model
# provider's package comes with --build-arg EXTRA_PACKAGES="langchain-openai".
ARG EXTRA_PACKAGES=""
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[server,postgres,agents,otel]" ${EXTRA_PACKAGES} \
 && python -c "import tiktoken; [tiktoken.get_encoding(e) for e in ('o200k_base', 'cl100k_base')]" \
 && rm -rf /src

RUN useradd --system --uid 10001 --create-home --home-dir /data ctxmemory
USER 10001
WORKDIR /data

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3).status != 200)"]

ENTRYPOINT ["ctx-memory"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
