"""``GET /v1/sessions/{id}/search`` and ``GET /v1/sessions/{id}/prompt`` (the preview)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, convert_to_openai_messages
from pydantic import Field
from server_helpers import ADMIN, KEY_A, KEY_B, auth, keyed_settings
from typing_extensions import override

from ctx_memory.config import load_settings
from ctx_memory.recall import search_history
from ctx_memory.server import create_app
from ctx_memory.server.models import DemoChatModel

if TYPE_CHECKING:
    from langchain_core.outputs import ChatResult

    from ctx_memory import ContextManager

TRAVEL = [
    ("user", "I lost my passport in Lyon"),
    ("assistant", "Call the consulate first."),
    ("user", "Do I need a visa and a passport for Japan?"),
    ("assistant", "A passport valid six months; no visa for short stays."),
    ("user", "Book the train to Lyon"),
]


def _fill(manager: ContextManager, session_id: str, turns: list[tuple[str, str]]) -> None:
    for role, text in turns:
        manager.add_message(session_id, role, text)


class RecordingModel(DemoChatModel):
    """The demo model, keeping the prompt of each call."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)

    @override
    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


# --------------------------------------------------------------------------- search


def test_search_answers_hits_best_first_with_positions_and_terms(
    http: Any, manager: ContextManager
) -> None:
    _fill(manager, "trip/1", TRAVEL)
    response = http.get("/v1/sessions/trip%2F1/search", params={"q": "passport visa"})
    assert response.status_code == 200
    body = response.json()
    assert (body["session_id"], body["query"]) == ("trip/1", "passport visa")
    hits = body["hits"]
    # both words first, then the message with one; nothing without either
    assert sorted(h["position"] for h in hits[:2]) == [2, 3]
    assert [h["position"] for h in hits[2:]] == [0]
    assert [h["terms"] for h in hits] == [["passport", "visa"]] * 2 + [["passport"]]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert scores[1] > scores[2] > 0
    history = manager.get_history("trip/1")
    assert [h["message"] for h in hits] == [history[h["position"]] for h in hits]
    expected = [h.as_dict() for h in search_history(manager, "trip/1", "passport visa")]
    assert hits == expected


def test_search_honours_limit(http: Any, manager: ContextManager) -> None:
    _fill(manager, "many", [("user", f"ticket number {i}") for i in range(30)])
    path = "/v1/sessions/many/search"
    assert len(http.get(path, params={"q": "ticket"}).json()["hits"]) == 10
    assert len(http.get(path, params={"q": "ticket", "limit": 3}).json()["hits"]) == 3
    assert len(http.get(path, params={"q": "ticket", "limit": 100}).json()["hits"]) == 30
    assert http.get(path, params={"q": "zeppelin"}).json()["hits"] == []


def test_search_refuses_bad_input_and_missing_sessions(http: Any, manager: ContextManager) -> None:
    _fill(manager, "s", TRAVEL)
    for params, field in (
        ({"q": "passport", "limit": 0}, "limit"),
        ({"q": "passport", "limit": 101}, "limit"),
        ({"q": "passport", "limit": "ten"}, "limit"),
        ({"q": ""}, "q"),
        ({}, "q"),
    ):
        response = http.get("/v1/sessions/s/search", params=params)
        assert response.status_code == 422, params
        body = response.json()
        assert body["error"] == "validation_error"
        assert body["detail"][0]["loc"] == ["query", field], params
    missing = http.get("/v1/sessions/nobody/search", params={"q": "passport"})
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert not manager.session_exists("nobody")


# --------------------------------------------------------------------------- preview


def test_the_preview_is_the_prompt_a_chat_turn_sends(serve: Any, manager: ContextManager) -> None:
    model = RecordingModel()
    client = serve(create_app(manager, chat_model=model))
    manager.set_system_prompt("p", "You are a travel assistant.")
    manager.update_metadata("p", mode="thinking")  # what the chat turn records first
    manager.add_fetched_context(
        "p", "web_search", "Book 6-8 weeks ahead.", url="https://travel.example/guide"
    )
    _fill(manager, "p", TRAVEL)
    question = "Which passport rules apply?"
    preview = client.get("/v1/sessions/p/prompt", params={"q": question})
    assert preview.status_code == 200
    body = preview.json()
    assert model.seen == []  # no model called
    assert (body["session_id"], body["question"]) == ("p", question)
    assert set(body) == {"session_id", "question", "messages", "sources", "report", "model_kwargs"}
    assert body["sources"] == [
        {"n": 1, "url": "https://travel.example/guide", "title": "https://travel.example/guide",
         "source_type": "web_search"}
    ]  # fmt: skip
    assert [m["role"] for m in body["messages"]] == ["system", *[r for r, _ in TRAVEL], "user"]
    assert body["messages"][-1] == {"role": "user", "content": question}
    assert "Book 6-8 weeks ahead." in body["messages"][0]["content"]
    wider = client.get("/v1/sessions/p/prompt", params={"q": question, "max_tokens": 9000})
    assert wider.json()["messages"] == body["messages"]  # the turn's options, a larger budget
    assert (wider.json()["report"]["max_tokens"], wider.json()["report"]["budget"]) == (9000, 8000)

    reply = client.post("/v1/sessions/p/chat", json={"question": question, "stream": False})
    [sent] = model.seen
    assert body["messages"] == convert_to_openai_messages(sent)
    report = reply.json()["report"]  # the reply's, without session_id and source_urls; and
    # the turn's own budget: the wider preview left the turn's assembler as it was
    assert len(report) > 20
    assert report.items() <= body["report"].items()


def test_the_preview_fits_its_budget_and_writes_nothing(http: Any, manager: ContextManager) -> None:
    manager.set_system_prompt("long", "Be brief.")
    _fill(manager, "long", [("user", f"Day {i}: museums, trains and cafés.") for i in range(80)])
    before = manager.get_context("long")
    count = manager.get_memory_stats("long")["message_count"]
    response = http.get("/v1/sessions/long/prompt", params={"q": "trains?", "max_tokens": 1400})
    assert response.status_code == 200
    report = response.json()["report"]
    assert (report["max_tokens"], report["budget"]) == (1400, 400)
    assert 0 < report["total_tokens"] <= report["budget"]
    assert report["history_left_out_messages"] > 0
    assert manager.get_context("long") == before
    assert manager.get_memory_stats("long")["message_count"] == count == 80
    # the default budget is the chat turn's: SERVER_MAX_TOKENS
    default = http.get("/v1/sessions/long/prompt", params={"q": "trains?"}).json()["report"]
    assert default["max_tokens"] == manager.settings.server_max_tokens
    assert default["history_left_out_messages"] == 0
    assert manager.get_context("long") == before


def test_the_preview_takes_max_tokens_from_settings(serve: Any, manager: ContextManager) -> None:
    client = serve(create_app(manager, load_settings(server_max_tokens=3000)))
    _fill(manager, "s", TRAVEL)
    report = client.get("/v1/sessions/s/prompt", params={"q": "visa?"}).json()["report"]
    assert (report["max_tokens"], report["budget"]) == (3000, 2000)


def test_the_preview_refuses_bad_input_and_missing_sessions(
    http: Any, manager: ContextManager
) -> None:
    _fill(manager, "s", TRAVEL)
    for params, field in (
        ({"q": "visa?", "max_tokens": 0}, "max_tokens"),
        ({"q": "visa?", "max_tokens": 1000}, "max_tokens"),  # all of it the reply's reserve
        ({"q": "visa?", "max_tokens": 10_000_001}, "max_tokens"),
        ({"q": "visa?", "max_tokens": "lots"}, "max_tokens"),
        ({"q": ""}, "q"),
        ({}, "q"),
    ):
        response = http.get("/v1/sessions/s/prompt", params=params)
        assert response.status_code == 422, params
        body = response.json()
        assert body["error"] == "validation_error"
        assert body["detail"][0]["loc"] == ["query", field], params
    over = http.get("/v1/sessions/s/prompt", params={"q": "word " * 2000, "max_tokens": 1200})
    assert (over.status_code, over.json()["error"]) == (422, "over_budget")
    missing = http.get("/v1/sessions/nobody/prompt", params={"q": "visa?"})
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert not manager.session_exists("nobody")
    assert len(manager.get_history("s")) == len(TRAVEL)


# --------------------------------------------------------------------------- tenants


def test_a_tenant_cannot_search_or_preview_another_tenants_session(serve: Any) -> None:
    client = serve(create_app(settings=keyed_settings()))
    sent = {"role": "user", "content": "secret plans of A"}
    assert client.post("/v1/sessions/s/messages", json=sent, headers=auth(KEY_A)).status_code == 201
    search = {"q": "secret plans"}
    preview = {"q": "What are the plans?"}
    for path, params in (("/v1/sessions/s/search", search), ("/v1/sessions/s/prompt", preview)):
        assert client.get(path, params=params, headers=auth(KEY_B)).status_code == 404, path
        refused = client.get(path, params={**params, "tenant": "a"}, headers=auth(KEY_B))
        assert refused.status_code == 403, path
        assert client.get(path, params=params).status_code == 401, path
    # B's session of the same id is B's own: A's words are not in it
    sent_b = {"role": "user", "content": "plans of B"}
    assert (
        client.post("/v1/sessions/s/messages", json=sent_b, headers=auth(KEY_B)).status_code == 201
    )
    hits_b = client.get("/v1/sessions/s/search", params=search, headers=auth(KEY_B)).json()["hits"]
    assert [h["message"]["content"] for h in hits_b] == ["plans of B"]
    prompt_b = client.get("/v1/sessions/s/prompt", params=preview, headers=auth(KEY_B)).json()
    assert "secret plans of A" not in str(prompt_b)
    hits_a = client.get("/v1/sessions/s/search", params=search, headers=auth(KEY_A)).json()["hits"]
    assert [h["message"]["content"] for h in hits_a] == ["secret plans of A"]
    admin = client.get(
        "/v1/sessions/s/search", params={**search, "tenant": "a"}, headers=auth(ADMIN)
    ).json()
    assert admin["hits"] == hits_a
