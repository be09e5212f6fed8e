"""The big screen in headless Chromium against the running demo: live data, counting up.

One `taktline demo` subprocess (free ports, fresh SQLite) serves the module; each test opens the
page at `/` in a new browser context and waits on what a person at the wall would see.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, sync_playwright

from tests.demo_support import DIST, running_demo, wait_until
from tests.support import missing_service, wait_for_sync

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COORDINATOR_SCREENSHOT = Path("/tmp/bigscreen-demo.png")
LOAD_TIMEOUT_MS = 20_000
COUNT_TIMEOUT_S = 30.0
WORK_ORDER = "WO-1001"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _number(text: str | None) -> Decimal | None:
    """The first number in a shown figure ("1,234 pcs" -> 1234), None when there is none."""
    match = _NUMBER.search(text or "")
    return Decimal(match.group().replace(",", "")) if match else None


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a `taktline demo` that runs for this module's tests."""
    if not CHROMIUM.exists():
        missing_service("chromium")
    if not (DIST / "index.html").is_file():
        missing_service("built dashboards (cd dashboards && npm ci && npm run build)")
    with running_demo(tmp_path_factory.mktemp("demo")) as (_, url):
        yield url


@pytest.fixture(scope="module")
def browser(demo_url: str) -> Iterator[Browser]:
    """Debian's Chromium, headless (never a downloaded browser: `playwright install` is not run)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Screen:
    """The big screen in one browser tab, with what it requested and complained about."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", self._on_request)
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def open(self) -> None:
        self.page.goto(f"{self.base_url}/", timeout=LOAD_TIMEOUT_MS)
        self.page.wait_for_selector("body[data-loaded]", state="attached", timeout=LOAD_TIMEOUT_MS)

    def text(self, testid: str) -> str:
        return self.page.get_by_test_id(testid).inner_text(timeout=5_000).strip()

    def attribute(self, testid: str, name: str) -> str | None:
        return self.page.get_by_test_id(testid).get_attribute(name, timeout=5_000)

    def figure(self, testid: str) -> Decimal | None:
        return _number(self.text(testid))

    def wait_above(self, testid: str, floor: Decimal, timeout: float = COUNT_TIMEOUT_S) -> Decimal:
        """Wait until the figure shown at `testid` is larger than `floor`; return it."""

        def above() -> Decimal | None:
            value = self.figure(testid)
            return value if value is not None and value > floor else None

        return wait_until(above, timeout, f"{testid} > {floor}")

    def _on_request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")


@pytest.fixture
def screen(browser: Browser, demo_url: str) -> Iterator[Screen]:
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    try:
        screen = Screen(context.new_page(), demo_url)
        screen.open()
        yield screen
    finally:
        context.close()


def _wait_shown(screen: Screen, testid: str) -> Decimal:
    return wait_until(lambda: screen.figure(testid), COUNT_TIMEOUT_S, f"a figure at {testid}")


def test_machine_count_goes_up_on_screen_over_the_websocket(screen: Screen) -> None:
    wait_for_sync(
        lambda: screen.attribute("conn-status", "data-state") == "live",
        timeout=COUNT_TIMEOUT_S,
        what="connection indicator live",
    )
    # The line's output machine and the first one: a fault may hold one of them for a while.
    shown = {code: f"machine-{code}-good" for code in ("M3", "M1")}
    first = {code: _wait_shown(screen, testid) for code, testid in shown.items()}

    def risen() -> list[str]:
        figures = {code: screen.figure(testid) for code, testid in shown.items()}
        return [c for c, value in figures.items() if value is not None and value > first[c]]

    # No reload: only the websocket can move a figure on an open page.
    wait_for_sync(risen, timeout=COUNT_TIMEOUT_S, interval=0.2, what=f"a rise from {first}")
    assert screen.attribute("conn-status", "data-state") == "live"
    assert screen.page.evaluate("document.body.dataset.conn") == "live"


def test_work_order_counts_up_and_stock_and_promise_are_shown(
    screen: Screen, tmp_path: Path
) -> None:
    good_id = f"wo-{WORK_ORDER}-good"
    first = _wait_shown(screen, good_id)
    screen.wait_above(good_id, first)
    assert screen.attribute(f"wo-{WORK_ORDER}", "data-status") == "running"

    # Components backflushed: the housing's shown on-hand falls below its opening stock.
    housing = "stock-RM-HOUSING-WH1/RAW-on-hand"
    opening = Decimal(6000)

    def housing_below_opening() -> Decimal | None:
        value = screen.figure(housing)
        return value if value is not None and value < opening else None

    on_hand = wait_until(housing_below_opening, COUNT_TIMEOUT_S, f"{housing} below {opening}")
    assert on_hand > 0
    for item, location in (("RM-SCREW-M6", "WH1/RAW"), ("FG-100", "WH1/FG")):
        assert screen.figure(f"stock-{item}-{location}-on-hand") is not None

    promised = "promise-SO-1001-1-promised"
    instant = wait_until(
        lambda: screen.attribute(promised, "data-value"), COUNT_TIMEOUT_S, "SO-1001 promised"
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", instant), instant
    assert screen.text(promised), "the promised date is shown"

    _screenshot(screen.page, tmp_path / "big-screen.png")
    _screenshot(screen.page, COORDINATOR_SCREENSHOT)


def test_page_loads_only_from_the_cloud_and_logs_no_errors(screen: Screen) -> None:
    """Factories are often offline: nothing is fetched from anywhere but the serving cloud."""
    wait_for_sync(
        lambda: screen.attribute("conn-status", "data-state") == "live",
        timeout=COUNT_TIMEOUT_S,
        what="connection indicator live",
    )
    own = f"{screen.base_url}/"
    outside = [url for url in screen.requests if not url.startswith((own, "data:"))]
    assert screen.requests, "no requests were recorded"
    assert not outside, outside
    assert not screen.errors, screen.errors


def _screenshot(page: Page, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"
