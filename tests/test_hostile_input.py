"""Hostile request bodies against a real app (real registry, real Postgres): each gets a small 4xx
naming its field, is counted in /metrics, and never reaches the model. Also: an unexpected
exception is a short, counted 500; the limits match ingest's; the schema documents them."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.keys import Scope
from api.main import create_app
from api.schemas import MAX_DESCRIPTION_CHARS, MAX_FEATURE_CHARS, MAX_TITLE_CHARS, Product
from ml.params import load_params
from ml.readers.base import RawRecord
from ml.settings import MLSettings
from ml.validate import Reason, Validator
from tests.api_support import api_settings, build_registry, database_with_key, wait_ready
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL_REPLY = 2048  # bytes: whatever was sent, the answer stays this small
MAX_BATCH = 8
MAX_PRODUCT_CHARS = 22_000
# Above the 2M-character description below, so that body reaches validation (the default, 1 MiB,
# answers it with a 413 before parsing; the 10 MB cases check that path).
BODY_LIMIT = 3 * 1024 * 1024
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    root: Path = tmp_path_factory.mktemp("hostile")
    ml_settings, _ = build_registry(root, sizes=(300,))
    with database_with_key("hostile", scopes=[Scope.PREDICT, Scope.FEEDBACK]) as (database, key):
        app = create_app(api_settings(root, database, max_batch_size=MAX_BATCH, max_body_bytes=BODY_LIMIT,
                                      max_product_chars=MAX_PRODUCT_CHARS, open_read_routes=True), ml_settings)
        _add_failing_route(app)
        with TestClient(app, raise_server_exceptions=False) as client:
            wait_ready(client)
            yield client, key


def _add_failing_route(app: FastAPI) -> None:
    async def boom() -> dict[str, str]:
        raise RuntimeError("secret internals " + "x" * 10_000)

    app.add_api_route("/boom", boom, methods=["GET"])


def _count(client: TestClient, route: str, status: int) -> float:
    text = client.get("/metrics").text
    found = re.search(rf'^productcat_requests_total{{route="{re.escape(route)}",status="{status}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


class Chunked(bytes):
    """A body sent with Transfer-Encoding: chunked (no Content-Length)."""

    def chunks(self, size: int = 64 * 1024) -> Iterator[bytes]:
        for start in range(0, len(self), size):
            yield self[start:start + size]


TEN_MB_TITLE = b'{"title": "' + b"x" * 10_000_000 + b'"}'
DEEP = b"[" * 100_000 + b"]" * 100_000
NESTED_PRODUCT = b"[" * 400 + b'{"title": "Shirt"}' + b"]" * 400
TWO_M_DESCRIPTION = ('{"title": "Shirt", "description": ["' + '", "'.join(["y" * 20_000] * 100) + '"]}').encode()
SHIRT = b'{"title": "Turtle Check Men Navy Blue Shirt"}'

# (id, route, body, headers, statuses, loc prefix the error must name or None, words in the answer)
CASES: list[tuple[str, str, bytes, dict[str, str], set[int], list[Any] | None, str]] = [
    ("nan-price", "/predict", b'{"title": "Blue Shirt", "price": NaN}', JSON, {422}, ["body", "price"], "finite"),
    ("infinity-price", "/predict", b'{"title": "Shirt", "price": Infinity}', JSON, {422}, ["body", "price"], ""),
    ("minus-infinity", "/predict", b'{"title": "Shirt", "price": -Infinity}', JSON, {422}, ["body", "price"], ""),
    ("overflow-price", "/predict", b'{"title": "Shirt", "price": 1e999}', JSON, {422}, ["body", "price"], "1e999"),
    ("nan-in-batch", "/predict", b'[{"title": "Shirt"}, {"title": "Belt", "price": NaN}]', JSON, {422},
     ["body", 1, "price"], ""),
    ("huge-int-price", "/predict", b'{"title": "Shirt", "price": 1' + b"0" * 400 + b"}", JSON, {422},
     ["body", "price"], ""),
    ("int-past-digit-limit", "/predict", b'{"title": "Shirt", "price": 1' + b"0" * 5000 + b"}", JSON, {400},
     ["body"], ""),
    ("surrogate-title", "/predict", b'{"title": "Blue \\ud800 Shirt"}', JSON, {422}, ["body", "title"], "surrogate"),
    ("surrogate-key", "/predict", b'{"title": "Shirt", "\\udfff": 1}', JSON, {422}, ["body"], "surrogate"),
    ("surrogate-label", "/feedback", b'{"request_id": "abc", "label": "\\udc00"}', JSON, {422}, ["body", "label"], ""),
    ("nan-label", "/feedback", b'{"request_id": "abc", "label": NaN}', JSON, {422}, ["body", "label"], ""),
    ("ten-mb-title", "/predict", TEN_MB_TITLE, JSON, {413}, None, "bytes"),
    ("ten-mb-title-chunked", "/predict", Chunked(TEN_MB_TITLE), JSON, {413}, None, "bytes"),
    ("ten-mb-feedback", "/feedback", TEN_MB_TITLE, JSON, {413}, None, ""),
    ("two-m-char-description", "/predict", TWO_M_DESCRIPTION, JSON, {422}, ["body", "description"],
     "at most 20,000"),
    ("product-text-total", "/predict", b'{"title": "Shirt", "description": "' + b"d" * 19_000 + b'", "features": ["'
     + b"f" * 4_000 + b'"]}', JSON, {422}, ["body"], "characters of text"),
    ("features-total", "/predict", b'{"title": "Shirt", "features": ["' + b"f" * 3_000 + b'", "' + b"g" * 3_000
     + b'"]}', JSON, {422}, ["body", "features"], "at most 5,000"),
    ("title-too-long", "/predict", b'{"title": "' + b"t" * 600 + b'"}', JSON, {422}, ["body", "title"],
     "at most 500"),
    ("not-json", "/predict", b'{"title": "Shirt"', JSON, {400}, ["body"], "not valid JSON"),
    ("not-utf8", "/predict", b'{"title": "\xff\xfe"}', JSON, {400}, ["body"], "UTF-8"),
    ("number-body", "/predict", b"42", JSON, {422}, ["body"], ""),
    ("object-as-title", "/predict", b'{"title": {"nested": {"deeper": [1, 2, 3]}}}', JSON, {422},
     ["body", "title"], ""),
    ("list-of-non-objects", "/predict", b'[1, "shirt", null]', JSON, {422}, ["body", 0], ""),
    ("empty-batch", "/predict", b"[]", JSON, {422}, ["body"], "empty"),
    ("oversize-batch", "/predict", b"[" + b", ".join([SHIRT] * (MAX_BATCH + 1)) + b"]", JSON, {422}, ["body"],
     f"at most {MAX_BATCH} products"),
    # 300,000 junk items: refused on their count before each is validated (that took seconds)
    ("huge-junk-batch", "/predict", b"[" + b",".join([b"{}"] * 300_000) + b"]", JSON, {422}, ["body"],
     f"at most {MAX_BATCH} products"),
    ("text-plain", "/predict", SHIRT, {"Content-Type": "text/plain"}, {415}, None, "application/json"),
    ("form-encoded", "/predict", SHIRT, {"Content-Type": "application/x-www-form-urlencoded"}, {415}, None, ""),
    ("no-content-type", "/feedback", b'{"request_id": "a", "label": "b"}', {}, {415}, None, ""),
    ("empty-body", "/feedback", b"", JSON, {422}, ["body"], ""),
    ("deeply-nested", "/predict", DEEP, JSON, {400}, ["body"], "nests too deeply"),
    ("nested-product", "/predict", NESTED_PRODUCT, JSON, {422}, ["body", 0], ""),
    ("bad-top-k", "/predict?top_k=100000", SHIRT, JSON, {422}, ["query", "top_k"], "at most"),
]


def _names(detail: list[dict[str, Any]], loc: list[Any]) -> bool:
    return any(error["loc"][: len(loc)] == loc for error in detail)


@pytest.mark.parametrize(("route", "body", "headers", "statuses", "loc", "words"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_hostile_body_gets_a_small_4xx_naming_the_field_and_is_counted(
    service: tuple[TestClient, str], route: str, body: bytes, headers: dict[str, str],
    statuses: set[int], loc: list[Any] | None, words: str,
) -> None:
    client, key = service
    path = route.split("?")[0]
    headers = headers | ({"X-API-Key": key} if path == "/feedback" else {})
    before = {status: _count(client, path, status) for status in statuses}
    response = client.post(route, content=body.chunks() if isinstance(body, Chunked) else body, headers=headers)
    assert response.status_code in statuses, response.text[:500]
    assert len(response.content) < SMALL_REPLY, len(response.content)
    answer = response.json()
    if loc is not None:
        assert _names(answer["detail"], loc), answer
    assert words in response.text, answer
    assert _count(client, path, response.status_code) == before[response.status_code] + 1


def test_an_unexpected_exception_is_a_short_counted_500(service: tuple[TestClient, str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    client, _ = service
    before = _count(client, "/boom", 500)
    with caplog.at_level(logging.ERROR, logger="api.errors"):
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "secret" not in response.text and "Traceback" not in response.text
    assert _count(client, "/boom", 500) == before + 1
    (record,) = [r for r in caplog.records if r.name == "api.errors"]
    assert record.exc_info is not None  # the traceback stays in the server log, once


def test_good_products_still_pass_next_to_hostile_ones(service: tuple[TestClient, str]) -> None:
    client, _ = service
    edge = {"title": "t" * MAX_TITLE_CHARS, "description": ["d" * 10_000, "e" * 9_999],
            "features": ["f" * 250] * 2, "price": 12}  # 21,000 chars
    response = client.post("/predict", json=[edge, {"title": "Turtle Check Men Navy Blue Shirt", "price": 0.5}])
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["predictions"]) == 2


def test_the_schema_documents_the_running_limits(service: tuple[TestClient, str]) -> None:
    client, _ = service
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/predict"]["post"]
    (batch,) = [v for v in operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
                if v.get("type") == "array"]
    assert (batch["minItems"], batch["maxItems"]) == (1, MAX_BATCH)
    (top_k,) = [p for p in operation["parameters"] if p["name"] == "top_k"]
    assert top_k["schema"]["maximum"] == 20
    assert f"{BODY_LIMIT:,} bytes" in operation["description"] and f"{MAX_PRODUCT_CHARS:,}" in operation["description"]
    for path in ("/predict", "/feedback"):
        assert {"400", "413", "415", "422"} <= set(schema["paths"][path]["post"]["responses"])
    product = schema["components"]["schemas"]["Product"]["properties"]
    assert product["title"]["anyOf"][0]["maxLength"] == MAX_TITLE_CHARS


def _quarantined_as_oversize(product: dict[str, Any], rules: Any) -> bool:
    validator = Validator(source="api", spec=load_params(MLSettings(project_root=REPO_ROOT)).datasets["fashion-sample"],
                          rules=rules)
    fields = {"id": "p1", "label_path": ["Apparel", "Topwear", "Shirts"]} | product
    checked = validator.check(RawRecord(row=1, fields=fields, raw=""))
    return getattr(checked, "reason", None) == Reason.OVERSIZE_TEXT


@pytest.mark.parametrize("product", [
    {"title": "t" * MAX_TITLE_CHARS},
    {"title": "t" * (MAX_TITLE_CHARS + 1)},
    {"title": "a", "description": ["d" * 10_000, "e" * (MAX_DESCRIPTION_CHARS - 10_001)]},
    {"title": "a", "description": ["d" * 10_000, "e" * (MAX_DESCRIPTION_CHARS - 10_000)]},
    {"title": "a", "features": ["f" * 2_500, "g" * (MAX_FEATURE_CHARS - 2_500)]},
    {"title": "a", "features": ["f" * 2_500, "g" * (MAX_FEATURE_CHARS - 2_499)]},
])
def test_the_api_never_accepts_what_ingest_quarantines_as_oversize(product: dict[str, Any]) -> None:
    rules = load_params(MLSettings(project_root=REPO_ROOT)).ingest
    assert (rules.max_title_chars, rules.max_description_chars, rules.max_feature_chars) >= (
        MAX_TITLE_CHARS, MAX_DESCRIPTION_CHARS, MAX_FEATURE_CHARS)
    try:
        Product.model_validate(product)
        accepted = True
    except ValueError:
        accepted = False
    assert not (accepted and _quarantined_as_oversize(product, rules))
    assert accepted or _quarantined_as_oversize(product, rules)  # at these edges the two agree exactly
