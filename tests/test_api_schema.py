"""Schemathesis over the service's own OpenAPI schema, against a live uvicorn
server (real registry, real Postgres): whatever the schema admits, no 500s and
every answer matches what the schema promises."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from api.db.migrate import upgrade
from api.db.session import make_engine
from api.keys import create_api_key
from api.main import create_app
from tests.api_support import api_settings, build_registry, wait_for
from tests.conftest import fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root: Path = tmp_path_factory.mktemp("schema")
    ml_settings, _ = build_registry(root, sizes=(300,))
    with fresh_database() as database:
        upgrade(database)
        engine = make_engine(database)
        with sa.orm.Session(engine) as session:
            _, key = create_api_key(session=session, name="schemathesis")
            session.commit()
        engine.dispose()
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(api_settings(root, database), ml_settings),
                                               host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/ready").status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(ready, what="the live API")
            yield url, key
        finally:
            server.should_exit = True
            thread.join(timeout=30)


@pytest.fixture(scope="module")
def api_schema(live_api: tuple[str, str]) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_api[0]}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_answers_match_the_schema(case, live_api: tuple[str, str]) -> None:
    url, key = live_api
    case.call_and_validate(
        base_url=url, headers={"X-API-Key": key},
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
    )
