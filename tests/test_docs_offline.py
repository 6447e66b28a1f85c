"""/docs and /redoc render in a real browser with every request outside loopback refused:
their scripts and styles come from the app, not from a CDN."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from api.main import create_app
from ml.settings import MLSettings
from tests.api_support import api_settings, live_server
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app over an empty registry: the pages need no model."""
    root = tmp_path_factory.mktemp("docs")
    ml_settings = MLSettings(project_root=REPO_ROOT, mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    app = create_app(api_settings(root, f"sqlite:///{root / 'requests.db'}"), ml_settings)
    with live_server(app, ready_path="/health") as url:
        yield url


def _offline_page(browser: object, outside: list[str]):  # noqa: ANN202 - a Playwright Page
    page = browser.new_page(viewport={"width": 1280, "height": 1000})  # type: ignore[attr-defined]

    def only_loopback(route) -> None:  # noqa: ANN001
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(f"{route.request.resource_type} {route.request.url}")
            route.abort()

    page.route("**/*", only_loopback)
    return page


def test_swagger_ui_lists_the_operations_without_internet(browser: object, live_url: str, tmp_path: Path) -> None:
    outside: list[str] = []
    page = _offline_page(browser, outside)
    page.goto(f"{live_url}/docs")
    page.wait_for_selector("text=/predict", timeout=30_000)
    operations = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/predict" in text for text in operations), operations
    assert any("/feedback" in text for text in operations), operations
    shot = Path(os.environ.get("PRODUCTCAT_SCREENSHOT_DIR", tmp_path)) / "api-docs.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    assert outside == [], f"the page asked for outside resources: {outside}"


def test_redoc_renders_without_internet(browser: object, live_url: str) -> None:
    outside: list[str] = []
    page = _offline_page(browser, outside)
    page.goto(f"{live_url}/redoc")
    page.wait_for_selector("text=/predict", timeout=30_000)
    assert "ProductCat" in page.inner_text("body")
    # ReDoc's bundle links its own "powered by" logo on its CDN: a decoration, refused here and
    # not needed for the page to work. Nothing else may come from outside.
    needed = [request for request in outside if not request.startswith("image ")]
    assert needed == [], f"the page asked for outside resources: {needed}"
