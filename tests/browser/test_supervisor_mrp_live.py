"""The supervisor's planning tab follows MRP runs live (headless Chromium, the running demo).

A run started elsewhere (the API, in the background) shows on the open page without polling: its
`mrp.progress` events drive the progress bar, and its `mrp.run.finished` reads the plan again.
A MutationObserver keeps every state the bar went through, since a demo run is over in
milliseconds.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_big_screen import LOAD_TIMEOUT_MS
from tests.support import wait_for_sync

pytestmark = pytest.mark.browser

UI_TIMEOUT_MS = 10_000

WATCH_PROGRESS = """
() => {
  window.__mrpSeen = [];
  const box = document.querySelector("[data-testid='mrp-progress']");
  new MutationObserver(() => {
    window.__mrpSeen.push([box.hidden, box.dataset.phase ?? "", box.dataset.percent ?? ""]);
  }).observe(box, { attributes: true });
}
"""


def _ok(response: httpx.Response, code: int = 200) -> Any:
    assert response.status_code == code, f"{response.request.url}: {response.text}"
    return response.json()


def test_a_background_run_moves_the_progress_bar_and_refreshes_the_plan(
    page: Page, demo_url: str
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{demo_url}/#/supervisor/planning", timeout=LOAD_TIMEOUT_MS)
    page.wait_for_selector(
        "body[data-loaded='supervisor']", state="attached", timeout=LOAD_TIMEOUT_MS
    )
    # The live feed is up once its snapshot arrived (the sales tab shows its state).
    live = "[data-testid='sales-live'][data-state='live']"
    page.wait_for_selector(live, state="attached", timeout=UI_TIMEOUT_MS)
    page.evaluate(WATCH_PROGRESS)
    with httpx.Client(base_url=demo_url, timeout=10.0) as api:
        job = _ok(api.post("/api/mrp/runs", params={"background": "true"}), 202)
        done = wait_for_sync(
            lambda: (
                (row := _ok(api.get(f"/api/mrp/runs/jobs/{job['job']}")))["status"] != "running"
                and row
            ),
            UI_TIMEOUT_MS / 1000,
            what="the background run",
        )
    assert done["status"] == "finished", done
    # No click, no polling: the finished event read the new plan into the tab.
    info = page.get_by_test_id("mrp-run-info")
    expect(info).to_have_attribute("data-run", str(done["run"]["id"]), timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("mrp-progress")).to_be_hidden()

    seen = page.evaluate("() => window.__mrpSeen")
    shown = [(phase, percent) for hidden, phase, percent in seen if not hidden]
    assert ("planning", "100") in shown, seen
    assert seen[-1][:2] == [True, "finished"], seen
    assert errors == []
