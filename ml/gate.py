"""Stage 5: the promotion gate. A candidate becomes `champion` only if it passes
the rules in params.yaml against the current champion on the same test set, and,
when it was trained on the champion's own data, only if it is better by more than
noise; the decision and every reason are stored as tags on the candidate's version."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient

from ml.evaluate import evaluate, load_evaluation
from ml.params import GateParams, Params
from ml.promotion import move_challenger, move_champion, promote
from ml.pyfunc_model import RUNTIME_TAG
from ml.registry import champion, configure_mlflow, model_version, set_version_tags
from ml.settings import MLSettings
from ml.split import read_split, test_set_fingerprint

log = logging.getLogger(__name__)

__all__ = ["GateDecision", "choose_runtime", "gate", "move_champion", "promote"]
DATA_TAGS = ("data_dvc_md5", "data_content_md5")  # the split's version, as train tags each version


@dataclass
class GateDecision:
    candidate: str
    champion: str | None
    passed: bool = True
    reasons: list[str] = field(default_factory=list)
    promoted: bool = False
    runtime: str | None = None  # the inference variant the candidate serves with (None: it has no variants)
    no_change: str | None = None  # why a candidate that passed the rules does not take the alias
    challenger: bool = False  # passed with promotion off: it became the challenger, scored in the champion's shadow

    @property
    def outcome(self) -> str:
        """pass | fail | no_change: what `gate_decision` records."""
        return "fail" if not self.passed else ("no_change" if self.no_change else "pass")

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


def _same_data(cand_tags: dict[str, str], champ_tags: dict[str, str]) -> str | None:
    """The data version both versions were trained on, or None when it differs or is unknown."""
    for key in DATA_TAGS:
        if key in cand_tags and key in champ_tags:
            return cand_tags[key] if cand_tags[key] == champ_tags[key] else None
    return None


def _changed_params(client: MlflowClient, cand_run: str, champ_run: str) -> list[str]:
    ours, theirs = client.get_run(cand_run).data.params, client.get_run(champ_run).data.params
    return sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))


def no_change_reason(client: MlflowClient, cand: Any, champ: Any, cand_ev: dict[str, Any], champ_ev: dict[str, Any],
                     rules: GateParams) -> str | None:
    """Why a candidate that passed the rules is still not better than the champion, or None if it is.

    On the champion's own data (same split version) a challenger must beat it by more than noise:
    the band is `max_macro_f1_drop`, the same width the rules forgive as a drop. A tie there is a
    retrain of what already serves, and moving the alias for it would only displace the version
    someone chose. A candidate trained on new data keeps the plain rules: it may take the alias
    when it holds the champion's level, since it has seen data the champion has not."""
    data = _same_data(cand.tags, champ.tags)
    if data is None:
        return None
    gain = cand_ev["macro_f1"] - champ_ev["macro_f1"]
    if gain > rules.max_macro_f1_drop + 1e-9:
        return None
    changed = _changed_params(client, cand.run_id, champ.run_id)
    recipe = ("same parameters" if not changed else
              f"parameters differ ({', '.join(changed[:8])}{', ...' if len(changed) > 8 else ''})")
    return (f"not better than champion v{champ.version}: same data version {data[:12]}, {recipe}, macro-F1 "
            f"{cand_ev['macro_f1']:.4f} vs {champ_ev['macro_f1']:.4f} (gain {gain:+.4f} is within the noise band "
            f"{rules.max_macro_f1_drop}); the alias stays")


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


def gate(*, settings: MLSettings, params: Params, version: str | None = None, promote: bool = True,
         by: str = "gate") -> GateDecision:
    """Decide on ``version`` (default: the newest) and, when it passes and ``promote``, move the alias
    (when it passes with ``promote`` off, it becomes the challenger instead).
    ``by`` names who ran the gate in the alias history (the DAG run, the CLI user)."""
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
        if decision.passed:
            decision.no_change = no_change_reason(client, cand, champ, cand_ev, champ_ev, params.gate)
            if decision.no_change:
                decision.reasons.append(f"NO CHANGE: {decision.no_change}")
    decision.runtime, runtime_reasons = choose_runtime(cand_ev.get("variants", {}),
                                                       max_drop=params.gate.max_int8_macro_f1_drop)
    decision.reasons += runtime_reasons
    now = datetime.now(UTC).isoformat(timespec="seconds")
    set_version_tags(client, settings, cand.version, {
        **({RUNTIME_TAG: decision.runtime} if decision.runtime else {}),
        "gate_decision": decision.outcome,
        "gate_reasons": json.dumps(decision.reasons)[:4900],  # registry tag values are length-limited
        "gate_compared_with": decision.champion or "none (first champion)",
        "gate_test_fingerprint": fingerprint,
        "gate_checked_at": now,
        **({"gate_no_change_reason": decision.no_change[:4900]} if decision.no_change else {}),
    })
    if not decision.no_change and "gate_no_change_reason" in cand.tags:  # from an earlier gate of this version
        client.delete_model_version_tag(settings.registered_model, str(cand.version), "gate_no_change_reason")
    if decision.outcome == "pass" and promote and (champ is None or champ.version != cand.version):
        why = "passed the promotion gate" + (f"; trained for: {cand.tags['train_reason']}"
                                             if cand.tags.get("train_reason") else "")
        move_champion(client, settings, version=cand.version, by=by, reason=why)
        decision.promoted = True
    elif decision.outcome == "pass" and not promote and champ is not None and champ.version != cand.version:
        # Promotion off: the candidate earns live evidence first (`productcat promote --from-shadow` decides).
        move_challenger(client, settings, version=cand.version, by=by,
                        reason=f"passed the promotion gate against v{champ.version} with promotion off")
        decision.challenger = True
    log.info("gate v%s vs %s: %s (serves with %s)\n  %s", cand.version, decision.champion or "no champion",
             decision.outcome.upper(), decision.runtime or "its only runtime",
             "\n  ".join(decision.reasons))
    return decision
