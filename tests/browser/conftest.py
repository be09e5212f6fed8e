"""Fixtures of the supervisor page tests: each module gets a `taktline demo` of its own (they
change its plan, orders and stock), an API client on it and a fresh Chromium page per test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from tests.browser.test_big_screen import CHROMIUM, CHROMIUM_ARGS
from tests.demo_support import DIST, running_demo
from tests.support import missing_service


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a `taktline demo` of this module's own."""
    if not CHROMIUM.exists():
        missing_service("chromium")
    if not (DIST / "index.html").is_file():
        missing_service("built dashboards (cd dashboards && npm ci && npm run build)")
    with running_demo(tmp_path_factory.mktemp("demo")) as (_, url):
        yield url


@pytest.fixture(scope="module")
def api(demo_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo_url, timeout=10.0) as client:
        yield client


@pytest.fixture
def page(demo_url: str) -> Iterator[Page]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = chromium.new_context(viewport={"width": 1600, "height": 1000})
            yield context.new_page()
        finally:
            chromium.close()
