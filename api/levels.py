"""Answers at a level of the category tree (`/predict?level=`): the model scores leaves; a node's probability
is the sum of its leaves' (ml/hierarchy.py), so an answer at any level names a real node of the training tree."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi.exceptions import RequestValidationError

from api.model_manager import LoadedModel
from api.schemas import LabelProbability
from ml.hierarchy import LabelTree, node_answer, top_entries

PER_TOP_KEYS = ("top_labels", "top_probabilities", "top_paths", "top_path_probabilities")


def tree_of(model: LoadedModel) -> LabelTree:
    return model.python_model.tree


def check_level(*, model: LoadedModel, level: int | None) -> None:
    """422 naming query.level when the version's tree has no such level."""
    if level is None:
        return
    depth = tree_of(model).depth
    if level >= depth:
        raise RequestValidationError([{
            "type": "less_than_equal", "loc": ("query", "level"), "input": level,
            "msg": f"level must be at most {depth - 1}: model version {model.version}'s category tree has "
                   f"{depth} level{'s' if depth != 1 else ''} (0 = root)"}])


def scored_top_k(*, model: LoadedModel, level: int | None, top_k: int) -> int:
    """How many leaves to ask the model for: every one when the answer is aggregated to a level."""
    return top_k if level is None else len(model.labels)


def answer_at(out: dict[str, Any], *, model: LoadedModel, level: int | None, top_k: int) -> dict[str, Any]:
    """The leaf answer ``out`` (every label ranked when ``level`` is set) as the caller asked for it."""
    if level is None:
        return out
    tree = tree_of(model)
    where = {label: i for i, label in enumerate(tree.labels)}
    row = np.zeros(len(tree.labels))
    for label, p in zip(out["top_labels"], out["top_probabilities"], strict=True):
        row[where[label]] = p
    return node_answer(tree, row, level, top_k)


def top_k_entries(answer: dict[str, Any]) -> list[LabelProbability]:
    return [LabelProbability(**entry) for entry in top_entries(answer)]


def cut_top(out: dict[str, Any], k: int) -> dict[str, Any]:
    """An answer scored for a larger top-k (a micro-batch), cut to ``k``: every per-label list alike."""
    return out | {key: out[key][:k] for key in PER_TOP_KEYS if key in out}


def logged_top_k(out: dict[str, Any], top_k: int) -> list[dict[str, Any]]:
    """The leaf answer's top-k as the request log (and the review queue) keeps it, whatever the level asked."""
    return top_entries(cut_top(out, top_k))
