"""Drift monitoring without data or services: product descriptors and the retrain policy."""

from __future__ import annotations

import math

import pytest

from ml.params import MonitorParams
from monitoring.decision import INSUFFICIENT, INTEGRITY, OK, decide, should_retrain
from monitoring.descriptors import describe, describe_one, summary, tokens, vocabulary

KNOWN = vocabulary([{"title": "Turtle Check Men Navy Blue Shirt", "description": "Cotton shirt"}])


def test_descriptors_read_products_as_the_model_cleans_them() -> None:
    logged = describe_one({"title": "  Turtle  Check Shirt ", "description": ["", "Cotton &amp; linen"],
                           "brand": "", "price": "$1,299.00"}, KNOWN)
    assert logged["title"] == "Turtle Check Shirt" and logged["title_chars"] == len("Turtle Check Shirt")
    assert logged["description_chars"] == len("Cotton & linen") and logged["description_empty"] == 0.0
    assert logged["brand_empty"] == 1.0 and logged["price_missing"] == 0.0
    assert logged["log_price"] == pytest.approx(math.log1p(1299.0))
    assert logged["oov_rate"] == pytest.approx(1 / 5)  # turtle check shirt cotton linen: only "linen" is new
    assert logged["non_ascii"] == 0.0


def test_unreadable_or_blank_prices_count_as_missing_and_accents_as_non_ascii() -> None:
    frame = describe([{"title": "Robe d'été fleurie", "price": ""}, {"title": "Blue shirt", "price": 12.5},
                      {"title": "Blue shirt", "price": "see shop"}], KNOWN)
    assert frame["price_missing"].tolist() == [1.0, 0.0, 1.0]
    assert frame["non_ascii"].tolist() == [1.0, 0.0, 0.0]
    assert math.isnan(frame["description_chars"][0])  # a length only where there is text
    values = summary(frame)
    assert values["price_missing"] == pytest.approx(2 / 3) and values["description_empty"] == 1.0


def test_tokens_are_words_not_sizes_or_codes() -> None:
    assert tokens("Nike Men's 2-Pack XL T-Shirts 100% cotton") == ["nike", "men", "pack", "xl", "shirts", "cotton"]


MONITOR = MonitorParams()
CALM = {"description_empty": (0.1, 0.12), "brand_empty": (0.3, 0.3), "price_missing": (0.0, 0.0),
        "non_ascii": (0.0, 0.01), "confidence": (0.7, 0.68)}


def judge(distances: dict[str, float], stats: dict, rows: int = 500):
    decision = decide(monitor=MONITOR, distances=distances, skipped={}, stats=stats, current_rows=rows,
                      labelled_rows=0)
    return decision, should_retrain(decision, MONITOR)


def test_nothing_fires_on_a_calm_window() -> None:
    decision, advice = judge({"title_length": 0.05, "title_text": 0.52, "predicted_label": 0.06}, CALM)
    assert decision.status == OK and not decision.drifted and decision.fired == []
    assert not advice.retrain and advice.reasons == ["no signal crossed its threshold"]


def test_a_feed_that_lost_fields_is_drift_but_not_a_reason_to_retrain() -> None:
    stats = {**CALM, "description_empty": (0.1, 1.0), "price_missing": (0.0, 0.5)}
    decision, advice = judge({"title_length": 1.2, "oov_rate": 0.9}, stats)
    assert decision.drifted
    assert {s.name for s in decision.fired} == {"title_length", "oov_rate", "description_empty", "price_missing"}
    assert {s.kind for s in decision.fired if s.name.endswith(("empty", "missing"))} == {INTEGRITY}
    assert not advice.retrain and "fix the feed" in advice.reasons[0]


def test_more_fields_than_before_is_input_drift_not_a_broken_feed() -> None:
    decision, _ = judge({}, {**CALM, "description_empty": (1.0, 0.35)})
    fired = {s.name: s for s in decision.fired}
    assert fired["description_empty"].kind == "input" and fired["description_empty"].note == "fell"


def test_a_confidence_fall_alone_retrains_one_input_signal_alone_does_not() -> None:
    _, advice = judge({}, {**CALM, "confidence": (0.7, 0.3)})
    assert advice.retrain and "confidence_drop" in advice.reasons[0]
    _, advice = judge({"predicted_label": 0.4}, CALM)
    assert not advice.retrain and "watch" in advice.reasons[0]
    _, advice = judge({"predicted_label": 0.4, "title_text": 0.9}, CALM)
    assert advice.retrain and "2 signals agree" in advice.reasons[0]


def test_quality_is_judged_only_with_feedback_and_a_fall_retrains() -> None:
    decision, _ = judge({}, CALM)
    assert {s.name: s.note for s in decision.signals}["accuracy_drop"] == "not enough feedback"
    decision, advice = judge({}, {**CALM, "accuracy": (0.9, 0.6), "macro_f1": (0.8, 0.7)})
    assert [s.name for s in decision.fired] == ["accuracy_drop"] and advice.retrain


def test_a_small_window_gets_no_verdict() -> None:
    decision, advice = judge({"title_length": 3.0}, {**CALM, "confidence": (0.7, 0.1)}, rows=MONITOR.min_rows - 1)
    assert decision.status == INSUFFICIENT and not decision.drifted and decision.fired == []
    assert not advice.retrain and "no verdict" in advice.reasons[0]


def test_retrain_advice_before_any_check(tmp_path) -> None:
    from api.db.migrate import upgrade
    from monitoring.service import retrain_advice

    url = f"sqlite:///{tmp_path / 'requests.db'}"
    upgrade(url)
    advice = retrain_advice(db_url=url)
    assert not advice.retrain and advice.reasons == ["no drift check has run yet"]
