"""Which model answers: the version the registry alias points at, swapped without downtime.

A new champion is loaded beside the one serving and self-tested on its own input
example before one attribute assignment makes it current. Requests hold a
reference to the model they started with, so in-flight ones finish on the old
version. A version that fails to load or to answer is refused and remembered:
the old champion keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ml.pyfunc_model import ProductClassifierModel, load_registered, records_frame
from ml.settings import MLSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    run_id: str
    python_model: ProductClassifierModel  # unwrapped from the loaded pyfunc
    labels: list[str]
    card: dict[str, Any]
    training_metrics: dict[str, float]
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def runtime(self) -> str:
        return self.python_model.runtime

    def predict(self, records: list[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
        # The artifact's own scoring, minus MLflow's per-call schema enforcement and the DataFrames
        # around it: the API's schemas validated the records already.
        return self.python_model.predict_records(records, top_k)


def _self_test(pyfunc: Any, labels: list[str]) -> None:
    """Predict on the artifact's own input example; raise if the answer is not a known label."""
    example = pyfunc.input_example
    if example is None:
        raise ValueError("the model carries no input example to self-test on")
    frame = example if isinstance(example, pd.DataFrame) else pd.DataFrame(example)
    out = pyfunc.predict(records_frame(frame.to_dict(orient="records")), params={"top_k": 1})
    if len(out) != len(frame) or not set(out["label"]) <= set(labels):
        raise ValueError(f"self-test on the input example gave {out['label'].tolist()!r}")


class ChampionManager:
    """Follows ``models:/<name>@<alias>``; ``current`` is None until a first version loads."""

    def __init__(self, ml_settings: MLSettings, *, intra_op_threads: int = 0, runtime: str | None = None) -> None:
        self.intra_op_threads = intra_op_threads
        self.runtime = runtime  # None: the one the gate chose for each version
        self.name = ml_settings.registered_model
        self.alias = ml_settings.champion_alias
        self.tracking_uri = ml_settings.tracking_uri
        self.current: LoadedModel | None = None
        self.refused: dict[str, str] = {}  # version -> why it was refused
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one load at a time (poll loop and a manual reload)

    def _client(self) -> MlflowClient:
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def refresh(self) -> bool:
        """Load the alias's version if it is new and not refused; True when the current model changed."""
        with self._lock:
            try:
                client = self._client()
                target = client.get_model_version_by_alias(self.name, self.alias)
            except MlflowException as exc:
                self.last_error = f"cannot resolve {self.name}@{self.alias}: {exc.message}"
                log.warning(self.last_error)
                return False
            except Exception as exc:  # store unreachable: keep serving what we have
                self.last_error = f"registry unreachable: {exc}"
                log.warning(self.last_error)
                return False
            version = str(target.version)
            if (self.current and self.current.version == version) or version in self.refused:
                return False
            try:
                loaded = self._load(client, version, target.run_id)
            except Exception as exc:
                self.refused[version] = f"{type(exc).__name__}: {exc}"
                self.last_error = f"version {version} refused: {self.refused[version]}"
                log.error(self.last_error)
                return False
            previous, self.current = self.current, loaded  # the swap: one reference assignment
            self.last_error = None
            log.info("serving %s version %s on %s (was %s)", self.name, version, loaded.runtime,
                     previous.version if previous else "none")
            return True

    def _load(self, client: MlflowClient, version: str, run_id: str) -> LoadedModel:
        pyfunc, python_model = load_registered(self.name, version, threads=self.intra_op_threads,
                                               runtime=self.runtime)
        labels = list(python_model.labels)
        _self_test(pyfunc, labels)
        metrics = client.get_run(run_id).data.metrics if run_id else {}
        return LoadedModel(
            name=self.name, version=version, run_id=run_id or "", python_model=python_model,
            labels=labels,
            card=python_model.card, training_metrics=dict(metrics),
        )

    async def follow(self, interval_seconds: float) -> None:
        """Poll the alias forever; loading runs in a thread so the event loop keeps answering."""
        while True:
            await asyncio.to_thread(self.refresh)
            await asyncio.sleep(interval_seconds)
