"""The challenger against the champion on live traffic: what ``shadow_prediction`` (the challenger's
answers, api/shadow.py) says beside ``prediction_log`` (the champion's) and ``feedback`` (true labels).

One report, for ``productcat shadow report``, ``GET /shadow/report``, the ``shadow_report`` DAG and
``productcat promote --from-shadow``: sample size, agreement, the champion -> challenger label pairs
they disagree on, accuracy of each on the requests that got feedback with a 95% interval of the
difference, latency of each, and a verdict from ``params.yaml`` ``shadow:``.

The accuracy difference is paired (both versions answered the same requests), so its interval is
Newcombe's hybrid score interval for paired proportions (1998, method 10): the Wilson interval of each
accuracy, combined through the correlation of their right/wrong outcomes. It stays inside [-1, 1] and
behaves at small samples and at accuracies near 0 or 1, where the normal approximation does not.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Literal

import numpy as np
import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from api.db.models import Feedback, PredictionLog, ShadowPrediction
from ml.params import ShadowParams

Verdict = Literal["promote", "keep_champion", "not_enough_evidence"]


class Confusion(BaseModel):
    champion: str
    challenger: str
    count: int


class ClassDisagreement(BaseModel):
    label: str = Field(description="The champion's label.")
    requests: int
    disagreements: int
    rate: float


class AccuracyComparison(BaseModel):
    labelled: int = Field(description="Shadowed requests with feedback (their latest label counts).")
    champion: float | None = None
    challenger: float | None = None
    difference: float | None = Field(None, description="Challenger minus champion accuracy.")
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float
    both_right: int = 0
    only_champion_right: int = 0
    only_challenger_right: int = 0
    both_wrong: int = 0


class Latency(BaseModel):
    p50_ms: float | None = None
    p95_ms: float | None = None


class ShadowReport(BaseModel):
    model_name: str | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    since: datetime
    until: datetime
    requests: int = Field(description="Products both versions answered in the window (the sample size).")
    agreements: int
    agreement_rate: float | None = None
    top_confusions: list[Confusion] = Field(description="Champion -> challenger label pairs, most frequent first.")
    per_class: list[ClassDisagreement] = Field(description="By the champion's label, most disagreements first.")
    accuracy: AccuracyComparison
    latency: dict[str, Latency] = Field(description="champion and challenger, per product row in ms (a batch's rows "
                                        "share their call's time), over the newest shadow.latency_rows products.")
    verdict: Verdict
    reasons: list[str] = Field(description="Each rule, PASS or FAIL, with the numbers behind it.")

    @property
    def passed(self) -> bool:
        return self.verdict == "promote"


def wilson_interval(successes: int, n: int, z: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_interval(*, both: int, only_a: int, only_b: int, neither: int,
                               confidence: float) -> tuple[float, float, float]:
    """(p_a - p_b, low, high) for two proportions measured on the same n items (Newcombe method 10):
    ``only_a`` items count for a alone, ``only_b`` for b alone."""
    n = both + only_a + only_b + neither
    if n == 0:
        raise ValueError("no paired outcomes")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    l_a, u_a = wilson_interval(both + only_a, n, z)
    l_b, u_b = wilson_interval(both + only_b, n, z)
    # 2x2 table (a right/wrong x b right/wrong): A both, B a only, C b only, D neither.
    spread = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    product = both * neither - only_a * only_b
    if spread == 0:
        phi = 0.0
    elif product > 0:
        phi = max(product - n / 2, 0) / math.sqrt(spread)
    else:
        phi = product / math.sqrt(spread)
    delta = math.sqrt(max((p_a - l_a) ** 2 - 2 * phi * (p_a - l_a) * (u_b - p_b) + (u_b - p_b) ** 2, 0.0))
    epsilon = math.sqrt(max((u_a - p_a) ** 2 - 2 * phi * (u_a - p_a) * (p_b - l_b) + (p_b - l_b) ** 2, 0.0))
    difference = p_a - p_b
    return difference, max(-1.0, difference - delta), min(1.0, difference + epsilon)


def _percentiles(values: list[float]) -> Latency:
    if not values:
        return Latency()
    p50, p95 = np.percentile(np.asarray(values, dtype=float), [50, 95])
    return Latency(p50_ms=round(float(p50), 3), p95_ms=round(float(p95), 3))


def _latest_versions(connection: sa.Connection, since: datetime) -> tuple[str | None, str | None]:
    """(champion, challenger) of the newest shadow row in the window."""
    row = connection.execute(
        sa.select(ShadowPrediction.champion_version, ShadowPrediction.model_version)
        .where(ShadowPrediction.created_at >= since).order_by(ShadowPrediction.id.desc()).limit(1)
    ).first()
    return (row[0], row[1]) if row else (None, None)


def _joined(*, since: datetime, until: datetime, champion: str, challenger: str) -> sa.Subquery:
    """One row per product both versions answered in the window, with its latest feedback label (or None)."""
    latest = (sa.select(sa.func.max(Feedback.id).label("id")).group_by(Feedback.request_id)
              .subquery("latest_feedback"))
    truth = (sa.select(Feedback.request_id, Feedback.label).join(latest, latest.c.id == Feedback.id)
             .subquery("truth"))
    shadow, logged = ShadowPrediction, PredictionLog
    return (
        sa.select(shadow.id, shadow.model_name, logged.label.label("champion_label"),
                  shadow.label.label("challenger_label"), logged.latency_ms.label("champion_ms"),
                  shadow.latency_ms.label("challenger_ms"), truth.c.label.label("truth"))
        .join(logged, logged.request_id == shadow.request_id)
        .outerjoin(truth, truth.c.request_id == shadow.request_id)
        .where(shadow.created_at >= since, shadow.created_at <= until, shadow.model_version == challenger,
               logged.model_version == champion)
    ).subquery("pairs")


def _label_pairs(connection: sa.Connection, pairs: sa.Subquery) -> Counter[tuple[str, str]]:
    """(champion label, challenger label) -> products: at most labels squared rows, whatever the traffic."""
    query = (sa.select(pairs.c.champion_label, pairs.c.challenger_label, sa.func.count())
             .group_by(pairs.c.champion_label, pairs.c.challenger_label))
    return Counter({(a, b): n for a, b, n in connection.execute(query)})


def _accuracy(connection: sa.Connection, pairs: sa.Subquery, confidence: float) -> AccuracyComparison:
    right = [sa.case((pairs.c[column] == pairs.c.truth, 1), else_=0).label(f"{column}_right")
             for column in ("champion_label", "challenger_label")]
    query = sa.select(*right, sa.func.count()).where(pairs.c.truth.is_not(None)).group_by(*right)
    counts = Counter({(bool(a), bool(b)): n for a, b, n in connection.execute(query)})
    both, only_champion = counts[(True, True)], counts[(True, False)]
    only_challenger, neither = counts[(False, True)], counts[(False, False)]
    labelled = both + only_champion + only_challenger + neither
    result = AccuracyComparison(labelled=labelled, confidence=confidence, both_right=both,
                                only_champion_right=only_champion, only_challenger_right=only_challenger,
                                both_wrong=neither)
    if labelled:
        difference, low, high = paired_difference_interval(both=both, only_a=only_challenger, only_b=only_champion,
                                                           neither=neither, confidence=confidence)
        result.champion = (both + only_champion) / labelled
        result.challenger = (both + only_challenger) / labelled
        result.difference, result.ci_low, result.ci_high = difference, low, high
    return result


def _latency(connection: sa.Connection, pairs: sa.Subquery, rows: int) -> dict[str, Latency]:
    """Percentiles over the newest ``rows`` products (a bounded read, whatever the window holds)."""
    found = connection.execute(sa.select(pairs.c.champion_ms, pairs.c.challenger_ms)
                               .order_by(pairs.c.id.desc()).limit(rows)).all()
    return {"champion": _percentiles([r[0] for r in found]), "challenger": _percentiles([r[1] for r in found])}


def _verdict(requests: int, accuracy: AccuracyComparison, rules: ShadowParams) -> tuple[Verdict, list[str]]:
    reasons = []
    enough_requests = requests >= rules.min_requests
    reasons.append(f"{'PASS' if enough_requests else 'FAIL'}: {requests} requests answered by both "
                   f"(at least {rules.min_requests})")
    enough_labels = accuracy.labelled >= rules.min_labelled
    reasons.append(f"{'PASS' if enough_labels else 'FAIL'}: {accuracy.labelled} of them labelled by /feedback "
                   f"(at least {rules.min_labelled})")
    if not (enough_requests and enough_labels) or accuracy.ci_low is None:
        return "not_enough_evidence", reasons
    holds = accuracy.ci_low >= -rules.max_accuracy_drop - 1e-12
    reasons.append(
        f"{'PASS' if holds else 'FAIL'}: accuracy challenger {accuracy.challenger:.4f} vs champion "
        f"{accuracy.champion:.4f}, difference {accuracy.difference:+.4f} ({rules.confidence:.0%} CI "
        f"{accuracy.ci_low:+.4f} .. {accuracy.ci_high:+.4f}); its lower bound may be at most "
        f"{rules.max_accuracy_drop} below 0")
    return ("promote" if holds else "keep_champion"), reasons


def shadow_report(*, engine: Engine | sa.Connection, rules: ShadowParams, since: datetime | None = None,
                  until: datetime | None = None, champion_version: str | None = None,
                  challenger_version: str | None = None) -> ShadowReport:
    """The report over shadow rows created in [since, until] (default: the last ``rules.window_hours``).
    Versions default to those of the newest shadow row in the window; only rows of that pair count."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(hours=rules.window_hours)
    since, until = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (since, until))
    model_name, label_pairs = None, Counter[tuple[str, str]]()
    accuracy = AccuracyComparison(labelled=0, confidence=rules.confidence)
    latency = {"champion": Latency(), "challenger": Latency()}
    with engine.connect() if isinstance(engine, Engine) else contextlib.nullcontext(engine) as connection:
        if champion_version is None or challenger_version is None:
            latest_champion, latest_challenger = _latest_versions(connection, since)
            champion_version = champion_version or latest_champion
            challenger_version = challenger_version or latest_challenger
        if champion_version is not None and challenger_version is not None:  # else no shadow answers yet
            pairs = _joined(since=since, until=until, champion=champion_version, challenger=challenger_version)
            model_name = connection.scalar(sa.select(pairs.c.model_name).limit(1))
            label_pairs = _label_pairs(connection, pairs)
            accuracy = _accuracy(connection, pairs, rules.confidence)
            latency = _latency(connection, pairs, rules.latency_rows)
    requests = sum(label_pairs.values())
    disagreements = {pair: n for pair, n in label_pairs.items() if pair[0] != pair[1]}
    by_class, lost_by_class = Counter[str](), Counter[str]()
    for (champion, challenger), n in label_pairs.items():
        by_class[champion] += n
        lost_by_class[champion] += n if champion != challenger else 0
    per_class = sorted((ClassDisagreement(label=label, requests=n, disagreements=lost_by_class[label],
                                          rate=lost_by_class[label] / n) for label, n in by_class.items()),
                       key=lambda c: (-c.disagreements, -c.rate, c.label))
    verdict, reasons = _verdict(requests, accuracy, rules)
    agreements = requests - sum(disagreements.values())
    return ShadowReport(
        model_name=model_name, champion_version=champion_version, challenger_version=challenger_version,
        since=since, until=until, requests=requests, agreements=agreements,
        agreement_rate=agreements / requests if requests else None,
        top_confusions=[Confusion(champion=a, challenger=b, count=n)
                        for (a, b), n in sorted(disagreements.items(), key=lambda item: (-item[1], item[0]))
                        [:rules.top_confusions]],
        per_class=[c for c in per_class if c.disagreements][:rules.top_confusions * 2],
        accuracy=accuracy, latency=latency, verdict=verdict, reasons=reasons,
    )
