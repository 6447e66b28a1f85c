"""A tiny baseline champion in a store of its own, for benchmarks that serve a real model."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def train_champion(out: Path, *, by: str) -> str:
    """Ingest and split the bundled fashion sample under ``out``, train a 300-row baseline into a
    SQLite MLflow store there and promote it; returns the tracking URI."""
    from ml.ingest import ingest
    from ml.params import load_params
    from ml.promotion import promote
    from ml.settings import MLSettings
    from ml.split import split
    from ml.train import train

    settings = MLSettings(
        project_root=REPO_ROOT, interim_dir=out / "data" / "interim", processed_dir=out / "data" / "processed",
        reports_dir=out / "reports", mlflow_tracking_uri=f"sqlite:///{out / 'mlflow.db'}",
        mlflow_artifact_root=out / "mlartifacts",
    )
    params = load_params(settings)
    params.ingest.dataset = "fashion-sample"
    params.train.max_train_samples = 300
    ingest(settings=settings, params=params)
    split(settings=settings, params=params)
    version = train(settings=settings, params=params, family="baseline").version
    promote(settings=settings, version=version, reason=f"champion for {by}", by=by)
    return settings.tracking_uri
