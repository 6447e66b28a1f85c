"""`productcat`: the one command that people, DVC stages and Airflow tasks all call.

It sits above the layers it fronts (``ml``, ``api``, ``monitoring``), and each
command imports its layer inside its own body: `productcat --help` loads none of
them, `productcat promote` loads the registry client only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from productcat.lazy import LazyGroup

if TYPE_CHECKING:
    from rich.console import Console


class FrontDoor(LazyGroup):
    lazy = {
        "api-key": ("api.cli", "app", "Create, list or revoke API keys of the service."),
        "db": ("api.cli", "db_app", "Migrate the request-log database (Alembic)."),
        "review": ("api.cli", "review_app", "Export resolved human-review items as training rows."),
        "shadow": ("monitoring.shadow_cli", "app", "Compare the challenger alias with the champion on live traffic."),
        "stream": ("streaming.cli", "app", "Score products from a message broker (NATS, RabbitMQ, Redis, Kafka)."),
    }


app = typer.Typer(cls=FrontDoor, help="ProductCat: product categorisation pipeline and service.",
                  no_args_is_help=True)
VERSION_HELP = "Registered version (default: the one the last `productcat train` registered, else the newest)."


def _console() -> Console:
    from rich.console import Console

    return Console()


def _settings() -> Any:
    from ml.settings import get_settings

    return get_settings()


def _params(settings: Any) -> Any:
    from ml.params import load_params

    return load_params(settings)


def _user() -> str:
    import getpass

    return getpass.getuser()


@app.callback()
def _main(
    log_level: Annotated[str | None, typer.Option(help="Overrides PRODUCTCAT_LOG_LEVEL.")] = None,
) -> None:
    from ml.logging_setup import configure_logging

    configure_logging(log_level or _settings().log_level)


def _fail(exc: Exception) -> typer.Exit:
    """Configuration and input errors end the command with one readable line, not a traceback."""
    _console().print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=2)


def _show_counts(title: str, counts: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("what")
    table.add_column("count", justify="right")
    for key, value in counts.items():
        table.add_row(key, str(value))
    _console().print(table)


@app.command()
def ingest(
    dataset: Annotated[str | None, typer.Option(help="Dataset key in params.yaml (default: ingest.dataset).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole summary as JSON.")] = False,
    engine: Annotated[
        str | None,
        typer.Option(help="pandas or spark (default: ingest.engine); spark's master is PRODUCTCAT_SPARK_MASTER."),
    ] = None,
    source: Annotated[
        Path | None, typer.Option(help="Read this file instead of the dataset's own path, with its mapping.")
    ] = None,
) -> None:
    """Read a raw catalogue into canonical Parquet; quarantine bad rows with a reason."""
    from ml.ingest import ingest as run_ingest

    settings = _settings()
    try:
        params = _params(settings)
        if engine is not None:
            if engine not in ("pandas", "spark"):
                raise ValueError(f"--engine must be pandas or spark, not {engine[:20]!r}")
            params.ingest = params.ingest.model_validate(params.ingest.model_dump() | {"engine": engine})
        summary = run_ingest(settings=settings, params=params, dataset=dataset,
                             source=source.resolve() if source is not None else None)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    _show_counts(
        f"ingest {summary['dataset']}",
        {"read": summary["read"], "kept": summary["kept"], "quarantined": summary["quarantined"]}
        | {f"  {k}": v for k, v in summary["quarantine_reasons"].items()}
        | {"unparsed prices (kept, null)": summary["unparsed_prices"], "classes": summary["classes"]}
        | _photo_counts(summary.get("images"))
        | {"rows/s": summary["rows_per_second"], "peak RSS MB": summary["peak_rss_mb"]},
    )


def _photo_counts(images: dict[str, Any] | None) -> dict[str, Any]:
    if not images:
        return {}
    return ({"with photo": images["with_image"], "without photo (kept, image null)": images["without_image"]}
            | {f"  {k}": v for k, v in images["rejected"].items()})


@app.command()
def split(
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole summary as JSON.")] = False,
) -> None:
    """Dedupe the ingested products and split them by a stable hash of the id."""
    from ml.split import split as run_split

    settings = _settings()
    try:
        summary = run_split(settings=settings, params=_params(settings))
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    _show_counts(
        "split",
        {"read": summary["read"], "kept": summary["kept"], "duplicates": summary["duplicates"]}
        | {f"  {k}": v for k, v in summary["duplicate_reasons"].items()}
        | {f"{s} rows": n for s, n in summary["rows"].items()}
        | {f"{s} classes": n for s, n in summary["classes"].items()}
        | {"titles in several splits": summary["titles_in_several_splits"]},
    )


def _print_json_or_fail(job: Callable[[], dict[str, Any]]) -> None:
    try:
        typer.echo(json.dumps(job(), indent=2))
    except RuntimeError as exc:
        raise _fail(exc) from exc


@app.command("pull-data")
def pull_data(
    version: Annotated[str | None, typer.Option(help="Restore the data this model version was trained on.")] = None,
) -> None:
    """Restore the ingest/split outputs recorded in dvc.lock from the DVC remote (skips unpushed ones)."""
    from ml.data_version import pull_data as run_pull
    from ml.data_version import restore_data_version

    if version is not None:
        _print_json_or_fail(lambda: restore_data_version(_settings(), version=version))
    else:
        _print_json_or_fail(lambda: run_pull(_settings()))


@app.command("version-data")
def version_data() -> None:
    """Record the current ingest/split outputs in dvc.lock and push them to the DVC remote."""
    from ml.data_version import version_data as run_version

    _print_json_or_fail(lambda: run_version(_settings()))


@app.command()
def train(
    family: Annotated[str | None, typer.Option(
        help="baseline | transformer | image | fusion (default: train.family).")] = None,
    max_train_samples: Annotated[int | None, typer.Option(help="Cap on training rows, for quick runs.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Transformer epochs (default: params.yaml).")] = None,
    reason: Annotated[str | None, typer.Option(help="Why this run: the version's `train_reason` tag.")] = None,
    include_reviews: Annotated[Path | None, typer.Option(
        help="Resolved human-review items (`productcat review export`) to add to the train split.")] = None,
) -> None:
    """Train a model on the split, log it to MLflow and register a new version."""
    from ml.train import train as run_train

    settings = _settings()
    params = _params(settings)
    if max_train_samples is not None:
        params.train.max_train_samples = max_train_samples
    if epochs is not None:
        params.train.transformer.epochs = epochs
    try:
        result = run_train(settings=settings, params=params, family=family, reason=reason,
                           triggered_by=f"productcat train ({_user()})", include_reviews=include_reviews)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from exc
    _show_counts("train", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.__dict__.items()})


@app.command()
def evaluate(
    version: Annotated[str | None, typer.Option(help=VERSION_HELP)] = None,
    alias: Annotated[str | None, typer.Option(help="Evaluate the version this registry alias names.")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Evaluate on a labelled file read with this params.yaml dataset's mapping, not the test split.")] = None,
    source: Annotated[Path | None, typer.Option(
        help="Labelled file to evaluate on (default: the dataset's own file); implies a file evaluation.")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Report folder of a file evaluation (default: reports/evaluations/v<N>-<dataset>-<file>).")] = None,
) -> None:
    """Evaluate a registered version on the frozen test split; log metrics, plots and a report.

    With --dataset and/or --source: measure it on that labelled file instead, in a report of its own;
    the version's test metrics and tags are left as they are."""
    if version is not None and alias is not None:
        raise _fail(ValueError("give --version or --alias, not both"))
    if dataset is None and source is None:
        if output is not None:
            raise _fail(ValueError("--output is for a file evaluation (--dataset / --source)"))
        _evaluate_test_split(version=version, alias=alias)
    else:
        _evaluate_file(version=version, alias=alias, dataset=dataset, source=source, output=output)


def _evaluate_test_split(*, version: str | None, alias: str | None) -> None:
    from ml.evaluate import evaluate as run_evaluate
    from ml.score import resolve_version
    from ml.train import last_trained_version

    settings = _settings()
    try:
        if alias is not None:
            version = str(resolve_version(settings, alias=alias).version)
        summary = run_evaluate(settings=settings, params=_params(settings),
                               version=version or last_trained_version(settings))
    except (FileNotFoundError, LookupError, ValueError) as exc:
        raise _fail(exc) from exc
    keys = ("version", "test_rows", "accuracy", "macro_f1", "weighted_f1", "top3_accuracy", "ece",
            "latency_p50_ms", "latency_p95_ms")
    _show_counts("evaluate", {k: round(summary[k], 4) if isinstance(summary[k], float) else summary[k] for k in keys}
                 | {f"hierarchy {k}": round(v, 4) for k, v in summary["hierarchy"].items()}
                 | {f"hierarchical {k}": round(v, 4) for k, v in summary.get("hierarchical_f1", {}).items()})


def _evaluate_file(*, version: str | None, alias: str | None, dataset: str | None, source: Path | None,
                   output: Path | None) -> None:
    from ml.evaluate_file import evaluate_file
    from ml.train import last_trained_version

    settings = _settings()
    try:
        summary = evaluate_file(
            settings=settings, params=_params(settings), dataset=dataset,
            source=source.resolve() if source is not None else None,
            version=version or (None if alias is not None else last_trained_version(settings)), alias=alias,
            output=output.resolve() if output is not None else None)
    except (FileNotFoundError, KeyError, LookupError, ValueError) as exc:
        raise _fail(exc) from exc
    rows, unknown, overlap = summary["rows"], summary["unknown_labels"], summary["training_title_overlap"]
    _show_counts(
        f"evaluate v{summary['version']} on {Path(summary['source_path']).name}",
        {"read": rows["read"], "kept": rows["kept"], "quarantined": rows["quarantined"]}
        | {f"  {k}": v for k, v in rows["quarantine_reasons"].items()}
        | {"unknown label (excluded)": unknown["rows"], "evaluated": summary["evaluated_rows"]}
        | {k: round(summary[k], 4) if isinstance(summary[k], float) else summary[k]
           for k in ("accuracy", "macro_f1", "weighted_f1", "top3_accuracy", "ece")}
        | ({"titles in training split": f"{overlap['rows']} ({overlap['share']:.1%})"} if overlap["available"]
           else {"titles in training split": "skipped (see report)"}),
    )
    _console().print(f"report: {summary['output']}")


@app.command()
def gate(
    version: Annotated[str | None, typer.Option(help=VERSION_HELP)] = None,
    promote: Annotated[bool, typer.Option(help="Move the champion alias when the gate passes.")] = True,
) -> None:
    """Compare a candidate with the champion on the same test set; promote it if the rules pass.

    On the champion's own data the candidate must also beat it by more than noise; a tie is "no change"."""
    from ml.gate import gate as run_gate
    from ml.train import last_trained_version

    settings = _settings()
    try:
        decision = run_gate(settings=settings, params=_params(settings),
                            version=version or last_trained_version(settings), promote=promote,
                            by=f"gate (productcat gate, {_user()})")
    except (FileNotFoundError, LookupError, ValueError) as exc:
        raise _fail(exc) from exc
    verdict = ("promoted" if decision.promoted else "no change: the champion stays" if decision.no_change
               else f"passed: now {settings.challenger_alias}, scored in the champion's shadow" if decision.challenger
               else "passed" if decision.passed else "rejected")
    _console().print(f"v{decision.candidate} vs champion {decision.champion or '(none)'}: [bold]{verdict}[/]")
    for reason in decision.reasons:
        _console().print(f"  {reason}")
    if not decision.passed:
        raise typer.Exit(code=1)


@app.command()
def promote(
    reason: Annotated[str | None, typer.Option(
        help="Why: stored on the version and in the alias history (--from-shadow: the report's numbers).")] = None,
    version: Annotated[str | None, typer.Option(help="Version to serve (an older one rolls back).")] = None,
    rollback: Annotated[bool, typer.Option("--rollback", help="Return to the champion before the current one.")
                        ] = False,
    from_shadow: Annotated[bool, typer.Option(
        "--from-shadow", help="Make the challenger champion only if its shadow report passes params.yaml `shadow:` "
        "(exit 1 with the failed rule otherwise).")] = False,
    alias: Annotated[str | None, typer.Option(
        help="With --version: the alias to move, champion (default) or challenger (scored in the champion's shadow)."
    )] = None,
    since: Annotated[str | None, typer.Option(
        help="--from-shadow: shadow answers since this ISO time or span (24h, 7d); default shadow.window_hours.")
    ] = None,
    by: Annotated[str | None, typer.Option(help="Who (default: the OS user).")] = None,
) -> None:
    """Move the champion alias by hand (promotion or rollback), recording who and why; or the challenger
    alias (--alias challenger); or the champion to the challenger on its live record (--from-shadow)."""
    from ml.promotion import promote as run_promote
    from ml.promotion import rollback as run_rollback

    if sum((version is not None, rollback, from_shadow)) != 1:
        raise _fail(ValueError("give one of --version N, --rollback or --from-shadow"))
    if alias is not None and version is None:
        raise _fail(ValueError("--alias goes with --version"))
    if reason is None and not from_shadow:
        raise _fail(ValueError("--reason is required (it is stored on the version and in the alias history)"))
    settings = _settings()
    if from_shadow:
        _promote_from_shadow(settings, since=since, by=by or _user())
        return
    try:
        if rollback:
            previous, version = run_rollback(settings=settings, reason=str(reason), by=by)
        else:
            previous = run_promote(settings=settings, version=str(version), reason=str(reason), by=by, alias=alias)
    except (LookupError, ValueError) as exc:
        raise _fail(exc) from exc
    moved = alias or settings.champion_alias
    _console().print(f"{settings.registered_model}@{moved} -> v{version} (was {previous or 'none'})")


def _promote_from_shadow(settings: Any, *, since: str | None, by: str) -> None:
    from api.db.migrate import upgrade
    from api.settings import get_api_settings
    from monitoring.shadow_cli import parse_since, print_report
    from monitoring.shadow_promotion import promote_from_shadow

    db_url = get_api_settings().db_url
    try:
        upgrade(db_url)
        report, previous = promote_from_shadow(settings=settings, params=_params(settings), db_url=db_url,
                                               by=by, since=parse_since(since))
    except LookupError as exc:
        raise _fail(exc) from exc
    print_report(report, _console())
    if not report.passed:
        failed = [r for r in report.reasons if r.startswith("FAIL")]
        _console().print(f"[bold red]not promoted[/]: {report.verdict}; " + "; ".join(failed))
        raise typer.Exit(code=1)
    _console().print(f"{settings.registered_model}@{settings.champion_alias} -> v{report.challenger_version} "
                     f"(was {previous or 'none'})")


@app.command()
def champion() -> None:
    """Print the version the champion alias points at (exit 1 when there is none yet)."""
    from ml.registry import champion as find_champion
    from ml.registry import registry_client

    settings = _settings()
    current = find_champion(registry_client(settings), settings)
    if current is None:
        typer.echo(f"{settings.registered_model} has no {settings.champion_alias} yet", err=True)
        raise typer.Exit(code=1)
    tag = current.tags.get
    typer.echo(f"{settings.registered_model} v{current.version} ({tag('family', '?')} on {tag('dataset', '?')};"
               f" promoted {tag('promoted_at', '?')} by {tag('promoted_by', '?')})")


@app.command()
def history(
    as_json: Annotated[bool, typer.Option("--json", help="Print the moves as JSON.")] = False,
    alias: Annotated[str | None, typer.Option(help="Another alias's history, such as challenger.")] = None,
) -> None:
    """Every move of the champion alias (or --alias), oldest first: from, to, kind, by, when, why."""
    from dataclasses import asdict

    from rich.table import Table

    from ml.promotion import alias_history
    from ml.registry import registry_client

    settings = _settings()
    moves = alias_history(registry_client(settings), settings, alias)
    if as_json:
        typer.echo(json.dumps([asdict(m) for m in moves], indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{settings.registered_model}@{alias or settings.champion_alias}: {len(moves)} moves")
    for column in ("#", "from", "to", "kind", "by", "when", "why"):
        table.add_column(column, overflow="fold")
    for m in moves:
        table.add_row(str(m.seq), f"v{m.from_version}" if m.from_version else "-",
                      f"v{m.to_version}" if m.to_version else "-", m.kind, m.by, m.at, m.why)
    _console().print(table)


@app.command()
def lineage(
    request_id: Annotated[str, typer.Argument(help="A request id from a /predict answer or the stream's output.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the lineage as JSON.")] = False,
) -> None:
    """Where one prediction came from: its log row, training run, dataset, data version and promotion."""
    from rich.tree import Tree

    from api.lineage import lineage_of
    from api.settings import get_api_settings

    try:
        found = lineage_of(request_id, api_settings=get_api_settings(), ml_settings=_settings())
    except LookupError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(found, indent=2, ensure_ascii=False, default=str))
        return
    model = found["model"]
    tree = Tree(f"request [bold]{request_id}[/]")
    for title, section in (("request", found["request"]), ("model", model), ("training run", found["run"]),
                           ("dataset", found["dataset"] or {}), ("data version", found["data_version"]),
                           ("promotion", found["promotion"])):
        branch = tree.add(f"[bold]{title}[/]")
        for key, value in section.items():
            if isinstance(value, dict):
                sub = branch.add(key)
                for k, v in value.items():
                    sub.add(f"{k}: {v}")
            elif isinstance(value, list):
                sub = branch.add(key)
                for item in value:
                    sub.add(", ".join(f"{k}={v}" for k, v in item.items()) if isinstance(item, dict) else str(item))
            else:
                branch.add(f"{key}: {value if value is not None else '-'}")
    _console().print(tree)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes (each loads the model).")] = 1,
) -> None:
    """Serve the champion over HTTP: migrate the request-log database, then run the API."""
    import uvicorn

    from api.db.migrate import upgrade
    from api.settings import get_api_settings

    upgrade(get_api_settings().db_url)
    uvicorn.run("api.main:create_app", factory=True, host=host, port=port, workers=workers, log_config=None)


@app.command()
def drift(
    window_hours: Annotated[float | None, typer.Option(help="Requests of the last N hours.")] = None,
    window_rows: Annotated[int | None, typer.Option(help="At most the newest N requests.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole decision as JSON.")] = False,
) -> None:
    """Compare logged requests with the champion's training data: Evidently report, verdict, retrain advice."""
    from api.db.migrate import upgrade
    from api.settings import get_api_settings
    from monitoring.service import run_drift_check

    settings = _settings()
    db_url = get_api_settings().db_url
    try:
        upgrade(db_url)
        result = run_drift_check(settings=settings, params=_params(settings), db_url=db_url,
                                 window_hours=window_hours, window_rows=window_rows)
    except (FileNotFoundError, LookupError) as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(result.summary, indent=2, default=str, ensure_ascii=False))
        return
    from rich.table import Table

    decision = result.decision
    table = Table(title=f"drift check {result.check_id}: {result.summary['model']}, {decision.current_rows} requests")
    for column in ("signal", "kind", "value", "threshold", "reference -> current", "fired"):
        table.add_column(column)
    for s in decision.signals:
        moved = f"{s.reference:.3g} -> {s.current:.3g}" if s.reference is not None and s.current is not None else ""
        table.add_row(s.name, s.kind, "-" if s.value is None else f"{s.value:.3g}", f"{s.threshold:g}",
                      moved, "[bold red]yes[/]" if s.fired else (s.note or "no"))
    _console().print(table)
    verdict = decision.status if decision.status != "ok" else (
        "[bold red]drifted[/]" if decision.drifted else "[green]no drift[/]")
    _console().print(f"{verdict}; retrain: [bold]{'yes' if result.advice.retrain else 'no'}[/]")
    for reason in result.advice.reasons:
        _console().print(f"  {reason}")


@app.command()
def score(
    output: Annotated[Path, typer.Option(help="Parquet file to write; its summary goes beside it.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset key in params.yaml (default: ingest.dataset).")] = None,
    source: Annotated[Path | None, typer.Option(help="Score this file instead of the dataset's own path.")] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Labels kept per product.")] = 3,
    engine: Annotated[str | None, typer.Option(
        help="pandas: in this process; spark: on PRODUCTCAT_SPARK_MASTER (local[*] by default). "
             "Default: score.engine in params.yaml.")] = None,
    version: Annotated[str | None, typer.Option(help="Score with this registered version, not the champion.")] = None,
    alias: Annotated[str | None, typer.Option(help="Score with the version this alias names.")] = None,
) -> None:
    """Score a whole raw catalogue with the champion into Parquet (chunked; unreadable rows counted)."""
    from ml.score import score_catalogue

    if version is not None and alias is not None:
        raise typer.BadParameter("give --version or --alias, not both", param_hint="--version")
    settings = _settings()
    try:
        params = _params(settings)
        engine = engine or params.score.engine
        summary = score_catalogue(settings=settings, params=params, source=source, output=output,
                                  dataset=dataset, top_k=top_k, engine=engine, version=version, alias=alias)
    except (KeyError, FileNotFoundError, LookupError, ValueError) as exc:
        raise _fail(exc) from exc
    _show_counts(f"score {summary['dataset']} with {summary['model']} v{summary['model_version']} on {engine}",
                 {k: summary[k] for k in ("read", "scored", "unreadable")}
                 | {f"  {k}": v for k, v in summary["unreadable_reasons"].items()}
                 | {"rows/s": summary["rows_per_second"], "peak RSS MB": summary["peak_rss_mb"]})


if __name__ == "__main__":
    app()
