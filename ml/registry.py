"""MLflow tracking and registry helpers: one place that knows the store, the
model name and the alias the API serves."""

from __future__ import annotations

import logging
import subprocess
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from ml.settings import MLSettings

log = logging.getLogger(__name__)


def configure_mlflow(settings: MLSettings) -> MlflowClient:
    """Point MLflow at the configured store and make sure the experiment exists
    with its artifacts where settings say (not wherever the process started)."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    if mlflow.get_experiment_by_name(settings.experiment_name) is None:
        artifacts = settings.resolve(settings.mlflow_artifact_root)
        is_local = settings.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in settings.tracking_uri
        mlflow.create_experiment(settings.experiment_name, artifact_location=artifacts.as_uri() if is_local else None)
    mlflow.set_experiment(settings.experiment_name)
    return MlflowClient()


def registry_client(settings: MLSettings) -> MlflowClient:
    """A client of the configured registry alone: no experiment set-up, for commands that only
    read versions or move the alias."""
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def champion(client: MlflowClient, settings: MLSettings) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(settings.registered_model, settings.champion_alias)
    except MlflowException:
        return None  # no registered model yet, or no version carries the alias


def model_version(client: MlflowClient, settings: MLSettings, version: str | int | None) -> ModelVersion:
    """A given version, or the newest one when ``version`` is None."""
    if version is not None:
        try:
            return client.get_model_version(settings.registered_model, str(version))
        except MlflowException as exc:
            raise LookupError(f"{settings.registered_model!r} has no version {version}") from exc
    versions = client.search_model_versions(f"name = '{settings.registered_model}'")
    if not versions:
        raise LookupError(f"no version of {settings.registered_model!r} is registered yet: run `productcat train`")
    return max(versions, key=lambda v: int(v.version))


def set_version_tags(client: MlflowClient, settings: MLSettings, version: str, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(settings.registered_model, version, key, str(value))


def git_commit(settings: MLSettings) -> str:
    """HEAD of the project, with '-dirty' when tracked files differ; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.project_root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=settings.project_root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head
