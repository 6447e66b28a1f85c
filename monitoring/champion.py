"""Which model the monitor judges: the version the champion alias points at, the training run
it came from, and the data version recorded on that run."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlflow import MlflowClient

from ml.pyfunc_model import ProductClassifierModel, load_registered
from ml.registry import champion as champion_version
from ml.registry import configure_mlflow
from ml.settings import MLSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Champion:
    name: str
    version: str
    run_id: str
    dataset: str | None  # params.yaml dataset key it was trained on
    data_version: str | None  # content hash of the split it was trained on (run tag data_content_md5)
    dvc_version: str | None  # DVC hash of that split, when it came from `dvc repro`


def find_champion(settings: MLSettings) -> tuple[Champion, MlflowClient]:
    """The serving champion and an MLflow client on the configured store; LookupError when there is none."""
    client = configure_mlflow(settings)
    version = champion_version(client, settings)
    if version is None:
        raise LookupError(f"no version of {settings.registered_model!r} carries the alias "
                          f"{settings.champion_alias!r}: nothing is served, so nothing to monitor")
    tags = client.get_run(version.run_id).data.tags if version.run_id else {}
    found = Champion(
        name=settings.registered_model, version=str(version.version), run_id=version.run_id or "",
        dataset=tags.get("dataset"), data_version=tags.get("data_content_md5"), dvc_version=tags.get("data_dvc_md5"),
    )
    log.info("champion %s v%s (run %s, data %s)", found.name, found.version, found.run_id, found.data_version)
    return found, client


def load_champion_model(champion: Champion) -> ProductClassifierModel:
    """The registered artifact, unwrapped to the class the API serves (so predictions match the log's)."""
    return load_registered(champion.name, champion.version)[1]
