"""ContextIntegration in real Django and Django REST framework apps.

Django's ``RequestFactory`` / ``AsyncRequestFactory`` and ``Client`` / ``AsyncClient``, DRF's
``APIRequestFactory`` and ``APIClient``, on a minimal ``settings.configure()`` made here:
no database, sessions in signed cookies through Django's SessionMiddleware. Sync and
``async def`` views read the session id and mode from the query string, headers, JSON body,
form (``request.POST``, DRF's ``request.data``) and ``request.session``, and record content
in the right session of an in-memory ContextManager. Input errors (``ValidationError``:
a missing or bad id, an unknown mode) become HTTP 400 (a middleware for Django views, DRF's
exception handler for API views).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-secret-for-ctx-memory-web-tests",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "rest_framework",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            f"{__name__}.BadRequests",
        ],
        SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
        DATABASES={},
        USE_TZ=True,
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": [],
            "DEFAULT_PERMISSION_CLASSES": [],
            "UNAUTHENTICATED_USER": None,
            "EXCEPTION_HANDLER": f"{__name__}.drf_errors",
        },
    )
    django.setup()

from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncClient, AsyncRequestFactory, Client, RequestFactory
from django.urls import path
from django.utils.deprecation import MiddlewareMixin
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.views import APIView, exception_handler

from ctx_memory import (
    ContextIntegration,
    ContextManager,
    InMemoryStore,
    InvalidSessionIdError,
    ValidationError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

# The views use the integration a fixture installs here, each test with a fresh manager.
STATE: dict[str, ContextIntegration] = {}


def integration_() -> ContextIntegration:
    return STATE["integration"]


class BadRequests(MiddlewareMixin):
    """The app's choice: ctx_memory's input errors are the client's (HTTP 400)."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        if isinstance(exception, ValidationError):
            return JsonResponse({"error": str(exception)}, status=400)
        return None


def drf_errors(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ValidationError):
        return Response({"error": str(exc)}, status=400)
    return exception_handler(exc, context)


def _body(request: HttpRequest) -> Any:
    if request.content_type == "application/json":
        return json.loads(request.body)
    return request.POST


def context_view(request: HttpRequest) -> JsonResponse:
    integration = integration_()
    return JsonResponse(
        {
            "session_id": integration.get_session_id(request),
            "mode": integration.get_mode(request).value,
        }
    )


async def async_context_view(request: HttpRequest) -> JsonResponse:
    integration = integration_()
    return JsonResponse(
        {
            "session_id": await integration.aget_session_id(request),
            "mode": (await integration.aget_mode(request)).value,
        }
    )


def page_view(request: HttpRequest) -> JsonResponse:
    integration = integration_()
    sid = integration.prepare_request(request)
    data = _body(request)
    integration.add_web_content(request, data.get("text", ""), data.get("url"))
    return JsonResponse({"session_id": sid})


async def async_page_view(request: HttpRequest) -> JsonResponse:
    integration = integration_()
    sid = await integration.aprepare_request(request)
    data = _body(request)
    await integration.aadd_web_content(request, data.get("text", ""), data.get("url"))
    return JsonResponse({"session_id": sid})


def login_view(request: HttpRequest) -> HttpResponse:
    request.session["session_id"] = "from-session"
    request.session["mode"] = "research"
    return HttpResponse("ok")


class APIContext(APIView):
    def get(self, request: Any) -> Response:
        return self.post(request)

    def post(self, request: Any) -> Response:
        integration = integration_()
        return Response(
            {
                "session_id": integration.get_session_id(request),
                "mode": integration.get_mode(request).value,
            }
        )


class APIPage(APIView):
    def post(self, request: Any) -> Response:
        integration = integration_()
        sid = integration.prepare_request(request)
        integration.add_web_content(request, request.data.get("text", ""), request.data.get("url"))
        return Response({"session_id": sid})


class APIJSONOnly(APIContext):
    parser_classes = [JSONParser]  # noqa: RUF012 - DRF's own class attribute


urlpatterns = [
    path("context", context_view),
    path("async/context", async_context_view),
    path("page", page_view),
    path("async/page", async_page_view),
    path("login", login_view),
    path("api/context", APIContext.as_view()),
    path("api/page", APIPage.as_view()),
    path("api/json-only", APIJSONOnly.as_view()),
]


@pytest.fixture
def manager() -> Iterator[ContextManager]:
    with ContextManager(store=InMemoryStore(max_sessions=100)) as cm:
        yield cm


@pytest.fixture
def integration(manager: ContextManager) -> Iterator[ContextIntegration]:
    STATE["integration"] = ContextIntegration(manager)
    yield STATE["integration"]
    STATE.clear()


# ------------------------------------------------------------------ Django RequestFactory


def test_request_factory_query_header_form_json(integration: ContextIntegration) -> None:
    rf = RequestFactory()
    request = rf.get("/context", {"session_id": "q1", "mode": "thinking"})
    assert integration.get_session_id(request) == "q1"
    assert integration.get_mode(request).value == "thinking"
    request = rf.get("/context", headers={"X-Session-ID": "h1", "X-Context-Mode": "research"})
    assert integration.get_session_id(request) == "h1"
    assert integration.get_mode(request).value == "research"
    request = rf.post("/context", {"session_id": "f1", "research": "on"})  # multipart
    assert integration.get_session_id(request) == "f1"
    assert integration.get_mode(request).value == "research"
    request = rf.post("/context", "session_id=f2", content_type="application/x-www-form-urlencoded")
    assert integration.get_session_id(request) == "f2"
    request = rf.post(
        "/context", {"session_id": "j1", "mode": "normal"}, content_type="application/json"
    )
    assert integration.get_session_id(request) == "j1"
    assert integration.get_mode(request).value == "normal"
    # The view can still read the body after us.
    assert json.loads(request.body)["session_id"] == "j1"


def test_request_factory_other_bodies_and_errors(integration: ContextIntegration) -> None:
    rf = RequestFactory()
    request = rf.post("/context", b"<xml/>", content_type="application/xml", HTTP_X_SESSION_ID="x")
    assert integration.get_session_id(request) == "x"
    request = rf.post("/context", b"{broken", content_type="application/json")
    with pytest.raises(InvalidSessionIdError, match="no session id"):
        integration.get_session_id(request)
    request = rf.get("/context", {"session_id": " "})
    with pytest.raises(InvalidSessionIdError, match="query parameter 'session_id'"):
        integration.get_session_id(request)
    assert integration.get_session_id(rf.get("/context"), default="fallback") == "fallback"


def test_request_factory_with_a_session(integration: ContextIntegration) -> None:
    request = RequestFactory().get("/context")
    SessionMiddleware(lambda r: HttpResponse()).process_request(request)
    request.session["session_id"] = "s1"
    request.session["mode"] = "thinking"
    assert integration.get_session_id(request) == "s1"
    assert integration.get_mode(request).value == "thinking"


async def test_async_request_factory(integration: ContextIntegration) -> None:
    arf = AsyncRequestFactory()
    request = arf.post(
        "/context", {"session_id": "a1", "mode": "research"}, content_type="application/json"
    )
    assert await integration.aget_session_id(request) == "a1"
    assert (await integration.aget_mode(request)).value == "research"
    request = arf.get("/context", headers={"X-Session-ID": "a2"})
    SessionMiddleware(lambda r: HttpResponse()).process_request(request)
    assert await integration.aget_session_id(request) == "a2"
    request = arf.get("/context")
    SessionMiddleware(lambda r: HttpResponse()).process_request(request)
    await request.session.aset("session_id", "a3")
    assert await integration.aget_session_id(request) == "a3"


# ------------------------------------------------------------------------- Django Client

DJANGO_ENDPOINTS = ["/context", "/async/context"]


@pytest.mark.parametrize("url", DJANGO_ENDPOINTS)
@pytest.mark.usefixtures("integration")
def test_client_query_header_form_json(url: str) -> None:
    client = Client()
    response = client.get(url, {"session_id": "q", "mode": "research"})
    assert response.status_code == 200, response.content
    assert response.json() == {"session_id": "q", "mode": "research"}
    response = client.get(url, headers={"X-Session-ID": "h", "X-Context-Mode": "thinking"})
    assert response.json() == {"session_id": "h", "mode": "thinking"}
    response = client.post(url, {"session_id": "f"})
    assert response.json() == {"session_id": "f", "mode": "normal"}
    response = client.post(url, {"sessionId": "j"}, content_type="application/json")
    assert response.json() == {"session_id": "j", "mode": "normal"}
    response = client.post(url, b"text", content_type="text/plain", headers={"X-Session-ID": "t"})
    assert response.status_code == 200, response.content
    assert response.json()["session_id"] == "t"
    response = client.post(
        f"{url}?session_id=query", {"session_id": "body"}, headers={"X-Session-ID": "header"}
    )
    assert response.json()["session_id"] == "query"


@pytest.mark.parametrize("url", DJANGO_ENDPOINTS)
@pytest.mark.usefixtures("integration")
def test_client_session(url: str) -> None:
    client = Client()
    assert client.post("/login").status_code == 200
    response = client.get(url)
    assert response.status_code == 200, response.content
    assert response.json() == {"session_id": "from-session", "mode": "research"}


@pytest.mark.parametrize("url", DJANGO_ENDPOINTS)
@pytest.mark.usefixtures("integration")
def test_client_errors_are_400(url: str) -> None:
    client = Client()
    response = client.get(url)
    assert response.status_code == 400
    assert "no session id" in response.json()["error"]
    response = client.post(url, {"session_id": "x" * 257}, content_type="application/json")
    assert response.status_code == 400
    assert "JSON body key 'session_id'" in response.json()["error"]
    response = client.get(url, {"session_id": "s", "mode": "nope"})
    assert response.status_code == 400
    assert "unknown mode 'nope'" in response.json()["error"]


async def test_async_client(integration: ContextIntegration, manager: ContextManager) -> None:
    client = AsyncClient()
    response = await client.post(
        "/async/page",
        {"session_id": "async-user", "text": "Async page", "url": "https://a.example"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert manager.get_fetched_context("async-user")["js_scraping"][0]["content"] == "Async page"
    assert (await client.post("/login")).status_code == 200
    response = await client.get("/async/context")
    assert response.json() == {"session_id": "from-session", "mode": "research"}


@pytest.mark.parametrize("url", ["/page", "/async/page"])
def test_client_records_content_in_the_right_session(
    integration: ContextIntegration, manager: ContextManager, url: str
) -> None:
    client = Client()
    response = client.post(
        url,
        {"session_id": "json-user", "text": "JSON page", "url": "https://j.example", "tz": "UTC"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    response = client.post(
        url, {"session_id": "form-user", "text": "Form page", "mode": "thinking"}
    )
    assert response.status_code == 200, response.content
    assert manager.get_fetched_context("json-user")["js_scraping"][0]["content"] == "JSON page"
    assert manager.get_metadata("json-user")["current_url"] == "https://j.example"
    assert manager.get_metadata("json-user")["user_timezone"] == "UTC"
    assert manager.get_fetched_context("form-user")["js_scraping"][0]["content"] == "Form page"
    assert manager.get_metadata("form-user")["mode"] == "thinking"
    assert client.post(url, {"text": "orphan"}).status_code == 400
    assert sorted(manager.list_sessions()) == ["form-user", "json-user"]


# --------------------------------------------------------------------- Django REST framework


def test_drf_request_factory_reads_request_data(integration: ContextIntegration) -> None:
    factory = APIRequestFactory()
    view = APIContext.as_view()
    response = view(
        factory.post("/api/context", {"session_id": "d1", "mode": "thinking"}, format="json")
    )
    assert response.status_code == 200, response.data
    assert response.data == {"session_id": "d1", "mode": "thinking"}
    response = view(
        factory.post("/api/context", {"session_id": "d2", "research": "1"})
    )  # multipart
    assert response.data == {"session_id": "d2", "mode": "research"}
    response = view(
        factory.post(
            "/api/context", "session_id=d3", content_type="application/x-www-form-urlencoded"
        )
    )
    assert response.data == {"session_id": "d3", "mode": "normal"}
    response = view(
        factory.get("/api/context", {"session_id": "d4"}, HTTP_X_CONTEXT_MODE="research")
    )
    assert response.data == {"session_id": "d4", "mode": "research"}
    response = view(factory.get("/api/context"))
    assert response.status_code == 400
    assert "no session id" in response.data["error"]


def test_drf_view_without_a_parser_for_the_body(integration: ContextIntegration) -> None:
    factory = APIRequestFactory()
    view = APIJSONOnly.as_view()
    # A form the view cannot parse is not ours to refuse (no 415): the header answers.
    request = factory.post("/api/json-only", {"session_id": "ignored"}, HTTP_X_SESSION_ID="h")
    response = view(request)
    assert response.status_code == 200, response.data
    assert response.data["session_id"] == "h"
    # Malformed JSON is DRF's own 400 (ParseError), raised by the view's parser.
    request = factory.post("/api/json-only", b"{oops", content_type="application/json")
    assert view(request).status_code == 400


@pytest.mark.usefixtures("integration")
def test_drf_api_client_with_session() -> None:
    client = APIClient()
    response = client.post("/api/context", {"session_id": "c1", "mode": "research"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"session_id": "c1", "mode": "research"}
    response = client.get("/api/context", headers={"X-Session-ID": "c2"})
    assert response.json() == {"session_id": "c2", "mode": "normal"}
    assert client.post("/login").status_code == 200
    response = client.get("/api/context")
    assert response.json() == {"session_id": "from-session", "mode": "research"}
    response = client.post("/api/context", {"session_id": ""}, format="json")
    assert response.json() == {"session_id": "from-session", "mode": "research"}


def test_drf_api_client_records_content(
    integration: ContextIntegration, manager: ContextManager
) -> None:
    client = APIClient()
    response = client.post(
        "/api/page",
        {"session_id": "api-json", "text": "API page", "url": "https://api.example"},
        format="json",
    )
    assert response.status_code == 200, response.content
    response = client.post(
        "/api/page", {"session_id": "api-form", "text": "Form", "mode": "thinking"}
    )
    assert response.status_code == 200, response.content
    assert manager.get_fetched_context("api-json")["js_scraping"][0]["content"] == "API page"
    assert manager.get_metadata("api-json")["current_url"] == "https://api.example"
    assert manager.get_metadata("api-form")["mode"] == "thinking"
    response = client.post("/api/page", {"text": "orphan"}, format="json")
    assert response.status_code == 400
    assert sorted(manager.list_sessions()) == ["api-form", "api-json"]
