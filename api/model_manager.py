"""Which model answers: the version the registry alias points at, swapped without downtime.

A new champion is loaded beside the one serving and self-tested on the sample of real
products it carries (its input example, for versions stored without one) before one
attribute assignment makes it current. Requests hold a reference to the model they
started with, so in-flight ones finish on the old version. A version that fails to load
or to answer is refused and remembered: the old champion keeps serving.

After a swap the old champion stays in memory while the new one's first requests are
watched (api/model_health.Probation); too many failures swap it back, tag the bad
version in the registry (``serving_rejected``) and refuse it from then on.
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

from api.model_health import Probation, check_answers
from ml.pyfunc_model import ProductClassifierModel, load_registered, records_frame
from ml.settings import MLSettings

log = logging.getLogger(__name__)

REJECTED_TAG = "serving_rejected"  # version tag: why the API swapped this version back out
REJECTED_AT_TAG = "serving_rejected_at"
EXPLAIN_WARM_UP_SECONDS = 30.0  # an upper bound for the one warm-up explanation at load


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    run_id: str
    python_model: ProductClassifierModel  # unwrapped from the loaded pyfunc
    labels: list[str]
    card: dict[str, Any]
    training_metrics: dict[str, float]
    model_git_commit: str | None = None  # the training run's `git_commit` tag: the code that trained it
    review_threshold_setting: float | None = None  # APISettings.review_threshold: None = the card's, 0 = off
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    label_set: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_set", frozenset(self.labels))

    @property
    def runtime(self) -> str:
        return self.python_model.runtime

    @property
    def data_version(self) -> str | None:
        """The split it was trained on: the DVC hash when the data was versioned, else its content hash."""
        return self.card.get("data_dvc_md5") or self.card.get("data_content_md5")

    @property
    def low_confidence_threshold(self) -> float | None:
        """From the model card (versions trained before it was recorded have none: nothing flagged)."""
        value = self.card.get("low_confidence", {}).get("threshold")
        return float(value) if value is not None else None

    @property
    def review_threshold(self) -> float | None:
        """Top probability below which an answer goes to human review instead of naming a category: the
        setting when given (0 = off), else the card's (None: versions trained without one route nothing)."""
        if self.review_threshold_setting is not None:
            return self.review_threshold_setting or None
        value = self.card.get("review", {}).get("threshold")
        return float(value) if value is not None else None

    def predict(self, records: list[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
        """The artifact's own scoring, minus MLflow's per-call schema enforcement and the DataFrames
        around it (the API's schemas validated the records already); InvalidAnswers rather than an
        answer a caller must not get."""
        answers = self.python_model.predict_records(records, top_k)
        check_answers(answers, count=len(records), top_k=top_k, labels=self.label_set,
                      leaf_to_path=self.card.get("leaf_to_path", {}))
        return answers


def _self_test(pyfunc: Any, model: LoadedModel) -> None:
    """Score the real products the version carries (or, for versions stored without them, its input
    example) through the serving path, every label ranked; raise if any answer is invalid."""
    records = model.python_model.self_test_records
    if not records:
        example = pyfunc.input_example
        if example is None:
            raise ValueError("the model carries neither a self-test sample nor an input example")
        frame = example if isinstance(example, pd.DataFrame) else pd.DataFrame(example)
        records = records_frame(frame.to_dict(orient="records")).to_dict(orient="records")
    model.predict(records, len(model.labels))


def _warm_explainer(model: LoadedModel) -> None:
    """Pay an explanation's one-time costs (the baseline's feature-name table, a transformer's first
    backward pass) while the version loads, not inside the first caller's time budget. Explanations are
    optional: a failure here never refuses a version."""
    records = model.python_model.self_test_records
    if not records:
        return
    try:
        model.python_model.explain(records[0], budget_seconds=EXPLAIN_WARM_UP_SECONDS)
    except Exception as exc:  # noqa: BLE001 - e.g. a photo family and a sample product without a photo
        log.info("explanations of version %s not warmed up: %s", model.version, exc)


@dataclass(frozen=True)
class Rollback:
    """A version swapped back out because it failed in service."""

    version: str
    to_version: str
    reason: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class ChampionManager:
    """Follows ``models:/<name>@<alias>`` (the champion alias unless ``alias`` names another, such as the
    challenger); ``current`` is None until a first version loads. With ``optional``, an alias that does
    not exist is a normal state: ``current`` goes back to None when the alias is removed."""

    def __init__(self, ml_settings: MLSettings, *, intra_op_threads: int = 0, runtime: str | None = None,
                 rollback_window: int = 50, rollback_max_failure_rate: float = 0.02,
                 review_threshold: float | None = None, alias: str | None = None, optional: bool = False) -> None:
        self.intra_op_threads = intra_op_threads
        self.review_threshold = review_threshold  # APISettings.review_threshold, given to every version loaded
        self.runtime = runtime  # None: the one the gate chose for each version
        self.name = ml_settings.registered_model
        self.alias = alias or ml_settings.champion_alias
        self.optional = optional
        self.tracking_uri = ml_settings.tracking_uri
        self.rollback_window = rollback_window
        self.rollback_max_failure_rate = rollback_max_failure_rate
        self.current: LoadedModel | None = None
        self.refused: dict[str, str] = {}  # version -> why it was refused
        self.last_error: str | None = None
        self.failing: str | None = None  # why the serving version is unhealthy (failed with nothing to fall back to)
        self.rolled_back: Rollback | None = None  # the last rollback
        self.probation: Probation | None = None  # the serving version's, until it has proven itself
        self._fallback: LoadedModel | None = None  # the version to swap back to while probation lasts
        self._untagged: list[Rollback] = []  # rollbacks not yet written to the registry
        self._lock = threading.Lock()  # one load at a time (poll loop and a manual reload)
        self._watch = threading.Lock()  # current/fallback/probation change together (swap, request outcome)

    @property
    def fallback_version(self) -> str | None:
        fallback = self._fallback
        return fallback.version if fallback else None

    def _client(self) -> MlflowClient:
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def refresh(self) -> bool:
        """Load the alias's version if it is new and not refused; True when the current model changed."""
        with self._lock:
            try:
                client = self._client()
                self._tag_rollbacks(client)
                target = client.get_model_version_by_alias(self.name, self.alias)
            except MlflowException as exc:
                if self.optional:  # no such alias (any more): nothing to follow
                    changed, self.current, self.last_error = self.current is not None, None, None
                    if changed:
                        log.info("%s@%s removed: no longer loaded", self.name, self.alias)
                    return changed
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
            if rejected := (target.tags or {}).get(REJECTED_TAG):  # by this or another instance, earlier
                self.refused[version] = f"rejected in service earlier: {rejected}"
                self.last_error = f"version {version} refused: {self.refused[version]}"
                log.error(self.last_error)
                return False
            try:
                loaded = self._load(client, version, target.run_id)
            except Exception as exc:
                self.refused[version] = f"{type(exc).__name__}: {exc}"[:500]
                self.last_error = f"version {version} refused: {self.refused[version]}"
                log.error(self.last_error)
                return False
            previous = self._swap_in(loaded)
            self.last_error = None
            log.info("serving %s version %s on %s (was %s)", self.name, version, loaded.runtime,
                     previous.version if previous else "none")
            return True

    def _swap_in(self, loaded: LoadedModel) -> LoadedModel | None:
        """Make ``loaded`` current, on probation; the last version that served well stays as fallback."""
        with self._watch:
            previous = self.current
            # A version still on probation (or failing) is no fallback while a proven one is kept.
            keep = self.failing is not None or (self.probation is not None and self._fallback is not None)
            fallback = self._fallback if keep else previous
            self.current, self._fallback, self.failing = loaded, fallback, None  # the swap
            self.probation = Probation.start(loaded.version, window=self.rollback_window,
                                             max_failure_rate=self.rollback_max_failure_rate)
            return previous

    def observe(self, model: LoadedModel, failure: str | None) -> Rollback | None:
        """Count one request ``model`` answered (``failure``: why it could not), while ``model`` is the
        version on probation; returns the rollback when this request decided one."""
        with self._watch:
            probation = self.probation
            if probation is None or model is not self.current or probation.version != model.version:
                return None  # proven already, or a request that started on an earlier version
            verdict = probation.record(failure)
            if verdict == "watching":
                return None
            self.probation = None
            if verdict == "proven":
                self._fallback, self.failing = None, None  # the previous version may go: this one has proven itself
                log.info("version %s proven after %d requests", model.version, probation.requests)
                return None
            reason = probation.reason()[:500]
            if self._fallback is None:  # nothing to swap back to: unhealthy until a window goes well
                self.failing = f"version {model.version}: {reason}; no earlier version to fall back to"
                self.probation = Probation.start(model.version, window=self.rollback_window,
                                                 max_failure_rate=self.rollback_max_failure_rate)
                log.error(self.failing)
                return None
            rollback = Rollback(version=model.version, to_version=self._fallback.version, reason=reason)
            self.current, self._fallback = self._fallback, None  # the swap back
            self.refused[model.version] = f"rolled back in service: {reason}"
            self.rolled_back = rollback
            self._untagged.append(rollback)
        self.last_error = f"version {rollback.version} rolled back to {rollback.to_version}: {reason}"
        log.error(self.last_error)
        return rollback

    def _tag_rollbacks(self, client: MlflowClient) -> None:
        """Write pending rollbacks to the registry (here, in the poll thread: never on a request)."""
        while self._untagged:
            rollback = self._untagged[0]
            try:
                client.set_model_version_tag(self.name, rollback.version, REJECTED_TAG, rollback.reason)
                client.set_model_version_tag(self.name, rollback.version, REJECTED_AT_TAG, rollback.at.isoformat())
            except Exception as exc:  # the registry may be down: retried at the next poll
                log.warning("cannot tag version %s as rejected yet: %s", rollback.version, exc)
                return
            self._untagged.pop(0)

    def _load(self, client: MlflowClient, version: str, run_id: str) -> LoadedModel:
        pyfunc, python_model = load_registered(self.name, version, threads=self.intra_op_threads,
                                               runtime=self.runtime)
        run = client.get_run(run_id).data if run_id else None  # once per load, never per request
        loaded = LoadedModel(
            name=self.name, version=version, run_id=run_id or "", python_model=python_model,
            labels=list(python_model.labels),
            card=python_model.card, training_metrics=dict(run.metrics) if run else {},
            model_git_commit=run.tags.get("git_commit") if run else None,
            review_threshold_setting=self.review_threshold,
        )
        _self_test(pyfunc, loaded)
        _warm_explainer(loaded)
        return loaded

    async def follow(self, interval_seconds: float) -> None:
        """Poll the alias forever; loading runs in a thread so the event loop keeps answering."""
        while True:
            await asyncio.to_thread(self.refresh)
            await asyncio.sleep(interval_seconds)
