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
    model_config = SettingsConfigDict(env_prefix="PRODUCTCAT_API_", env_file=".env", extra="ignore")

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
    require_api_key_for_predict: bool = Field(False, description="Ask /predict callers for an API key too.")
    max_batch_size: int = Field(256, ge=1, description="Most products one /predict call may carry.")
    max_top_k: int = Field(20, ge=1, description="Largest top_k a caller may ask for.")
    poll_interval_seconds: float = Field(10.0, gt=0, description="How often the champion alias is checked.")
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
    log_queue_size: int = Field(10_000, ge=1, description="Request-log rows buffered in memory before spooling.")
    log_batch_size: int = Field(200, ge=1, description="Rows written to the database per transaction.")
    log_flush_seconds: float = Field(0.5, gt=0, description="Longest a logged row waits before it is written.")
    spool_dir: Path = Field(Path(".run/spool"), description="Where rows wait while the database is unreachable.")
    request_logging: bool = Field(True, description="Off only for benchmarks that measure logging's cost.")

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
