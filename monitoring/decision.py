"""The verdict of a drift check: every signal against its threshold from params.yaml, whether the
window drifted, and whether to retrain and why.

Pure functions of measured numbers, so the policy is testable without data or Evidently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ml.params import MonitorParams
from monitoring.descriptors import BRAND_EMPTY, DESCRIPTION_EMPTY, NON_ASCII, PRICE_MISSING

# What each signal says about the requests; the retrain policy reads the kind.
INPUT, INTEGRITY, PREDICTION, QUALITY = "input", "integrity", "prediction", "quality"
DISTANCE_KINDS = {"title_length": INPUT, "description_length": INPUT, "price": INPUT, "oov_rate": INPUT,
                  "title_text": INPUT, "predicted_label": PREDICTION}
# A field that went missing in the feed: (statistic, signal, kind when the share rises).
SHARE_SIGNALS = ((DESCRIPTION_EMPTY, "description_empty", INTEGRITY), (BRAND_EMPTY, "brand_empty", INTEGRITY),
                 (PRICE_MISSING, "price_missing", INTEGRITY), (NON_ASCII, "non_ascii", INPUT))
# Falls against the champion's validation split: (statistic, signal, kind).
DROP_SIGNALS = (("confidence", "confidence_drop", PREDICTION), ("accuracy", "accuracy_drop", QUALITY),
                ("macro_f1", "macro_f1_drop", QUALITY))
OK, INSUFFICIENT = "ok", "insufficient_data"


@dataclass(frozen=True)
class Signal:
    name: str
    kind: str
    value: float | None  # distance, change of a share, or fall; None when not measured
    threshold: float
    fired: bool
    reference: float | None = None  # the statistic on the reference side (shares, means, quality)
    current: float | None = None
    note: str = ""  # why it was not measured, or what changed


@dataclass(frozen=True)
class DriftDecision:
    status: str
    drifted: bool
    signals: list[Signal]
    current_rows: int
    labelled_rows: int

    @property
    def fired(self) -> list[Signal]:
        return [s for s in self.signals if s.fired]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "drifted": self.drifted, "fired": [s.name for s in self.fired],
                "current_rows": self.current_rows, "labelled_rows": self.labelled_rows,
                "signals": {s.name: asdict(s) for s in self.signals}}


@dataclass(frozen=True)
class RetrainAdvice:
    retrain: bool
    reasons: list[str] = field(default_factory=list)


def decide(*, monitor: MonitorParams, distances: dict[str, float], skipped: dict[str, str],
           stats: dict[str, tuple[float | None, float | None]], current_rows: int, labelled_rows: int
           ) -> DriftDecision:
    t = monitor.thresholds
    signals = []
    for name, kind in DISTANCE_KINDS.items():
        value, threshold = distances.get(name), getattr(t, name)
        signals.append(Signal(name, kind, value, threshold, value is not None and value >= threshold,
                              note=skipped.get(name, "")))
    for stat, name, kind in SHARE_SIGNALS:
        ref, cur = stats.get(stat, (None, None))
        change = None if ref is None or cur is None else cur - ref
        # More missing fields is a feed losing data; fewer is a different kind of input.
        shape = kind if change is not None and change > 0 else INPUT
        signals.append(Signal(name, shape, change, getattr(t, name), change is not None and abs(change) >= getattr(
            t, name), ref, cur, note="" if not change else ("rose" if change > 0 else "fell")))
    for stat, name, kind in DROP_SIGNALS:
        ref, cur = stats.get(stat, (None, None))
        fall = None if ref is None or cur is None else ref - cur
        note = "" if fall is not None else ("not enough feedback" if kind == QUALITY else "no prediction to compare")
        signals.append(Signal(name, kind, fall, getattr(t, name), fall is not None and fall >= getattr(t, name),
                              ref, cur, note))
    if current_rows < monitor.min_rows:  # a handful of requests says nothing either way
        return DriftDecision(INSUFFICIENT, False, [_unfired(s) for s in signals], current_rows, labelled_rows)
    return DriftDecision(OK, any(s.fired for s in signals), signals, current_rows, labelled_rows)


def _unfired(signal: Signal) -> Signal:
    return Signal(**{**asdict(signal), "fired": False})


def should_retrain(decision: DriftDecision, monitor: MonitorParams) -> RetrainAdvice:
    """Retrain when the model is measurably worse (quality or confidence fell) or when enough
    input/prediction signals agree; never on a feed that lost fields, which retraining cannot fix."""
    if decision.status != OK:
        return RetrainAdvice(False, [f"only {decision.current_rows} requests in the window "
                                     f"(min_rows {monitor.min_rows}): no verdict"])
    fired = decision.fired
    described = [_describe(s) for s in fired]
    if not fired:
        return RetrainAdvice(False, ["no signal crossed its threshold"])
    if broken := [s for s in fired if s.kind == INTEGRITY]:
        return RetrainAdvice(False, [f"the feed lost fields ({', '.join(s.name for s in broken)}): fix the feed; "
                                     "a model retrained on the catalogue would meet the same gaps", *described])
    if worse := [s for s in fired if s.kind == QUALITY or s.name == "confidence_drop"]:
        return RetrainAdvice(True, [f"the champion is measurably worse ({', '.join(s.name for s in worse)})",
                                    *described])
    if len(fired) >= monitor.retrain.min_signals:
        return RetrainAdvice(True, [f"{len(fired)} signals agree (min {monitor.retrain.min_signals})", *described])
    return RetrainAdvice(False, [f"{len(fired)} signal(s) fired, fewer than min_signals {monitor.retrain.min_signals}, "
                                 "and no loss of confidence or accuracy: watch, do not retrain yet", *described])


def _describe(signal: Signal) -> str:
    assert signal.value is not None  # only fired signals are described
    if signal.reference is None or signal.current is None:  # a distance
        return f"{signal.name}: {signal.value:.3g} (threshold {signal.threshold:g})"
    return (f"{signal.name}: {signal.reference:.3g} -> {signal.current:.3g} "
            f"({signal.value:+.3g}, threshold {signal.threshold:g})")
