"""The web page at / in a real browser (Debian's Chromium driven by Playwright), over a live app,
a real registry and Postgres: classify with bars and highlighted words, the needs-review banner,
a reviewer resolving the item, the no-key and wrong-key answers, and the tabs from the keyboard.

With PRODUCTCAT_SCREENSHOT_DIR set, the page is saved there as web-classify.png and web-review.png
(the README shows them from docs/images/)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import sqlalchemy as sa

from api.db.session import make_engine
from api.keys import Scope, create_api_key
from api.main import create_app
from api.schemas import MAX_DESCRIPTION_CHARS
from tests.api_support import api_settings, build_registry, database_with_key, live_server, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHIRT = {"title": "Turtle Check Men Navy Blue Shirt", "description": "Cotton shirt with a spread collar, full sleeves",
         "brand": "Turtle"}
UNSURE = {"title": "Blue casual shirt for men", "brand": "Roadster"}
ALSO_UNSURE = {"title": "Women Red Handbag with zip closure", "description": "Faux leather, two handles"}
MARKUP = {"title": "Navy <b>shirt</b> <img src=x onerror=alert(1)>"}  # shown as text, never as elements


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two live apps on one Postgres request log: `review` routes every answer below a 0.999 top
    probability to the queue, `answer` never does. Keys: a reviewer's and one with predict only."""
    root = tmp_path_factory.mktemp("web")
    registry = build_registry(root / "registry", sizes=(300,))[0]
    with database_with_key("reviewer", scopes=[Scope.PREDICT, Scope.REVIEW]) as (database, reviewer_key):
        engine = make_engine(database)
        with sa.orm.Session(engine) as session:
            _, predict_key = create_api_key(session=session, name="shop", scopes=[Scope.PREDICT])
        engine.dispose()
        # A generous explanation budget: the page's flow is under test here, the budget in tests/test_explain.py.
        budget = {"explain_time_budget_ms": 60_000}
        review_app = create_app(api_settings(root / "review", database, review_threshold=0.999, **budget), registry)
        answer_app = create_app(api_settings(root / "answer", database, review_threshold=0.0, **budget), registry)
        with live_server(review_app) as review_url, live_server(answer_app) as answer_url:
            yield {"review": review_url, "answer": answer_url, "reviewer_key": reviewer_key,
                   "predict_key": predict_key}


class Page:
    """A fresh browser context on the page; every request outside loopback is refused and listed,
    every uncaught script error collected."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.page = self.context.new_page()
        self.outside: list[str] = []
        self.script_errors: list[str] = []
        self.page.route("**/*", self._only_loopback)
        self.page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        self.page.goto(f"{url}/")

    def _only_loopback(self, route: Any) -> None:
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def use_key(self, key: str) -> None:
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Use key").click()

    def classify(self, product: dict[str, str]) -> None:
        page = self.page
        page.get_by_label("Title").fill(product.get("title", ""))
        page.get_by_label("Description").fill(product.get("description", ""))
        page.get_by_label("Brand").fill(product.get("brand", ""))
        page.get_by_role("button", name="Classify", exact=True).click()

    def close(self) -> None:
        assert self.outside == [], f"the page asked for outside resources: {self.outside}"
        assert self.script_errors == [], self.script_errors
        self.context.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[[str], Page]]:
    opened: list[Page] = []

    def make(url: str) -> Page:
        opened.append(Page(browser, url))
        return opened[-1]

    yield make
    for page in opened:
        page.close()


def open_items(stack: dict[str, str]) -> int:
    answer = httpx.get(f"{stack['review']}/review", params={"status": "open"},
                       headers={"X-API-Key": stack["reviewer_key"]}, timeout=30)
    return int(answer.raise_for_status().json()["total"])


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    shot = Path(os.environ.get("PRODUCTCAT_SCREENSHOT_DIR", tmp_path)) / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


def test_the_page_is_public_html_with_local_assets_only(stack: dict[str, str]) -> None:
    answer = httpx.get(f"{stack['review']}/", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    for asset in ("static/app.js", "static/app.css"):
        assert httpx.get(f"{stack['review']}/{asset}", timeout=30).status_code == 200
    assert "http" not in answer.text.replace('href="docs"', ""), "the page links nothing outside the app"
    assert httpx.get(f"{stack['review']}/docs", timeout=30).status_code == 200
    assert "/" not in httpx.get(f"{stack['review']}/openapi.json", timeout=30).json()["paths"]


def test_a_product_gets_its_categories_bars_and_highlighted_words(
        browser: Any, stack: dict[str, str], open_page: Callable[[str], Page], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    view = open_page(stack["answer"])
    page = view.page
    expect(page.locator("#model-info")).to_contain_text("version 1")
    expect(page.locator("#photo-field")).to_be_hidden()  # a text-only model: no photo input
    view.classify(SHIRT)

    expected = httpx.post(f"{stack['answer']}/predict?top_k=5", json=SHIRT, timeout=60).json()["predictions"][0]
    expect(page.locator("#answer")).to_contain_text(expected["label"])
    expect(page.locator("#review-banner")).to_be_hidden()
    bars = page.locator("#top-k-list li")
    expect(bars).to_have_count(5)
    expect(bars.first.locator(".name")).to_have_text(expected["top_k"][0]["label"])
    expect(bars.first.locator(".pct")).to_have_text(f"{100 * expected['top_k'][0]['probability']:.1f} %")
    assert float(bars.first.locator(".fill").evaluate("e => e.getBoundingClientRect().width")) > 0

    marks = page.locator("#explained-fields mark")
    expect(marks.first).to_be_visible()
    weights = [float(w) for w in marks.evaluate_all("els => els.map(e => e.dataset.weight)")]
    assert any(w > 0 for w in weights), weights
    assert page.locator("#explained-fields mark.towards").first.get_attribute("title").startswith("+")
    expect(page.locator("#top-features li").first).to_be_visible()
    screenshot(page, "web-classify.png", tmp_path)

    status = page.locator("#classify-status")
    view.classify({"title": ""})  # nothing to classify: said before any call
    expect(status).to_have_text("Type a title or a description first.")
    view.classify({"title": "shirt", "description": "x" * (MAX_DESCRIPTION_CHARS + 1)})
    expect(status).to_contain_text("The API refused the input: description")  # the 422 names the field
    expect(page.locator("#result")).to_be_hidden()


def test_an_unsure_product_is_resolved_by_a_reviewer_and_leaves_the_queue(
        browser: Any, stack: dict[str, str], open_page: Callable[[str], Page], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    view = open_page(stack["review"])
    page = view.page
    view.use_key(stack["reviewer_key"])
    expect(page.locator("#key-state")).to_contain_text("Key set")
    view.classify(UNSURE)
    banner = page.locator("#review-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Needs review")
    expect(page.locator("#answer")).to_have_text("No category yet: needs review")
    expect(page.locator("#top-k-list li")).to_have_count(5)  # the top-k still comes with it
    review_id = banner.inner_text().split("item #", 1)[1].split(";", 1)[0]

    httpx.post(f"{stack['review']}/predict", json=ALSO_UNSURE, timeout=60).raise_for_status()  # a second item
    wait_for(lambda: open_items(stack) == 2, what="two open review items")  # the queue is written off the request path

    page.get_by_role("tab", name="Review").click()
    item = page.locator(f'[data-review-id="{review_id}"]')
    expect(item).to_be_visible()
    expect(item.locator("h3")).to_have_text(UNSURE["title"])
    expect(page.locator("#review-list > li")).to_have_count(2)
    picker = item.get_by_role("combobox", name="Right category")
    picker.fill("shir")  # search over the label set
    options = item.get_by_role("option")
    expect(options.first).to_be_visible()
    found = options.evaluate_all("els => els.map(e => e.dataset.label)")
    assert "Shirts" in found and all("shir" in label.lower() for label in found), found
    screenshot(page, "web-review.png", tmp_path)
    for _ in range(found.index("Shirts") + 1):
        picker.press("ArrowDown")
    picker.press("Enter")
    expect(picker).to_have_value("Shirts")
    item.get_by_role("button", name="Resolve").click()

    expect(item).to_have_count(0)
    expect(page.locator("#review-status")).to_contain_text(f"#{review_id} resolved")
    stored = httpx.get(f"{stack['review']}/review/{review_id}", headers={"X-API-Key": stack["reviewer_key"]},
                       timeout=30).json()
    assert (stored["status"], stored["resolved_label"]) == ("resolved", "Shirts")
    expect(page.locator("#review-list > li")).to_have_count(1)

    httpx.post(f"{stack['review']}/predict", json=MARKUP, timeout=60).raise_for_status()
    wait_for(lambda: open_items(stack) == 2, what="the new review item")
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#review-list h3").filter(has_text="Navy")).to_have_text(MARKUP["title"])
    assert page.locator("#review-list b, #review-list img").count() == 0


def test_review_without_a_key_or_with_a_wrong_one_says_so(
        browser: Any, stack: dict[str, str], open_page: Callable[[str], Page]) -> None:
    from playwright.sync_api import expect

    page = open_page(stack["review"]).page
    status = page.locator("#review-status")
    page.get_by_role("tab", name="Review").click()
    expect(status).to_contain_text("This needs an API key with the scope 'review'")
    view = open_page(stack["review"])  # a new tab: session storage starts empty
    view.use_key("pc_00000000_not-a-key")
    view.page.get_by_role("tab", name="Review").click()
    expect(view.page.locator("#review-status")).to_contain_text("Key not recognised")
    view.use_key(stack["predict_key"])
    expect(view.page.locator("#review-status")).to_contain_text("This key lacks the scope 'review'")


def test_tabs_and_fields_work_from_the_keyboard(
        browser: Any, stack: dict[str, str], open_page: Callable[[str], Page]) -> None:
    from playwright.sync_api import expect

    page = open_page(stack["answer"]).page
    classify, review = page.get_by_role("tab", name="Classify"), page.get_by_role("tab", name="Review")
    classify.focus()
    page.keyboard.press("ArrowRight")
    expect(review).to_have_attribute("aria-selected", "true")
    expect(review).to_be_focused()
    expect(page.locator("#panel-review")).to_be_visible()
    expect(page.locator("#panel-classify")).to_be_hidden()
    page.keyboard.press("ArrowRight")  # wraps around
    expect(classify).to_have_attribute("aria-selected", "true")
    expect(classify).to_be_focused()
    page.keyboard.press("End")
    expect(review).to_be_focused()
    page.keyboard.press("Home")
    expect(page.locator("#panel-classify")).to_be_visible()
    unlabelled = page.evaluate("""() => Array.from(document.querySelectorAll('input, select, textarea'))
        .filter(e => !e.closest('[hidden]') && e.labels.length === 0).map(e => e.id)""")
    assert unlabelled == []
    page.keyboard.press("Tab")  # from the tab into its panel, then its first field
    page.keyboard.press("Tab")
    expect(page.get_by_label("Title")).to_be_focused()
