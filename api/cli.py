"""CLI of the prediction service's database: `productcat api-key create|list|revoke`, `productcat db upgrade|current`,
`productcat review export`.

Both apps read ``APISettings`` (``DATABASE_URL``) and bring the database to the
latest migration before touching a table.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console

from api.db.migrate import current_revision, upgrade
from api.db.session import make_engine, session_factory
from api.keys import DEFAULT_SCOPES, Scope, create_api_key, list_api_keys, revoke_api_key, scopes_of
from api.review import export_from_database
from api.settings import get_api_settings

app = typer.Typer(help="Create, list and revoke API keys of the prediction service.", no_args_is_help=True)
db_app = typer.Typer(help="Migrations of the request-log database (DATABASE_URL).", no_args_is_help=True)
review_app = typer.Typer(help="The human-review queue of the request-log database (DATABASE_URL).",
                         no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)  # messages; stdout carries only what a script would capture (the key)

NameArg = Annotated[str, typer.Argument(help="Who or what the key is for (unique).")]
ScopeOpt = Annotated[list[Scope] | None, typer.Option(
    "--scope", help="What the key may do; repeat for several. Default: predict and feedback. "
    "read: GET /model, /metrics, /reports/drift when they are closed; review: the human-review queue "
    "(GET /review, POST /review/{id}/resolve); admin: everything, /model/reload, "
    "overwriting other keys' feedback.", show_default=False)]


def _migrated_url() -> str:
    url = get_api_settings().db_url
    try:
        upgrade(url)
    except sa.exc.OperationalError as exc:
        err.print(f"[bold red]error:[/] cannot reach {_where(url)}: {exc.orig}")
        raise typer.Exit(code=2) from exc
    return url


def _where(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


@app.command()
def create(name: NameArg, scope: ScopeOpt = None) -> None:
    """Create a key and print it: it is stored hashed and cannot be shown again."""
    engine = make_engine(_migrated_url())
    try:
        with session_factory(engine)() as session:
            key, plaintext = create_api_key(session=session, name=name, scopes=scope or DEFAULT_SCOPES)
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    finally:
        engine.dispose()
    typer.echo(plaintext)
    err.print(f"[yellow]API key {key.name!r} (prefix {key.prefix}, scopes {key.scopes}) created. Store it now: "
              "it cannot be shown again.[/]")


@app.command("list")
def list_keys() -> None:
    """Every key: name, prefix, scopes, when created and revoked. Secrets are never stored, so never shown."""
    engine = make_engine(_migrated_url())
    try:
        with session_factory(engine)() as session:
            rows = [(key.name, key.prefix, ",".join(scopes_of(key)), f"{key.created_at:%Y-%m-%d %H:%M:%S}",
                     f"{key.revoked_at:%Y-%m-%d %H:%M:%S}" if key.revoked_at else "-")
                    for key in list_api_keys(session=session)]
    finally:
        engine.dispose()
    header = ("NAME", "PREFIX", "SCOPES", "CREATED (UTC)", "REVOKED (UTC)")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@app.command()
def revoke(name: NameArg) -> None:
    """Revoke a key: requests carrying it are refused from now on."""
    engine = make_engine(_migrated_url())
    try:
        with session_factory(engine)() as session:
            key = revoke_api_key(session=session, name=name)
    except LookupError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    finally:
        engine.dispose()
    err.print(f"API key {key.name!r} revoked at {key.revoked_at:%Y-%m-%d %H:%M:%S %Z}.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (`alembic upgrade head`)."""
    url = _migrated_url()
    err.print(f"{_where(url)} is at revision {current_revision(url)}.")


@db_app.command()
def current() -> None:
    """Print the database's migration revision ('none' before the first)."""
    typer.echo(current_revision(get_api_settings().db_url) or "none")


@review_app.command("export")
def review_export(
    output: Annotated[Path, typer.Option(help="Parquet file to write (the split's columns plus provenance).")],
    since: Annotated[datetime | None, typer.Option(help="Only items resolved at or after this time (UTC).")] = None,
) -> None:
    """Resolved review items as training rows; `productcat train --include-reviews FILE` adds them to training."""
    count = export_from_database(url=_migrated_url(), output=output,
                                 since=since.replace(tzinfo=since.tzinfo or UTC) if since else None)
    err.print(f"{count} resolved review items written to {output}.")
