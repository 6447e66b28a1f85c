"""From one logged prediction back to everything that produced it: the request-log row, the
model version's training run (code, parameters, metrics), the dataset and data version it was
trained on, and the gate decision and alias moves that made it champion.

The request log is this layer's; the registry is read through ml's helpers. `productcat
lineage <request id>` prints what ``lineage_of`` returns.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from api.db.models import PredictionLog
from api.db.session import make_engine
from api.settings import APISettings
from ml.params import load_params
from ml.promotion import alias_history
from ml.registry import registry_client
from ml.settings import MLSettings

log = logging.getLogger(__name__)

KEY_METRICS = ("val_macro_f1", "val_accuracy", "test_macro_f1", "test_accuracy", "test_top3_accuracy", "test_ece")
RUN_TAGS = ("git_commit", "dataset", "source_sha256", "data_content_md5", "data_dvc_md5", "train_reason",
            "triggered_by")
GATE_TAGS = ("gate_decision", "gate_compared_with", "gate_checked_at", "gate_no_change_reason", "serving_runtime",
             "promoted_by", "promoted_at", "promotion_reason", "promotion_kind", "previous_champion",
             "replaced_by", "replaced_at", "serving_rejected")
REQUEST_FIELDS = ("request_id", "batch_id", "created_at", "channel", "label", "probability", "model_name",
                  "model_version", "run_id", "data_version", "model_git_commit", "serving_git_commit")


def _request_row(api_settings: APISettings, request_id: str) -> dict[str, Any]:
    engine = make_engine(api_settings.db_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                sa.select(PredictionLog.__table__).where(PredictionLog.request_id == request_id)).mappings().first()
    finally:
        engine.dispose()
    if row is None:
        raise LookupError(f"no prediction with request id {request_id[:64]!r} in the request log")
    request = {name: row[name] for name in REQUEST_FIELDS}
    request["created_at"] = row["created_at"].isoformat()
    return request


def _run(client: MlflowClient, run_id: str) -> dict[str, Any]:
    run = client.get_run(run_id)
    return {"run_id": run_id, "run_name": run.info.run_name, "params": dict(run.data.params),
            "metrics": {k: run.data.metrics[k] for k in KEY_METRICS if k in run.data.metrics},
            "tags": {k: run.data.tags[k] for k in RUN_TAGS if k in run.data.tags}}


def _dataset(ml_settings: MLSettings, key: str | None) -> dict[str, Any] | None:
    """The run's dataset as params.yaml defines it now (None when it is no longer defined there)."""
    if key is None:
        return None
    spec = load_params(ml_settings).datasets.get(key)
    return {"key": key, "format": spec.format, "path": spec.path} if spec else {"key": key, "in_params": False}


def _promotion(client: MlflowClient, settings: MLSettings, version: str, tags: dict[str, str]) -> dict[str, Any]:
    gate = {k: tags[k] for k in GATE_TAGS if k in tags}
    if "gate_reasons" in tags:
        try:
            gate["gate_reasons"] = json.loads(tags["gate_reasons"])
        except json.JSONDecodeError:  # cut at the tag length limit: keep the text as it is
            gate["gate_reasons"] = [tags["gate_reasons"]]
    moves = [asdict(m) for m in alias_history(client, settings) if m.to_version == version]
    return gate | {"alias": settings.champion_alias, "alias_moves": moves}


def lineage_of(request_id: str, *, api_settings: APISettings, ml_settings: MLSettings) -> dict[str, Any]:
    """Everything that produced the answer logged as ``request_id``; LookupError when it is unknown."""
    request = _request_row(api_settings, request_id)
    settings = ml_settings.model_copy(update={"registered_model": request["model_name"]})
    client = registry_client(settings)
    try:
        version = client.get_model_version(request["model_name"], request["model_version"])
    except MlflowException as exc:
        raise LookupError(f"{request['model_name']} version {request['model_version']} (request "
                          f"{request_id}) is not in the registry at {settings.tracking_uri}") from exc
    run = _run(client, request["run_id"] or version.run_id)
    tags = run["tags"]
    data = {"logged": request["data_version"], "data_dvc_md5": tags.get("data_dvc_md5"),
            "data_content_md5": tags.get("data_content_md5"), "source_sha256": tags.get("source_sha256")}
    if data["data_dvc_md5"]:
        data["restore"] = f"productcat pull-data --version {version.version}"
    return {"request": request, "model": {"name": version.name, "version": str(version.version),
                                          "source": version.source},
            "run": run, "dataset": _dataset(settings, tags.get("dataset")), "data_version": data,
            "promotion": _promotion(client, settings, str(version.version), dict(version.tags))}
