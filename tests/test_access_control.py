"""Who may call what on the running service (real registry, SQLite request log): every route
against every scope, admin-only reload, feedback ownership, 429s with Retry-After, and an
OpenAPI schema whose declared security is what the routes actually enforce."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.db.migrate import upgrade
from api.db.session import make_engine, session_factory
from api.keys import Scope, create_api_key, revoke_api_key
from api.main import create_app
from api.settings import APISettings
from ml.settings import MLSettings
from tests.api_support import api_settings, build_registry, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHIRT = {"title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle", "price": "$24.99"}
KEYS = {"predict": [Scope.PREDICT], "feedback": [Scope.FEEDBACK], "read": [Scope.READ], "admin": [Scope.ADMIN],
        "default": None}
# (method, path, body, scope needed); answers past auth need no data: 404 for an unknown request_id/report.
ROUTES: list[tuple[str, str, dict[str, Any] | None, Scope]] = [
    ("POST", "/predict", SHIRT, Scope.PREDICT),
    ("POST", "/feedback", {"request_id": "no-such-request", "label": "Shirts"}, Scope.FEEDBACK),
    ("POST", "/model/reload", None, Scope.ADMIN),
    ("GET", "/model", None, Scope.READ),
    ("GET", "/metrics", None, Scope.READ),
    ("GET", "/reports/drift", None, Scope.READ),
    ("GET", "/reports/drift/latest", None, Scope.READ),
    ("GET", "/reports/drift/1", None, Scope.READ),
    ("GET", "/reports/drift/1/quality", None, Scope.READ),
    ("GET", "/shadow/report", None, Scope.READ),
]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> MLSettings:
    return build_registry(tmp_path_factory.mktemp("registry"), sizes=(300,))[0]


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'requests.db'}"
    upgrade(url)
    return url


@pytest.fixture
def keys(database: str) -> dict[str, str]:
    """One plaintext key per scope (and the default predict+feedback), plus a revoked one."""
    engine = make_engine(database)
    with session_factory(engine)() as session:
        made = {name: create_api_key(session=session, name=name, **({"scopes": s} if s else {}))[1]
                for name, s in KEYS.items()}
        made["revoked"] = create_api_key(session=session, name="revoked")[1]
        revoke_api_key(session=session, name="revoked")
    engine.dispose()
    return made


@contextlib.contextmanager
def serve(registry: MLSettings, database: str, root: Path, **overrides: object) -> Iterator[TestClient]:
    # Behind uvicorn's proxy-header handling, as behind a reverse proxy: X-Forwarded-For picks the
    # caller's address, so one client can speak from several.
    app = create_app(api_settings(root, database, **overrides), registry)
    with TestClient(ProxyHeadersMiddleware(app, trusted_hosts="*")) as client:
        wait_ready(client)
        yield client


def service_state(client: TestClient) -> Any:
    return client.app.app.state.service  # type: ignore[attr-defined]


ELSEWHERE = {"X-Forwarded-For": "198.51.100.9"}


def call(client: TestClient, method: str, path: str, body: dict[str, Any] | None,
         headers: dict[str, str] | None = None) -> Any:
    return client.request(method, path, json=body, headers=headers or {})


def test_every_route_needs_its_scope_and_admin_holds_them_all(registry, database, keys, tmp_path) -> None:
    # One revoked key per route: more failed authentications than the default 10 a minute (tested below).
    with serve(registry, database, tmp_path, require_api_key_for_predict=True, open_read_routes=False,
               rate_limit_failed_auth_per_address=100) as client:
        for method, path, body, scope in ROUTES:
            assert call(client, method, path, body).status_code == 401, path
            assert call(client, method, path, body, {"X-API-Key": keys["revoked"]}).status_code == 403, path
            for name, scopes in KEYS.items():
                held = scopes or [Scope.PREDICT, Scope.FEEDBACK]
                answer = call(client, method, path, body, {"X-API-Key": keys[name]})
                if scope in held or Scope.ADMIN in held:
                    assert answer.status_code not in {401, 403, 429}, (path, name, answer.text)
                else:
                    assert answer.status_code == 403, (path, name, answer.text)
                    assert answer.json()["detail"] == f"this API key lacks the scope '{scope.value}'"
        # The same key as a bearer token: what a Prometheus scrape sends.
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {keys['read']}"})
        assert scraped.status_code == 200 and "productcat_requests_total" in scraped.text
        reload = client.post("/model/reload", headers={"X-API-Key": keys["admin"]})
        assert reload.status_code == 200 and reload.json()["version"] is not None


def test_open_predict_still_checks_a_presented_key_for_its_scope(registry, database, keys, tmp_path) -> None:
    with serve(registry, database, tmp_path, open_read_routes=True) as client:
        assert client.post("/predict", json=SHIRT).status_code == 200
        assert client.post("/predict", json=SHIRT, headers={"X-API-Key": keys["predict"]}).status_code == 200
        refused = client.post("/predict", json=SHIRT, headers={"X-API-Key": keys["feedback"]})
        assert refused.status_code == 403 and "'predict'" in refused.json()["detail"]
        assert client.get("/model").status_code == 200 and client.get("/reports/drift").json() == []
        assert client.post("/model/reload").status_code == 401  # open read routes do not open admin ones


def test_feedback_belongs_to_the_key_that_gave_it(registry, database, keys, tmp_path) -> None:
    with serve(registry, database, tmp_path) as client:
        request_id = client.post("/predict", json=SHIRT).json()["predictions"][0]["request_id"]

        def give(key: str, label: str) -> Any:
            return client.post("/feedback", json={"request_id": request_id, "label": label},
                               headers={"X-API-Key": keys[key]})

        assert give("feedback", "Tops").status_code == 201
        refused = give("default", "Shirts")
        assert refused.status_code == 409 and "only an admin key" in refused.json()["detail"]
        assert give("feedback", "Shirts").status_code == 201  # correcting its own answer
        assert give("admin", "Tshirts").status_code == 201
        assert give("feedback", "Tops").status_code == 409  # the admin's answer now stands
    engine = make_engine(database)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT label FROM feedback ORDER BY id")).scalars().all()
    engine.dispose()
    assert rows == ["Tops", "Shirts", "Tshirts"]


def _retry_after(answer: Any) -> int:
    assert answer.status_code == 429, answer.text
    return int(answer.headers["Retry-After"])


def test_predict_is_limited_per_key_and_per_address(registry, database, keys, tmp_path) -> None:
    with serve(registry, database, tmp_path, rate_limit_predict_per_key=3, rate_limit_predict_per_address=2,
               open_read_routes=True) as client:
        by_key = [client.post("/predict", json=SHIRT, headers={"X-API-Key": keys["predict"]}) for _ in range(4)]
        assert [a.status_code for a in by_key[:3]] == [200] * 3
        assert 1 <= _retry_after(by_key[3]) <= 20  # 3 a minute: one token every 20 s
        assert client.post("/predict", json=SHIRT, headers={"X-API-Key": keys["default"]}).status_code == 200

        anonymous = [client.post("/predict", json=SHIRT) for _ in range(3)]
        assert [a.status_code for a in anonymous[:2]] == [200, 200] and _retry_after(anonymous[2]) <= 30
        assert client.post("/predict", json=SHIRT, headers=ELSEWHERE).status_code == 200  # another address

        text = client.get("/metrics").text
        assert 'productcat_throttled_total{limit="predict_key"} 1.0' in text
        assert 'productcat_throttled_total{limit="predict_address"} 1.0' in text


def test_failed_authentications_are_throttled_before_the_database(registry, database, keys, tmp_path) -> None:
    with serve(registry, database, tmp_path, rate_limit_failed_auth_per_address=3, open_read_routes=True) as client:
        lookups: list[str] = []
        engine = service_state(client).sessions.kw["bind"]
        sa.event.listen(engine, "before_cursor_execute",
                        lambda conn, cursor, statement, *rest: lookups.append(statement) if "api_keys" in statement
                        else None)
        wrong = {"X-API-Key": keys["admin"][:-2] + "xx"}
        assert [client.post("/model/reload", headers=wrong).status_code for _ in range(3)] == [403] * 3
        assert len(lookups) == 3
        blocked = client.post("/model/reload", headers={"X-API-Key": keys["admin"]})  # even a good key now
        assert _retry_after(blocked) >= 1 and "failed authentications" in blocked.json()["detail"]
        assert client.post("/predict", json=SHIRT, headers=wrong).status_code == 429
        assert len(lookups) == 3  # refused without a query
        assert client.post("/predict", json=SHIRT).status_code == 200  # no key: nothing to throttle
        assert client.post("/model/reload", headers={"X-API-Key": keys["admin"]} | ELSEWHERE).status_code == 200
        assert 'productcat_throttled_total{limit="failed_auth"} 2.0' in client.get("/metrics").text


@pytest.mark.parametrize("overrides", [
    {"open_read_routes": False},  # the service's defaults: /predict open, read routes closed
    {"open_read_routes": True, "require_api_key_for_predict": True},
    {"open_read_routes": True},
])
def test_the_schema_declares_a_key_exactly_where_one_is_required(registry, database, tmp_path, overrides) -> None:
    defaults = APISettings.model_fields
    assert not defaults["open_read_routes"].default and not defaults["require_api_key_for_predict"].default
    bodies = {"/predict": SHIRT, "/feedback": {"request_id": "no-such-request", "label": "Shirts"},
              "/explain": {"product": SHIRT}}
    with serve(registry, database, tmp_path, **overrides) as client:
        schema = client.get("/openapi.json").json()
        assert set(schema["components"]["securitySchemes"]) == {"APIKeyHeader", "HTTPBearer"}
        checked = 0
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                security = operation.get("security", [])
                declared_required = bool(security) and {} not in security
                answer = call(client, method.upper(), path.replace("{check_id}", "1"), bodies.get(path))
                assert (answer.status_code == 401) == declared_required, (method, path, security, answer.text)
                if security:  # a route that checks keys documents what a client must handle
                    assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)
                checked += 1
        # with /explain, the review queue's four (GET /review, /review/{id}, /labels, resolve) and GET /shadow/report
        assert checked == 16
