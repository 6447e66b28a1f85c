"""`productcat shadow report`: the challenger against the champion on live traffic (monitoring/shadow.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.db.migrate import upgrade
from api.db.session import make_engine
from api.settings import get_api_settings
from ml.params import load_params
from ml.settings import get_settings
from monitoring.shadow import ShadowReport, shadow_report

app = typer.Typer(help="Compare the challenger alias with the champion on live traffic.", no_args_is_help=True)


def parse_since(value: str | None) -> datetime | None:
    """An ISO time (naive = UTC) or a span back from now: 30m, 24h, 7d."""
    if value is None:
        return None
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(**{units[value[-1]]: float(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter("an ISO time (2026-12-01T00:00) or a span such as 24h, 7d",
                                 param_hint="--since") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def print_report(report: ShadowReport, console: Console) -> None:
    accuracy = report.accuracy
    table = Table(title=f"shadow: challenger v{report.challenger_version or '-'} vs champion "
                        f"v{report.champion_version or '-'}, {report.since:%Y-%m-%d %H:%M} .. {report.until:%H:%M} UTC")
    table.add_column("what")
    table.add_column("value", justify="right")
    rate = "-" if report.agreement_rate is None else f"{report.agreement_rate:.3f}"
    rows = {"requests (both answered)": str(report.requests), "agreement": rate,
            "labelled (/feedback)": str(accuracy.labelled)}
    if accuracy.difference is not None:
        rows |= {"accuracy champion": f"{accuracy.champion:.4f}", "accuracy challenger": f"{accuracy.challenger:.4f}",
                 f"difference ({accuracy.confidence:.0%} CI)":
                     f"{accuracy.difference:+.4f} ({accuracy.ci_low:+.4f} .. {accuracy.ci_high:+.4f})"}
    for who, latency in report.latency.items():
        if latency.p50_ms is not None:
            rows[f"latency {who} p50 / p95 ms"] = f"{latency.p50_ms:.1f} / {latency.p95_ms:.1f}"
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)
    for confusion in report.top_confusions:
        console.print(f"  {confusion.champion} -> {confusion.challenger}: {confusion.count}")
    console.print(f"verdict: [bold]{report.verdict}[/]")
    for reason in report.reasons:
        console.print(f"  {reason}")


@app.command()
def report(
    since: Annotated[str | None, typer.Option(
        help="Shadow answers since this ISO time or span back (24h, 7d); default: shadow.window_hours.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON.")] = False,
) -> None:
    """Agreement, disagreements by class, accuracy on requests with feedback (with a 95% CI of the
    difference), latency of each, and the verdict of params.yaml `shadow:`."""
    settings = get_settings()
    db_url = get_api_settings().db_url
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        result = shadow_report(engine=engine, rules=load_params(settings).shadow, since=parse_since(since))
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    print_report(result, Console())
