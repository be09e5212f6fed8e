"""The big screen's build: registry-only packages, relative assets, nothing fetched from outside.

Factories are often offline, so the page must load every byte from the cloud that serves it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

from tests.support import missing_service

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
DIST = DASHBOARDS / "dist"
# An absolute URL or protocol-relative reference in markup or CSS.
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)", re.IGNORECASE)
CSS_IMPORT = re.compile(r"@import\s", re.IGNORECASE)


class _References(HTMLParser):
    """Collects every src/href of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value is not None:
                self.references.append((tag, value))


def _built_index() -> Path:
    index = DIST / "index.html"
    if not index.is_file():
        missing_service("built dashboards (cd dashboards && npm ci && npm run build)")
    return index


def test_package_declares_build_and_check_scripts() -> None:
    package = json.loads((DASHBOARDS / "package.json").read_text(encoding="utf-8"))
    assert package["scripts"]["build"].endswith("vite build")
    assert "tsc --noEmit" in package["scripts"]["check"]
    assert "echarts" in package["dependencies"]


def test_lockfile_pins_registry_packages_only() -> None:
    lock = json.loads((DASHBOARDS / "package-lock.json").read_text(encoding="utf-8"))
    packages = lock["packages"]
    assert "node_modules/echarts" in packages
    for name, entry in packages.items():
        if name == "":
            continue
        # No git, file, link or plain-http sources: every package is a registry tarball.
        resolved = entry.get("resolved")
        assert resolved is None or (
            resolved.startswith("https://") and resolved.endswith(".tgz")
        ), f"{name}: {resolved}"
        assert "integrity" in entry or entry.get("link"), f"{name} has no integrity hash"


def test_page_references_only_bundled_relative_assets() -> None:
    index = _built_index()
    parser = _References()
    parser.feed(index.read_text(encoding="utf-8"))
    assert parser.references, "index.html references no assets"
    for tag, reference in parser.references:
        if reference.startswith("data:"):
            continue
        assert not EXTERNAL.match(reference), f"<{tag}> loads {reference} from outside"
        assert reference.startswith("./"), f"<{tag}> {reference} is not relative to the page"
        assert (DIST / reference).is_file(), f"<{tag}> {reference} is not in dist/"


def test_stylesheets_fetch_no_fonts_or_images_from_outside() -> None:
    _built_index()
    stylesheets = list(DIST.rglob("*.css"))
    assert stylesheets, "the build produced no stylesheet"
    for sheet in stylesheets:
        css = sheet.read_text(encoding="utf-8")
        assert not CSS_IMPORT.search(css), f"{sheet.name} uses @import"
        for url in CSS_URL.findall(css):
            assert url.startswith("data:") or not EXTERNAL.match(url), f"{sheet.name}: {url}"


def test_display_logic_unit_tests_pass() -> None:
    """Exact decimal formatting and reconnect backoff (node's test runner, see dashboards/tests)."""
    npm = shutil.which("npm")
    if npm is None or not (DASHBOARDS / "node_modules" / ".bin" / "tsc").exists():
        missing_service("npm with the dashboards' dependencies (cd dashboards && npm ci)")
    assert npm is not None
    result = subprocess.run(
        [npm, "run", "--silent", "test"],
        cwd=DASHBOARDS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert re.search(r"^# fail 0$", result.stdout, re.MULTILINE), result.stdout[-2000:]
