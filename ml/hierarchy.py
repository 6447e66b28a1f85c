"""Category paths from a leaf classifier: the tree of the training labels and per-level probabilities.

The model scores leaves; the probability of any node of the tree is the sum of the probabilities of the
leaves under it, so every path answered is a real path of the training tree and the probabilities along a
path never rise from root to leaf. A node is its path (names repeat under different parents). In a ragged
tree a leaf that ends above level L stands for itself at L and below: each level's probabilities sum to 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Path = tuple[str, ...]


@dataclass(frozen=True)
class LabelTree:
    """The tree of ``labels`` (the classifier's columns, in order) read from the card's ``leaf_to_path``."""

    labels: tuple[str, ...]
    paths: tuple[Path, ...]  # paths[i]: the path of labels[i], root first (the label alone if the card lacks it)
    levels: tuple[tuple[list[Path], np.ndarray], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        levels = []
        for level in range(self.depth):
            index: dict[Path, int] = {}
            owner = np.array([index.setdefault(self.node_at(i, level), len(index)) for i in range(len(self.labels))])
            levels.append((list(index), owner))
        object.__setattr__(self, "levels", tuple(levels))

    @classmethod
    def from_card(cls, labels: Sequence[str], leaf_to_path: Mapping[str, Sequence[str]]) -> LabelTree:
        paths = tuple(tuple(str(n) for n in (leaf_to_path.get(label) or [label])) for label in labels)
        return cls(tuple(labels), paths)

    @property
    def depth(self) -> int:
        """Levels of the tree (1 for flat labels)."""
        return max((len(p) for p in self.paths), default=0)

    def node_at(self, leaf: int, level: int) -> Path:
        path = self.paths[leaf]
        return path[: min(level + 1, len(path))]

    def nodes(self, level: int) -> tuple[list[Path], np.ndarray]:
        """The distinct nodes of ``level`` (first-seen order) and, per label, the index of its node."""
        return self.levels[level]

    def is_real_path(self, path: Sequence[str]) -> bool:
        """``path`` is a prefix (root first) of some training path."""
        path = tuple(path)
        return bool(path) and any(p[: len(path)] == path for p in self.paths)


def level_probabilities(tree: LabelTree, proba: np.ndarray, level: int) -> tuple[list[Path], np.ndarray]:
    """Leaf probabilities (rows x labels) -> (the nodes of ``level``, rows x nodes): each node's leaf sum."""
    nodes, owner = tree.nodes(level)
    order = np.argsort(owner, kind="stable")  # labels grouped by node; node i's group starts at starts[i]
    starts = np.searchsorted(owner[order], np.arange(len(nodes)))
    return nodes, np.add.reduceat(np.asarray(proba, dtype=np.float64)[:, order], starts, axis=1)


def leaf_path_probabilities(tree: LabelTree, proba: np.ndarray, leaves: np.ndarray) -> list[list[list[float]]]:
    """For each row and each of its ``leaves`` (rows x k label indices): the probability of every node
    on that leaf's path (the sum over its subtree), root first, the leaf's own last."""
    per_level = [level_probabilities(tree, proba, level)[1] for level in range(tree.depth)]
    rows = np.arange(len(leaves))[:, None]
    stacked = np.stack([probs[rows, tree.levels[level][1][leaves]] for level, probs in enumerate(per_level)], axis=-1)
    # the last is the leaf's own probability: a leaf that is also an inner node (products stop at
    # "A > B", others go on to "A > B > C") holds less than the subtree named like it
    return [[[*stacked[r, j, : len(tree.paths[leaf]) - 1].tolist(), float(proba[r, leaf])]
             for j, leaf in enumerate(row)] for r, row in enumerate(leaves)]


def top_nodes(tree: LabelTree, proba_row: np.ndarray, level: int, k: int) -> list[tuple[Path, float]]:
    """The ``k`` most probable nodes of ``level`` for one product, most probable first."""
    nodes, probs = level_probabilities(tree, proba_row[None, :], level)
    order = np.argsort(-probs[0], kind="stable")[:k]
    return [(nodes[i], float(probs[0, i])) for i in order]


def path_probabilities(tree: LabelTree, proba_row: np.ndarray, path: Sequence[str]) -> list[float]:
    """The probability of each prefix of ``path`` (root first), each the sum over its subtree: non-increasing."""
    path = tuple(path)
    out = []
    for depth in range(1, len(path) + 1):
        mask = np.array([p[:depth] == path[:depth] for p in tree.paths])
        out.append(float(np.asarray(proba_row, dtype=np.float64)[mask].sum()))
    return out


def node_answer(tree: LabelTree, proba_row: np.ndarray, level: int, top_k: int) -> dict[str, Any]:
    """One product's answer at ``level`` in the shape of a leaf answer: the top nodes of that level as
    labels (the node's name), their aggregated probabilities, paths and per-level path probabilities."""
    top = top_nodes(tree, proba_row, level, top_k)
    paths = [list(node) for node, _ in top]
    return {
        "label": paths[0][-1], "probability": top[0][1], "label_path": paths[0],
        "top_labels": [p[-1] for p in paths], "top_probabilities": [p for _, p in top],
        "top_paths": paths,
        "top_path_probabilities": [[*path_probabilities(tree, proba_row, path)[:-1], probability]
                                   for path, (_, probability) in zip(paths, top, strict=True)],
    }


def top_entries(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An answer's top-k as [{label, probability, path, path_probabilities}] (no path keys for answers of
    versions that give none)."""
    entries = [{"label": label, "probability": float(p)}
               for label, p in zip(answer["top_labels"], answer["top_probabilities"], strict=True)]
    if "top_paths" in answer:
        for entry, path, probs in zip(entries, answer["top_paths"], answer["top_path_probabilities"], strict=True):
            entry |= {"path": list(path), "path_probabilities": [float(p) for p in probs]}
    return entries


def back_off(tree: LabelTree, proba: np.ndarray, threshold: float) -> list[Path]:
    """Per row: walk down from the most probable root, each time to the most probable child (aggregated
    probabilities; a node that is also a leaf competes with its children as "stop here"), and stop at
    the deepest node whose probability reaches ``threshold`` (the most probable root when none does: an
    answer is always given). Threshold 0 gives the greedy full path."""
    nodes, probs = level_probabilities(tree, proba, 0)
    chosen = np.argmax(probs, axis=1)
    answers = [nodes[i] for i in chosen]
    done = np.zeros(len(answers), dtype=bool)
    for level in range(1, tree.depth):
        parents = {node: i for i, node in enumerate(nodes)}
        nodes, probs = level_probabilities(tree, proba, level)
        # the node one level up: its parent, or itself for a leaf that ends above this level
        parent = np.array([parents[node[:level] if len(node) == level + 1 else node] for node in nodes])
        masked = np.where(parent[None, :] == chosen[:, None], probs, -1.0)
        best = np.argmax(masked, axis=1)
        best_p = masked[np.arange(len(best)), best]
        done |= best_p < threshold
        for row in np.flatnonzero(~done):
            answers[row] = nodes[best[row]]
        chosen = best
    return answers
