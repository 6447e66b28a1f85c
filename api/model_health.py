"""Whether a model version's answers may be served, and whether a new version has proven itself.

Every batch a version answers is checked before it reaches a caller: at the swap, on the sample of real
products the version carries, and on every request after. The checks are a few comparisons per answer.
A new version's first requests (its probation) decide whether it stays or the one before comes back.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

EPS = 1e-4  # float slack on probabilities (float32 softmax sums land a few ulps above 1)
ANSWER_FIELDS = ("label", "probability", "top_labels", "top_probabilities", "label_path")


class InvalidAnswers(ValueError):
    """The model answered, but not with something a caller may be given."""


def check_answers(answers: Sequence[Mapping[str, Any]], *, count: int, top_k: int, labels: Collection[str],
                  leaf_to_path: Mapping[str, Sequence[str]]) -> None:
    """Raise InvalidAnswers unless there is one well-formed answer per product: labels of the version's
    own set, ``min(top_k, labels)`` of them, probabilities finite in [0, 1], sorted, summing to at most 1,
    the label's path the one the version was trained with, and (when given) each top label's path too,
    with probabilities that never rise from root to label."""
    if len(answers) != count:
        raise InvalidAnswers(f"{len(answers)} answers for {count} products")
    want = min(top_k, len(labels))
    for position, answer in enumerate(answers):
        if problem := _problem(answer, want, labels, leaf_to_path):
            raise InvalidAnswers(f"answer {position}: {problem}")


def _problem(answer: Mapping[str, Any], want: int, labels: Collection[str],
             leaf_to_path: Mapping[str, Sequence[str]]) -> str | None:
    try:
        label, best, top, probabilities, path = (answer[name] for name in ANSWER_FIELDS)
        probabilities = [float(p) for p in probabilities]
        best = float(best)
    except (KeyError, TypeError, ValueError):
        return "missing or non-numeric fields"
    if not isinstance(label, str) or label not in labels:
        return f"unknown label {label!r:.60}"
    if len(top) != want or len(probabilities) != want:
        return f"{len(top)} top labels and {len(probabilities)} probabilities, expected {want}"
    if top[0] != label or any(not isinstance(t, str) or t not in labels for t in top):
        return "top labels do not start with the label or hold an unknown one"
    if not all(math.isfinite(p) and -EPS <= p <= 1 + EPS for p in (best, *probabilities)):
        return "a probability is not a finite number in [0, 1]"
    if abs(best - probabilities[0]) > EPS or any(a < b - EPS for a, b in pairwise(probabilities)):
        return "probabilities are not sorted from the label's down"
    if sum(probabilities) > 1 + EPS:
        return f"top probabilities sum to {sum(probabilities):.4f} > 1"
    if list(path) != list(leaf_to_path.get(label, [label])):
        return "label_path is not the label's path"
    if "top_paths" in answer:  # versions that give each top label's path (older ones do not)
        return _paths_problem(top, probabilities, answer.get("top_paths"), answer.get("top_path_probabilities"),
                              leaf_to_path)
    return None


def _paths_problem(top: Sequence[str], probabilities: Sequence[float], paths: Any, path_probabilities: Any,
                   leaf_to_path: Mapping[str, Sequence[str]]) -> str | None:
    """Each top label's path must be the one it was trained with (so a real path of the tree, never an
    impossible parent/child), with one probability per node, non-increasing down to the label's own."""
    try:
        pairs = list(zip(top, paths, path_probabilities, probabilities, strict=True))
        nodes = [[float(p) for p in probs] for _, _, probs, _ in pairs]
    except (TypeError, ValueError):
        return "top_paths / top_path_probabilities do not match the top labels"
    for (label, path, _, own), probs in zip(pairs, nodes, strict=True):
        if list(path) != list(leaf_to_path.get(label, [label])):
            return f"path {list(path)!r:.120} is not the path of {label!r:.60} in the training tree"
        if len(probs) != len(path) or not all(math.isfinite(p) and -EPS <= p <= 1 + EPS for p in probs):
            return f"path probabilities of {label!r:.60} are not one finite number in [0, 1] per node"
        if any(a < b - EPS for a, b in pairwise(probs)) or abs(probs[-1] - own) > EPS:
            return f"path probabilities of {label!r:.60} rise down the path or do not end at its probability"
    return None


@dataclass
class Probation:
    """The first ``window`` requests a version answers after a swap. It fails as soon as more than
    ``max_failures`` of them failed (the rate over the window can then no longer stay under the limit),
    and is proven once all ``window`` were answered without that."""

    version: str
    window: int
    max_failures: int
    requests: int = 0
    failures: int = 0
    last_failure: str | None = None

    @classmethod
    def start(cls, version: str, *, window: int, max_failure_rate: float) -> Probation:
        return cls(version, window, math.floor(max_failure_rate * window + 1e-9))

    def record(self, failure: str | None) -> Literal["watching", "proven", "failed"]:
        self.requests += 1
        if failure is not None:
            self.failures += 1
            self.last_failure = failure
        if self.failures > self.max_failures:
            return "failed"
        return "proven" if self.requests >= self.window else "watching"

    def reason(self) -> str:
        return f"{self.failures} of its first {self.requests} requests failed (last: {self.last_failure})"
