"""Fast baseline: TF-IDF over word and character n-grams + logistic regression."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from ml.models import META_FILE

PIPELINE_FILE = "baseline.joblib"


class BaselineClassifier:
    family = "baseline"
    runtime = "sklearn"  # its only one

    def __init__(self, pipeline: Pipeline, labels: list[str]) -> None:
        self.pipeline = pipeline
        self.labels = labels  # column i of predict_proba is labels[i]

    @classmethod
    def fit(
        cls, texts: list[str], labels: list[str], *, c: float, class_weight: dict[str, float] | None,
        max_features: int, seed: int,
    ) -> BaselineClassifier:
        features = FeatureUnion([
            # words and bigrams carry the product type ("running shoes")
            ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=1, max_features=max_features, sublinear_tf=True)),
            # char n-grams survive typos, plurals and glued tokens ("t-shirt", "tshirts")
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), max_features=max_features,
                                     sublinear_tf=True)),
        ])
        # Fit on class indices, not label strings: scikit-learn turns digit-only labels (Rakuten's
        # product-type codes "10", "2583") into numbers, and a class_weight keyed by the strings then fails.
        names = sorted(set(labels))
        index = {name: i for i, name in enumerate(names)}
        weights = {index[k]: w for k, w in class_weight.items()} if class_weight else None
        classifier = LogisticRegression(C=c, class_weight=weights, max_iter=2000, random_state=seed)
        pipeline = Pipeline([("features", features), ("classifier", classifier)])
        pipeline.fit(texts, [index[label] for label in labels])
        return cls(pipeline, names)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.pipeline.predict_proba(texts)

    def available_runtimes(self) -> list[str]:
        return [self.runtime]

    def use_runtime(self, preferred: str | None, *, threads: int = 0) -> str:
        return self.runtime  # a sparse linear model: nothing to choose

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.pipeline, folder / PIPELINE_FILE)
        (folder / META_FILE).write_text(json.dumps({"family": self.family, "labels": self.labels}))

    @classmethod
    def load(cls, folder: Path) -> BaselineClassifier:
        labels = json.loads((folder / META_FILE).read_text())["labels"]
        return cls(joblib.load(folder / PIPELINE_FILE), labels)
