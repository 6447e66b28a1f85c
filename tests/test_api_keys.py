"""API keys: the service functions and the `productcat api-key` / `productcat db` commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from api.cli import app, db_app
from api.db.migrate import upgrade
from api.db.models import ApiKey
from api.db.session import make_engine, session_factory
from api.keys import Scope, create_api_key, has_scope, list_api_keys, revoke_api_key, scopes_of, verify_api_key
from api.settings import get_api_settings
from tests.conftest import head_revision


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'requests.db'}"


@pytest.fixture
def session(sqlite_url: str) -> Iterator[Session]:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    with session_factory(engine)() as session:
        yield session
    engine.dispose()


def test_a_created_key_verifies_and_only_its_hash_is_stored(session: Session) -> None:
    key, plaintext = create_api_key(session=session, name="shop-a")
    scheme, prefix, secret = plaintext.split("_", 2)
    assert (scheme, prefix) == ("pc", key.prefix) and len(secret) >= 43  # 32 random bytes, base64url

    assert verify_api_key(session=session, presented=plaintext) == key
    stored = session.execute(sa.select(ApiKey.__table__)).one()._asdict()
    assert all(secret not in str(value) for value in stored.values())
    assert len(stored["key_hash"]) == 64 and stored["key_hash"] != secret


def test_two_keys_get_different_prefixes_and_secrets(session: Session) -> None:
    first, first_plain = create_api_key(session=session, name="shop-a")
    second, second_plain = create_api_key(session=session, name="shop-b")
    assert first.prefix != second.prefix and first_plain != second_plain
    assert verify_api_key(session=session, presented=second_plain) == second


@pytest.mark.parametrize("tamper", [
    lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # wrong secret
    lambda key: "pc_00000000_" + key.split("_", 2)[2],  # unknown prefix
    lambda key: key.replace("pc_", "xx_", 1),  # wrong scheme
    lambda key: key[: len("pc_12345678_")],  # no secret
    lambda key: "",
    lambda key: "not-a-key",
])
def test_anything_but_the_exact_key_fails(session: Session, tamper: Callable[[str], str]) -> None:
    _, plaintext = create_api_key(session=session, name="shop-a")
    presented = tamper(plaintext)
    assert presented != plaintext
    assert verify_api_key(session=session, presented=presented) is None


def test_a_revoked_key_fails_and_revoking_again_keeps_the_first_time(session: Session) -> None:
    _, plaintext = create_api_key(session=session, name="shop-a")
    revoked = revoke_api_key(session=session, name="shop-a")
    first_time = revoked.revoked_at
    assert first_time is not None
    assert verify_api_key(session=session, presented=plaintext) is None
    assert revoke_api_key(session=session, name="shop-a").revoked_at == first_time


def test_names_are_unique_and_unknown_names_cannot_be_revoked(session: Session) -> None:
    create_api_key(session=session, name="shop-a")
    with pytest.raises(ValueError, match="exists already"):
        create_api_key(session=session, name="shop-a")
    with pytest.raises(LookupError, match="no API key named 'nobody'"):
        revoke_api_key(session=session, name="nobody")


def test_scopes_default_to_predict_and_feedback_and_admin_holds_every_scope(session: Session) -> None:
    shop, _ = create_api_key(session=session, name="shop-a")
    scraper, _ = create_api_key(session=session, name="prometheus", scopes=[Scope.READ])
    ops, _ = create_api_key(session=session, name="ops", scopes=[Scope.ADMIN, Scope.ADMIN])
    assert scopes_of(shop) == (Scope.PREDICT, Scope.FEEDBACK) and shop.scopes == "predict,feedback"
    assert [has_scope(scraper, scope) for scope in Scope] == [False, False, True, False, False]
    assert all(has_scope(ops, scope) for scope in Scope) and ops.scopes == "admin"
    with pytest.raises(ValueError, match="at least one scope"):
        create_api_key(session=session, name="nothing", scopes=[])
    assert [key.name for key in list_api_keys(session=session)] == ["shop-a", "prometheus", "ops"]


@pytest.fixture
def cli_database(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    get_api_settings.cache_clear()
    yield sqlite_url
    get_api_settings.cache_clear()


def test_cli_creates_a_working_key_shown_once_and_revokes_it(cli_database: str) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["create", "ci-bot"])  # also migrates the empty database
    assert created.exit_code == 0, created.output
    plaintext = created.stdout.strip()
    assert plaintext.startswith("pc_") and "cannot be shown again" in created.stderr

    engine = make_engine(cli_database)
    sessions = session_factory(engine)
    with sessions() as session:
        assert verify_api_key(session=session, presented=plaintext) is not None

    duplicate = runner.invoke(app, ["create", "ci-bot"])
    assert duplicate.exit_code == 2 and "exists already" in duplicate.stderr
    assert runner.invoke(app, ["revoke", "ci-bot"]).exit_code == 0
    with sessions() as session:
        assert verify_api_key(session=session, presented=plaintext) is None
    assert runner.invoke(app, ["revoke", "nobody"]).exit_code == 2
    engine.dispose()


def test_cli_db_upgrade_and_current(cli_database: str) -> None:
    runner = CliRunner()
    assert runner.invoke(db_app, ["current"]).stdout.strip() == "none"
    assert runner.invoke(db_app, ["upgrade"]).exit_code == 0
    assert runner.invoke(db_app, ["current"]).stdout.strip() == head_revision()


def test_cli_creates_scoped_keys_and_lists_them_without_secrets(cli_database: str) -> None:
    runner = CliRunner()
    shop = runner.invoke(app, ["create", "shop-a"]).stdout.strip()
    ops = runner.invoke(app, ["create", "ops", "--scope", "admin"])
    assert ops.exit_code == 0 and "scopes admin" in ops.stderr
    assert runner.invoke(app, ["create", "bad", "--scope", "root"]).exit_code == 2
    assert runner.invoke(app, ["revoke", "shop-a"]).exit_code == 0

    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "PREFIX", "SCOPES", "CREATED", "(UTC)", "REVOKED", "(UTC)"]
    cells = {row.split()[0]: row.split() for row in rows}
    assert set(cells) == {"shop-a", "ops"}
    assert cells["shop-a"][1:3] == [shop.split("_")[1], "predict,feedback"] and cells["shop-a"][-1] != "-"
    assert cells["ops"][2] == "admin" and cells["ops"][-1] == "-"
    secrets = [shop.split("_", 2)[2], ops.stdout.strip().split("_", 2)[2]]
    assert not any(secret in listed.output for secret in secrets)
