"""Settings for ML jobs, read once from the environment (prefix ``PRODUCTCAT_``).

Every default works on a fresh clone with no configuration: paths are relative
to the project root, which is the current directory unless
``PRODUCTCAT_PROJECT_ROOT`` says otherwise.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MLSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRODUCTCAT_", env_file=".env", extra="ignore")

    project_root: Path = Field(default_factory=Path.cwd, description="Root that relative paths hang off.")
    params_file: Path = Field(Path("params.yaml"), description="Pipeline parameters (DVC reads the same file).")
    raw_data_dir: Path = Field(
        Path("../shared/data"),
        description="Folder of full raw catalogues; '{raw_data_dir}' in params.yaml expands to it.",
    )
    interim_dir: Path = Field(Path("data/interim"), description="Ingest output: canonical Parquet + quarantine.")
    processed_dir: Path = Field(Path("data/processed"), description="Split output: train/validation/test Parquet.")
    reports_dir: Path = Field(Path("reports"), description="JSON summaries and plots of each stage.")
    cache_dir: Path = Field(
        Path("data/cache"), description="Recomputable caches outside the DVC outputs (image embeddings per "
        "split, keyed by photo content): safe to delete, and then rebuilt.",
    )
    log_level: str = Field("INFO", description="Root log level for every entry point.")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking/registry URI; default: sqlite file mlflow.db in the project root."
    )
    mlflow_artifact_root: Path = Field(Path("mlartifacts"), description="Artifact folder for a local store.")
    experiment_name: str = Field("product-classifier", description="MLflow experiment of training runs.")
    registered_model: str = Field("product-classifier", description="Registry name of the served model.")
    champion_alias: str = Field("champion", description="Registry alias the API serves.")
    challenger_alias: str = Field(
        "challenger", description="Registry alias the API also scores every request with, beside the champion."
    )
    retrain_schedule: str = Field(
        "none",
        description="Schedule of the product_retrain DAG: 'none' = trigger only (the local demo, so unpausing it "
        "starts nothing by itself); production sets a cron or preset such as '@weekly'.",
    )
    drift_schedule: str = Field("@daily", description="Schedule of the drift_monitor DAG; 'none' = trigger only.")
    spark_master: str = Field(
        "local[*]", description="Spark master: local[*] on a laptop, a cluster URL such as spark://host:7077."
    )
    spark_driver_memory: str = Field("2g", description="spark.driver.memory (the driver JVM's heap).")
    spark_shuffle_partitions: int = Field(
        8, gt=0, description="spark.sql.shuffle.partitions in local mode; a cluster keeps Spark's default."
    )

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.resolve(Path('mlflow.db'))}"

    @staticmethod
    def schedule(value: str) -> str | None:
        """A DAG schedule from a setting: cron or preset as given, 'none' for no schedule."""
        return None if value.strip().lower() in {"", "none"} else value

    def resolve(self, path: Path) -> Path:
        """Anchor a relative path at the project root."""
        return path if path.is_absolute() else self.project_root / path


@lru_cache
def get_settings() -> MLSettings:
    return MLSettings()
