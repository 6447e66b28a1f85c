"""Stage 5: the promotion gate. A candidate becomes `champion` only if it passes
the rules in params.yaml against the current champion on the same test set;
the decision and every reason are stored as tags on the candidate's version."""

from __future__ import annotations

import getpass
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient

from ml.evaluate import evaluate, load_evaluation
from ml.params import GateParams, Params
from ml.pyfunc_model import RUNTIME_TAG
from ml.registry import champion, configure_mlflow, model_version, set_version_tags
from ml.settings import MLSettings
from ml.split import read_split, test_set_fingerprint

log = logging.getLogger(__name__)


@dataclass
class GateDecision:
    candidate: str
    champion: str | None
    passed: bool = True
    reasons: list[str] = field(default_factory=list)
    promoted: bool = False
    runtime: str | None = None  # the inference variant the candidate serves with (None: it has no variants)

    def check(self, ok: bool, text: str) -> None:
        self.passed &= ok
        self.reasons.append(f"{'PASS' if ok else 'FAIL'}: {text}")


def _absolute_rules(decision: GateDecision, ev: dict[str, Any], rules: GateParams) -> None:
    decision.check(ev["macro_f1"] >= rules.min_macro_f1,
                   f"macro-F1 {ev['macro_f1']:.4f} >= minimum {rules.min_macro_f1}")
    decision.check(ev["accuracy"] >= rules.min_accuracy,
                   f"accuracy {ev['accuracy']:.4f} >= minimum {rules.min_accuracy}")
    decision.check(ev["latency_p50_ms"] <= rules.max_latency_ms,
                   f"p50 CPU latency {ev['latency_p50_ms']:.1f} ms <= budget {rules.max_latency_ms} ms")


def _challenger_rules(decision: GateDecision, cand: dict[str, Any], champ: dict[str, Any], rules: GateParams) -> None:
    floor = champ["macro_f1"] - rules.max_macro_f1_drop
    decision.check(cand["macro_f1"] >= floor, f"macro-F1 {cand['macro_f1']:.4f} vs champion "
                   f"{champ['macro_f1']:.4f} (may be at most {rules.max_macro_f1_drop} lower)")
    fallen = []
    for label, theirs in champ["per_class"].items():
        ours = cand["per_class"].get(label)
        if theirs["support"] < rules.class_min_support or ours is None:
            continue
        if ours["f1"] < theirs["f1"] - rules.max_class_f1_drop:
            fallen.append(f"{label} {theirs['f1']:.2f}->{ours['f1']:.2f}")
    decision.check(not fallen, f"no class (support >= {rules.class_min_support}) loses more than "
                   f"{rules.max_class_f1_drop} F1" + (f"; fell: {', '.join(fallen[:10])}" if fallen else ""))


def choose_runtime(variants: dict[str, dict[str, float]], *, max_drop: float) -> tuple[str | None, list[str]]:
    """The fastest variant whose test macro-F1 is at most ``max_drop`` below torch's (int8, then fp32
    ONNX, then torch itself), and why. The variants are the same weights: refusing one never refuses
    the version, it only changes what it serves with."""
    if "torch" not in variants:
        return None, []
    reference = variants["torch"]["macro_f1"]
    reasons = []
    for runtime in ("onnx-int8", "onnx-fp32"):
        if runtime not in variants:
            continue
        drop = reference - variants[runtime]["macro_f1"]
        accepted = drop <= max_drop + 1e-9  # "at most": 0.80 - 0.795 must not fail on float error
        reasons.append(f"{'ACCEPT' if accepted else 'REFUSE'}: {runtime} macro-F1 {variants[runtime]['macro_f1']:.4f}"
                       f" vs torch {reference:.4f} (may be at most {max_drop} lower)")
        if accepted:
            return runtime, reasons
    return "torch", reasons


def _current_evaluation(client: MlflowClient, settings: MLSettings, params: Params, version: str, run_id: str,
                        fingerprint: str) -> dict[str, Any]:
    """The version's evaluation on today's test set, evaluating it (again) if needed."""
    ev = load_evaluation(client, run_id)
    if ev is None or ev.get("test_fingerprint") != fingerprint:
        log.info("v%s has no evaluation on the current test set: evaluating it now", version)
        ev = evaluate(settings=settings, params=params, version=version)
    return ev


def gate(*, settings: MLSettings, params: Params, version: str | None = None, promote: bool = True) -> GateDecision:
    client = configure_mlflow(settings)
    cand = model_version(client, settings, version)
    fingerprint = test_set_fingerprint(read_split(settings, "test")["id"])
    cand_ev = _current_evaluation(client, settings, params, cand.version, cand.run_id, fingerprint)
    champ = champion(client, settings)
    is_first = champ is None or champ.version == cand.version
    decision = GateDecision(candidate=str(cand.version), champion=None if is_first else str(champ.version))
    _absolute_rules(decision, cand_ev, params.gate)
    if not is_first:
        champ_ev = _current_evaluation(client, settings, params, champ.version, champ.run_id, fingerprint)
        _challenger_rules(decision, cand_ev, champ_ev, params.gate)
    decision.runtime, runtime_reasons = choose_runtime(cand_ev.get("variants", {}),
                                                       max_drop=params.gate.max_int8_macro_f1_drop)
    decision.reasons += runtime_reasons
    now = datetime.now(UTC).isoformat(timespec="seconds")
    set_version_tags(client, settings, cand.version, {
        **({RUNTIME_TAG: decision.runtime} if decision.runtime else {}),
        "gate_decision": "pass" if decision.passed else "fail",
        "gate_reasons": json.dumps(decision.reasons)[:4900],  # registry tag values are length-limited
        "gate_compared_with": decision.champion or "none (first champion)",
        "gate_test_fingerprint": fingerprint,
        "gate_checked_at": now,
    })
    if decision.passed and promote and (champ is None or champ.version != cand.version):
        move_champion(client, settings, version=cand.version, by="gate", reason="passed the promotion gate")
        decision.promoted = True
    log.info("gate v%s vs %s: %s (serves with %s)\n  %s", cand.version, decision.champion or "no champion",
             "PASS" if decision.passed else "FAIL", decision.runtime or "its only runtime",
             "\n  ".join(decision.reasons))
    return decision


def move_champion(client: MlflowClient, settings: MLSettings, *, version: str, by: str, reason: str) -> str | None:
    """Point the champion alias at ``version``; record who, why and what it replaced. Returns the previous one."""
    current = champion(client, settings)
    previous = str(current.version) if current is not None else None
    client.set_registered_model_alias(settings.registered_model, settings.champion_alias, str(version))
    now = datetime.now(UTC).isoformat(timespec="seconds")
    set_version_tags(client, settings, str(version), {
        "promoted_by": by, "promotion_reason": reason, "promoted_at": now,
        "previous_champion": previous or "none",
    })
    if previous is not None and previous != str(version):
        set_version_tags(client, settings, previous, {"replaced_by": version, "replaced_at": now})
    log.info("%s@%s -> v%s (was %s): %s", settings.registered_model, settings.champion_alias, version,
             previous or "none", reason)
    return previous


def promote(*, settings: MLSettings, version: str, reason: str, by: str | None = None) -> str | None:
    """Manual promotion or rollback: move the alias to any registered version."""
    client = configure_mlflow(settings)
    target = model_version(client, settings, version)
    return move_champion(client, settings, version=target.version, by=by or getpass.getuser(), reason=reason)
