"""The TF-IDF baseline on its own: label order, class weights, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.models import load_classifier
from ml.models.baseline import BaselineClassifier
from ml.train import class_weights

# Rakuten labels are product-type codes: digit-only strings that must stay strings.
TEXTS = ["jeu video console manette", "jeu video ps4 disque", "livre roman poche", "livre bande dessinee",
         "piscine gonflable jardin", "piscine filtre pompe", "jeu video switch cartouche"]
LABELS = ["2462", "2462", "10", "10", "2583", "2583", "2462"]


def test_digit_only_labels_train_with_class_weights_and_round_trip(tmp_path: Path) -> None:
    clf = BaselineClassifier.fit(TEXTS, LABELS, c=10.0, class_weight=class_weights(LABELS, "balanced"),
                                 max_features=1000, seed=0)
    assert clf.labels == ["10", "2462", "2583"]
    proba = clf.predict_proba(["jeu video manette", "roman poche", "pompe piscine"])
    assert [clf.labels[i] for i in proba.argmax(axis=1)] == ["2462", "10", "2583"]
    clf.save(tmp_path / "clf")
    loaded = load_classifier(tmp_path / "clf")
    assert loaded.labels == clf.labels
    np.testing.assert_allclose(loaded.predict_proba(["roman poche"]), clf.predict_proba(["roman poche"]))
