"""Browser fixtures: Debian's Chromium driven by Playwright's sync API against a real
stack (private Redis, one Celery worker, gunicorn) started by tests.conftest.start_stack.

One stack and one browser serve the whole module; each test gets a fresh context.
Never run ``playwright install``: the system Chromium is used (``$CHROMIUM`` overrides).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Runs before the page's own scripts (not subject to its CSP): records CSP violations
# and the pointer types the canvas receives.
WATCH_SCRIPT = """
window.__csp = [];
window.__pointerTypes = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
document.addEventListener("pointerdown", (e) => window.__pointerTypes.push(e.pointerType), true);
"""


@dataclass
class Watched:
    """A page plus what it did: console errors, uncaught errors, /predict traffic."""

    page: object
    console_errors: list = field(default_factory=list)
    page_errors: list = field(default_factory=list)
    predicts: list = field(default_factory=list)  # one entry per POST /predict sent
    in_flight: int = 0
    max_in_flight: int = 0

    def _request(self, request):
        if _is_predict(request):
            self.predicts.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _done(self, request):
        if _is_predict(request):
            self.in_flight -= 1


def _is_predict(request) -> bool:
    return request.method == "POST" and request.url.endswith("/predict")


@pytest.fixture(scope="module")
def web_stack(small_stack):
    """A real stack with one worker, shared by the module's tests."""
    return small_stack


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (set CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser, web_stack):
    """open_page(**context_options) -> Watched: a fresh context showing the page, loaded."""
    contexts = []

    def _open(path: str = "/", **options) -> Watched:
        options.setdefault("viewport", {"width": 1000, "height": 900})
        context = browser.new_context(**options)
        contexts.append(context)
        context.add_init_script(WATCH_SCRIPT)
        page = context.new_page()
        page.set_default_timeout(15_000)
        watched = Watched(page)
        page.on("console", lambda m: m.type == "error" and watched.console_errors.append(m.text))
        page.on("pageerror", lambda e: watched.page_errors.append(str(e)))
        page.on("request", watched._request)
        page.on("requestfinished", watched._done)
        page.on("requestfailed", watched._done)
        page.goto(web_stack.url + path)
        # app.js replaces the initial text once its /ready check has answered.
        page.wait_for_function(
            "() => !/^(Loading|Checking)/.test(document.getElementById('status').textContent)"
        )
        return watched

    yield _open
    for context in contexts:
        context.close()
