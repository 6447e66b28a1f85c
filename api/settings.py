"""Settings of the prediction service, read once from the environment.

``DATABASE_URL`` (or ``PRODUCTCAT_DATABASE_URL``) points the request log at
Postgres; unset, it is an SQLite file in the project root so the service runs
with no configuration at all. The model store and alias come from the ML
settings (``PRODUCTCAT_MLFLOW_TRACKING_URI`` …) so both sides agree on them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ml.settings import MLSettings


class APISettings(BaseSettings):
    # populate_by_name: code (tests, the stream consumer) may pass fields by name as well as by alias.
    model_config = SettingsConfigDict(env_prefix="PRODUCTCAT_API_", env_file=".env", extra="ignore",
                                      populate_by_name=True)

    project_root: Path = Field(
        default_factory=Path.cwd,
        validation_alias=AliasChoices("PRODUCTCAT_PROJECT_ROOT", "PRODUCTCAT_API_PROJECT_ROOT"),
        description="Root that relative paths hang off (shared with the ML jobs).",
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "PRODUCTCAT_DATABASE_URL"),
        description="SQLAlchemy URL of the request log; default: sqlite file requests.db in the project root.",
    )
    # The Docker images have no .git: their build sets this to the commit they were built from.
    code_version: str | None = Field(
        None, validation_alias=AliasChoices("PRODUCTCAT_CODE_VERSION", "PRODUCTCAT_API_CODE_VERSION"),
        description="Code version logged with every answer; default: git HEAD of project_root, if a checkout.",
    )
    require_api_key_for_predict: bool = Field(False, description="Ask /predict callers for an API key too.")
    # Closed by default: model metadata, metrics and drift reports describe the business. The local
    # demo (infra/scripts/local_stack.py) opens them so its printed links work without a key.
    open_read_routes: bool = Field(
        False, description="Serve GET /model, /metrics and /reports/drift* without a key (else scope `read`)."
    )
    # Requests a minute, also the burst size (token buckets); 0 turns a limit off.
    rate_limit_predict_per_key: int = Field(1200, ge=0, description="/predict calls a minute per API key.")
    rate_limit_predict_per_address: int = Field(
        600, ge=0, description="/predict calls a minute per client address, for callers without a key."
    )
    rate_limit_failed_auth_per_address: int = Field(
        10, ge=0, description="Unknown or revoked keys a minute per client address before it gets 429s."
    )
    rate_limit_max_clients: int = Field(
        10_000, ge=1, description="Clients each limit remembers at most; the least recently seen go first."
    )
    max_batch_size: int = Field(256, ge=1, description="Most products one /predict call may carry.")
    # Scoring costs about 4-7 us per character of text (baseline on 2 cores: 26,000 characters 0.17 s,
    # 256 products of 4,000 characters 4.1 s), so the body cap bounds one request's inference time;
    # 256 typical catalogue rows take about 0.4 MB.
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body, in bytes (413 above).")
    # Title 500 + description 20,000 + features 5,000 + brand 500: the per-field limits ingest applies
    # (params.yaml `ingest:`) add up to this; lower it to bound what one product may cost.
    max_product_chars: int = Field(
        26_000, ge=1, description="Most characters of text one product may carry: title, description, features "
        "and brand together.",
    )
    max_top_k: int = Field(20, ge=1, description="Largest top_k a caller may ask for.")
    # The baseline's exact explanation takes milliseconds; integrated gradients cost about n_steps forward
    # and backward passes, so the budget is what bounds a transformer's.
    explain_time_budget_ms: float = Field(
        2000.0, gt=0, description="Longest one explanation may compute; over it the request gets a 422 saying so.")
    explain_ig_steps: int = Field(32, ge=2, le=512, description="Integrated-gradients steps per explanation.")
    explain_top_features: int = Field(10, ge=1, le=100, description="Strongest features listed per explanation.")
    # Unset, each version's own threshold applies (chosen on validation for a target precision, model card
    # `review.threshold`); a number overrides it for every version, 0 turns review routing off.
    review_threshold: float | None = Field(
        None, ge=0, le=1, description="Answers whose top probability is below this get no category: "
        "needs_review, and the product goes to the review queue. Unset = the model card's; 0 = never.",
    )
    poll_interval_seconds: float = Field(10.0, gt=0, description="How often the champion alias is checked.")
    # A new champion's first requests decide whether it stays: the previous one is kept in memory until
    # then, and comes back as soon as failures pass the rate (each /predict call counts once).
    rollback_window: int = Field(50, ge=1, description="Requests a new champion answers on probation.")
    rollback_max_failure_rate: float = Field(
        0.02, ge=0, lt=1, description="Share of probation requests that may fail before the previous champion returns."
    )
    # One by default: one forward pass already spreads over every core (intra-op threads), and two
    # passes side by side on a small machine only fight for it (measured in docs/benchmarks.md).
    inference_threads: int = Field(1, ge=1, description="Worker threads that run the model off the event loop.")
    intra_op_threads: int = Field(0, ge=0, description="Threads inside one forward pass; 0 = one per core.")
    runtime: Literal["torch", "onnx-fp32", "onnx-int8"] | None = Field(
        None, description="Serve on this runtime instead of the one the gate chose (tag serving_runtime)."
    )
    batching: bool = Field(True, description="Gather concurrent requests' products into one forward pass.")
    batch_window_ms: float = Field(
        5.0, ge=0, description="Under concurrent load, the longest a product waits for others to share its pass."
    )
    batch_max_size: int = Field(32, ge=1, description="Most products in one forward pass of the micro-batcher.")
    # The challenger alias (api/shadow.py): scored after each answer by one thread of its own.
    shadow: bool = Field(True, description="Also score every request with the challenger alias, when it exists.")
    shadow_queue_size: int = Field(
        1000, ge=1, description="Requests waiting for the challenger; beyond it shadow work is dropped and counted.")
    log_queue_size: int = Field(10_000, ge=1, description="Request-log rows buffered in memory before spooling.")
    log_batch_size: int = Field(200, ge=1, description="Rows written to the database per transaction.")
    log_flush_seconds: float = Field(0.5, gt=0, description="Longest a logged row waits before it is written.")
    spool_dir: Path = Field(Path(".run/spool"), description="Where rows wait while the database is unreachable.")
    request_logging: bool = Field(True, description="Off only for benchmarks that measure logging's cost.")
    # Write-ahead costs about one fsync per group of concurrent requests (docs/benchmarks.md).
    log_durability: Literal["write-ahead", "buffered"] = Field(
        "write-ahead", description="write-ahead: a row is fsync'd to the journal before its response is sent, so "
        "it survives a killed process; buffered: rows wait in memory up to log_flush_seconds (lost if killed).",
    )
    db_connect_timeout_seconds: float = Field(3.0, gt=0, description="Longest wait for a new database connection.")
    db_statement_timeout_seconds: float = Field(
        5.0, gt=0, description="Longest a database call may take; a frozen database fails like a down one after it.",
    )
    db_pool_timeout_seconds: float = Field(5.0, gt=0, description="Longest wait for a free pooled connection.")
    ready_timeout_seconds: float = Field(
        2.0, gt=0, description="Longest /ready waits for the database probe before it reports the database down.",
    )

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolve(Path('requests.db'))}"

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else self.project_root / path

    def ml(self) -> MLSettings:
        """The ML-side settings (tracking URI, model name, alias), read from the same environment."""
        return MLSettings(project_root=self.project_root)


@lru_cache
def get_api_settings() -> APISettings:
    return APISettings()
