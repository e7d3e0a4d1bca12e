"""The session inspector in a real headless browser (Debian's Chromium, driven by Playwright).

Chromium is ``/usr/bin/chromium`` (``scripts/ensure-chromium.sh`` installs it; ``CHROMIUM``
names another). Without it these tests are skipped, and under ``CI=true`` they fail.
``UPDATE_SCREENSHOTS=1`` writes the screenshots of the docs
(``docs/inspector-*.png``); otherwise they go to the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from server_helpers import ADMIN, IN_CI, KEY_A, KEY_B, LiveServer, auth, keyed_settings

from ctx_memory.recall import recall_terms
from ctx_memory.server import create_app
from ctx_memory.server.keys import hash_api_key

if TYPE_CHECKING:
    from collections.abc import Iterator

DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    if shutil.which(CHROMIUM) is None:
        reason = f"Chromium is not at {CHROMIUM} (scripts/ensure-chromium.sh installs it)"
        if IN_CI:
            pytest.fail(f"{reason}; CI=true: the browser tests must run")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """A keyed server whose tenant ``a`` holds 60 sessions and one rich research session."""
    app = create_app(settings=keyed_settings(server_rate_limit_per_minute=0))
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as client:
        for i in range(60):
            client.post(
                "/add_webtext/",
                headers=auth(KEY_A),
                json={"session_id": f"user-{i:03d}", "text_content": f"page {i}"},
            )
        sid = "trip-paris"
        client.post(
            "/v1/sessions/trip-paris/messages",
            headers=auth(KEY_A),
            json={"role": "system", "content": "You are a concise travel assistant."},
        )
        client.post(
            "/add_webtext/",
            headers=auth(KEY_A),
            json={
                "session_id": sid,
                "title": "Flights to Paris",
                "current_url": "https://airline.example/paris",
                "text_content": "Paris (CDG) from New York (JFK): daily non-stops from $420.",
            },
        )
        for question in ("How do I book a cheap flight?", "Are flexible fares worth it?"):
            client.get(
                "/get_adv_response/",
                headers=auth(KEY_A),
                params={
                    "session_id": sid,
                    "question": question,
                    "stream": "false",
                    "user_timezone": "America/New_York",
                },
            )
        client.get(
            "/chat_response/",
            headers=auth(KEY_A),
            params={"session_id": sid, "question": "Summarise my options.", "stream": "false"},
        )
        client.post(
            "/add_webtext/",
            headers=auth(KEY_B),
            json={"session_id": "b-only", "text_content": "tenant b"},
        )
        yield live.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=ARGS)
        yield browser
        browser.close()


def _shot(page: Any, name: str, tmp_path: Path) -> None:
    update = os.environ.get("UPDATE_SCREENSHOTS") == "1"
    target = DOCS / f"inspector-{name}.png" if update else tmp_path / f"inspector-{name}.png"
    page.screenshot(path=str(target), full_page=False)
    assert target.stat().st_size > 5000


def _login(page: Any, site: str) -> None:
    page.goto(f"{site}/inspector/sessions")
    assert "/inspector/login" in page.url
    page.fill("#key", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site}/inspector/sessions*")


def test_login_refuses_wrong_keys_and_sets_a_cookie_without_the_key(
    browser: Any, site: str
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{site}/inspector/sessions")
    assert "/inspector/login" in page.url
    for wrong in ("nope", KEY_A):  # a tenant's key is no admin key
        page.fill("#key", wrong)
        page.click("button[type=submit]")
        assert page.locator(".error").inner_text() == "That is not an admin key."
    page.fill("#key", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site}/inspector/sessions*")
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert ADMIN not in cookie["value"]
    assert hash_api_key(ADMIN) not in cookie["value"]
    # a tampered cookie is no login
    context.add_cookies([{**cookie, "value": cookie["value"][:-4] + "0000"}])
    page.goto(f"{site}/inspector/sessions")
    assert "/inspector/login" in page.url
    context.close()


def test_sessions_list_pages_and_searches(browser: Any, site: str, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    _login(page, site)
    assert page.locator("h1").inner_text() == "Sessions of a"
    rows = page.locator("#sessions tbody tr")
    assert rows.count() == 50
    assert "trip-paris" in rows.first.inner_text()  # ids in code-point order
    _shot(page, "sessions", tmp_path)
    page.click("#next-page")
    assert rows.count() == 11
    assert "user-059" in rows.last.inner_text()
    assert page.locator("#next-page").count() == 0
    page.fill("#prefix", "trip")
    page.click("form.search button")
    assert page.locator("#sessions tbody tr").count() == 1
    page.fill("#prefix", "nothing-starts-so")
    page.click("form.search button")
    assert page.locator("#no-sessions").is_visible()
    # the other tenant, chosen from the menu
    page.select_option("#tenant", "b")
    page.click("header form button")
    assert page.locator("h1").inner_text() == "Sessions of b"
    assert page.locator("#sessions tbody tr").count() == 1
    context.close()


def test_a_session_page_shows_history_sources_and_the_budget(
    browser: Any, site: str, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 1100})
    page = context.new_page()
    _login(page, site)
    page.fill("#prefix", "trip")
    page.click("form.search button")
    page.click("#sessions tbody a")
    session = page.locator("#session")
    text = session.inner_text()
    for expected in (
        "How do I book a cheap flight?",
        "Summarise my options.",
        "thinking",
        "America/New_York",
        "Flights to Paris",
    ):
        assert expected in text, expected
    roles = session.locator(".badge").all_inner_texts()
    assert {"user", "assistant"} <= {r.strip() for r in roles}
    links = session.locator("a[href^='https://']").evaluate_all("els => els.map(e => e.href)")
    assert "https://fares.example/flex" in links
    assert "https://airline.example/paris" in links
    assert session.locator(".bar span").count() >= 2
    _shot(page, "session", tmp_path)
    # no script runs, whatever a session holds
    assert "script-src" not in (page.evaluate("document.contentType") or "")
    context.close()


def test_a_session_page_searches_its_history(browser: Any, site: str) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 1100})
    page = context.new_page()
    _login(page, site)
    page.goto(f"{site}/inspector/sessions/trip-paris?tenant=a")
    assert page.locator("#search-results").count() == 0
    page.fill("#q", "flexible fares")
    page.click("form.search button")
    page.wait_for_url("**q=flexible+fares*")
    rows = page.locator("#hits tbody tr")
    assert rows.count() >= 2
    first = rows.first.locator("td").all_inner_texts()
    assert first[3].split(", ") == recall_terms("flexible fares")  # as indexed: stemmed
    assert "flexible fares" in first[4].lower()
    assert page.locator("#q").input_value() == "flexible fares"
    assert "Summarise my options." in page.locator("#session").inner_text()
    page.fill("#q", "zeppelin")
    page.click("form.search button")
    assert page.locator("#no-hits").inner_text() == "No message matches."
    context.close()


def test_the_analytics_page(browser: Any, site: str, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 1100})
    page = context.new_page()
    _login(page, site)
    page.click("header a:has-text('Analytics')")
    assert page.locator("h1").inner_text() == "Analytics of a"
    analytics = page.locator("#analytics")
    assert analytics.locator("svg").count() >= 1
    _shot(page, "analytics", tmp_path)
    page.select_option("select[name=mode]", "research")
    page.click("form.search button")
    assert "mode=research" in page.url
    assert page.locator("#analytics").is_visible()
    context.close()


def test_hostile_session_content_is_inert(browser: Any, tmp_path: Path) -> None:
    app = create_app(settings=keyed_settings())
    evil = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
    with LiveServer(app) as live:
        httpx.post(
            f"{live.url}/add_webtext/",
            headers=auth(KEY_A),
            json={
                "session_id": evil,
                "text_content": evil,
                "title": evil,
                "current_url": "javascript:document.title='pwned'",
            },
        )
        context = browser.new_context()
        page = context.new_page()
        _login(page, live.url)
        page.click("#sessions tbody a")
        page.locator("#session").wait_for()  # the session's page has loaded
        assert page.title().startswith("Session <img")  # shown as text; no script set it
        assert page.locator("#session a[href^='javascript:']").count() == 0
        assert evil in page.locator("#session").inner_text()
        context.close()
