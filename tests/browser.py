"""Headless Chromium through Playwright's sync API, as a pytest plugin
(`pytest_plugins = ["tests.browser"]` in conftest.py).

Fixtures: `browser` (one Chromium per test module), `page` (a fresh context per
test, so no cookies leak between tests) and `page_errors` (uncaught JavaScript
errors and failed static files, for tests to assert on). Playwright cannot
download browsers here, so it drives the system Chromium.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Module-scoped, not session-scoped: while Playwright's sync API is started the
    main thread counts as running an event loop, which would break async tests and
    async_to_sync() in whatever test modules run after this one."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def page_errors(page: Page) -> list[str]:
    """Uncaught JavaScript errors, and static files that failed to load, as they happen."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"JavaScript: {error}"))
    page.on(
        "response",
        lambda response: errors.append(f"{response.status} {response.url}")
        if "/static/" in response.url and response.status >= 400
        else None,
    )
    return errors


def log_in(page: Page, base_url: str, username: str, password: str) -> None:
    """Log in through the real login form (django-axes needs the request)."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("form[action='/accounts/login/'] button[type=submit]")
    page.wait_for_url(f"{base_url}/")
