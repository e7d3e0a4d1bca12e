"""ContextIntegration and the retrievers at their edges (found by a review, each once wrong)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from ctx_memory import ContextIntegration, ContextManager, ContextMode
from ctx_memory.errors import InvalidSessionIdError, ValidationError
from ctx_memory.ranking import rank_sources
from ctx_memory.retrievers import FetchedContextRetriever, item_to_document

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def manager() -> Iterator[ContextManager]:
    with ContextManager() as cm:
        yield cm


@pytest.fixture
def integration(manager: ContextManager) -> ContextIntegration:
    return ContextIntegration(manager)


@pytest.fixture
def client(integration: ContextIntegration) -> Iterator[TestClient]:
    app = FastAPI()

    @app.post("/id")
    async def read_id(request: Request) -> dict[str, Any]:
        return {"id": await integration.aget_session_id(request, default="fallback")}

    @app.post("/streamed")
    async def streamed(request: Request) -> dict[str, Any]:
        async for _ in request.stream():  # the endpoint reads the body itself
            pass
        return {
            "id": await integration.aget_session_id(request),
            "mode": (await integration.aget_mode(request)).value,
            "sync mode": integration.get_mode(request).value,
        }

    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize("body", [b"[" * 2000, b'{"a":' * 5000])
def test_a_json_body_nested_past_the_parser_holds_nothing(client: TestClient, body: bytes) -> None:
    answer = client.post("/id", content=body, headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()) == (200, {"id": "fallback"})


def test_a_body_the_endpoint_read_itself_is_passed_over(client: TestClient) -> None:
    answer = client.post(
        "/streamed",
        json={"session_id": "from-body", "mode": "research"},
        headers={"X-Session-ID": "from-header"},
    )
    assert answer.status_code == 200
    assert answer.json() == {"id": "from-header", "mode": "normal", "sync mode": "normal"}


@pytest.mark.parametrize(
    "request_",
    [
        {"research": False, "deep_research": True},
        {"research": "false", "deep_research": "on"},
        {"deep_research": True},
    ],
)
def test_either_research_flag_selects_research(
    integration: ContextIntegration, request_: dict[str, Any]
) -> None:
    assert integration.get_mode(request_) is ContextMode.RESEARCH


def test_ids_explicit_empty_default_and_numbers(
    integration: ContextIntegration, manager: ContextManager
) -> None:
    integration.add_web_content({"session_id": "from-request"}, "t", session_id="")
    assert manager.list_sessions() == ["from-request"]  # an empty explicit id falls through
    assert integration.get_session_id({}, default="") == ""  # "" may stand for "none"
    for default in ("   ", "a\x00b", "x" * 300):
        with pytest.raises(InvalidSessionIdError):
            integration.get_session_id({}, default=default)
    assert integration.get_session_id({"session_id": 42}) == "42"  # a JSON number: its digits
    with pytest.raises(InvalidSessionIdError, match="far too long"):
        integration.get_session_id({"session_id": 10**5000})


def test_a_document_keeps_its_items_own_source_type_url_and_timestamp() -> None:
    item = {
        "source_type": "pdf",
        "content": "report",
        "url": "https://real.example",
        "timestamp": "2026-12-01T00:00:00+00:00",
        "extracted_data": {"url": "https://other", "source_type": "web", "timestamp": "2001"},
        "token_count": 1,
    }
    meta = item_to_document(item).metadata
    assert (meta["source_type"], meta["url"], meta["timestamp"]) == (
        "pdf",
        "https://real.example",
        "2026-12-01T00:00:00+00:00",
    )


def test_recency_compares_instants_not_text() -> None:
    tokyo = timezone(timedelta(hours=9))
    older = datetime(2024, 5, 1, 10, 0, tzinfo=tokyo).isoformat()  # 01:00 UTC
    newer = datetime(2024, 5, 1, 5, 0, tzinfo=UTC).isoformat()
    items = [
        {"content": "weather report", "url": "old", "timestamp": older},
        {"content": "weather report", "url": "new", "timestamp": newer},
    ]
    assert [i["url"] for _, i in rank_sources("weather", items)] == ["new", "old"]
    assert [i["url"] for _, i in rank_sources("zzz", items)] == ["new", "old"]


def test_a_negative_k_is_refused(manager: ContextManager) -> None:
    manager.add_fetched_context("s", "web", "one report")
    manager.add_fetched_context("s", "web", "two report")
    retriever = FetchedContextRetriever(manager=manager, session_id="s")
    assert len(retriever.invoke("report", k=1)) == 1
    with pytest.raises(ValidationError):
        retriever.invoke("report", k=-1)
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        FetchedContextRetriever(manager=manager, session_id="s", k=-1)
