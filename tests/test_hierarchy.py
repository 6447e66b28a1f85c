"""Category paths from the leaf model (ml/hierarchy.py): per-level sums, real paths, monotone path
probabilities, /predict?level=, hierarchical F1, and the answer check that refuses an impossible path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.model_health import InvalidAnswers, check_answers
from ml.hierarchy import LabelTree, back_off, leaf_path_probabilities, level_probabilities, node_answer
from ml.metrics import hierarchical_f1, path_level_accuracy
from ml.pyfunc_model import load_registered
from ml.registry import configure_mlflow
from tests.api_support import api_settings, build_registry, move_alias, wait_ready

# A ragged tree: "Bags" ends at level 1 while "Bags > Straps" goes on; "Misc" is a root that is a leaf.
LEAF_TO_PATH = {
    "Shirts": ["Apparel", "Topwear", "Shirts"], "Tshirts": ["Apparel", "Topwear", "Tshirts"],
    "Jeans": ["Apparel", "Bottomwear", "Jeans"], "Bags": ["Accessories", "Bags"],
    "Straps": ["Accessories", "Bags", "Straps"], "Misc": ["Misc"],
}
TREE = LabelTree.from_card(list(LEAF_TO_PATH), LEAF_TO_PATH)
SHIRT = {"title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle", "price": "$24.99"}


def _proba(rows: int = 50) -> np.ndarray:
    return np.random.default_rng(7).dirichlet(np.ones(len(TREE.labels)), size=rows)


def test_each_level_sums_to_one_and_names_real_paths() -> None:
    proba = _proba()
    assert TREE.depth == 3
    for level in range(TREE.depth):
        nodes, probs = level_probabilities(TREE, proba, level)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        assert all(TREE.is_real_path(node) for node in nodes)
    roots, probs = level_probabilities(TREE, proba, 0)
    apparel = [TREE.labels.index(label) for label in ("Shirts", "Tshirts", "Jeans")]
    np.testing.assert_allclose(probs[:, roots.index(("Apparel",))], proba[:, apparel].sum(axis=1))
    assert not TREE.is_real_path(["Apparel", "Bags"])


def test_path_probabilities_fall_from_root_to_the_leaf_own() -> None:
    proba = _proba()
    order = np.argsort(-proba, axis=1)
    for row, leaves, paths in zip(proba, order, leaf_path_probabilities(TREE, proba, order), strict=True):
        for leaf, probs in zip(leaves, paths, strict=True):
            assert len(probs) == len(TREE.paths[leaf]) and probs[-1] == pytest.approx(row[leaf])
            assert all(a >= b - 1e-12 for a, b in zip(probs, probs[1:], strict=False))
    # "Bags" is a leaf and the parent of "Straps": on Straps' path its node holds both, as a leaf only itself
    bags, straps = TREE.labels.index("Bags"), TREE.labels.index("Straps")
    ((on_bags, on_straps),) = leaf_path_probabilities(TREE, proba[:1], np.array([[bags, straps]]))
    both = proba[0, bags] + proba[0, straps]
    assert on_bags == pytest.approx([both, proba[0, bags]])
    assert on_straps == pytest.approx([both, both, proba[0, straps]])


def test_node_answers_and_back_off_stay_on_the_tree() -> None:
    row = np.array([0.30, 0.25, 0.05, 0.1, 0.1, 0.2])  # Shirts, Tshirts, Jeans, Bags, Straps, Misc
    answer = node_answer(TREE, row, 1, 2)
    assert answer["top_paths"] == [["Apparel", "Topwear"], ["Accessories", "Bags"]]
    assert answer["top_probabilities"] == pytest.approx([0.55, 0.2])
    assert answer["top_path_probabilities"] == [pytest.approx([0.6, 0.55]), pytest.approx([0.2, 0.2])]
    assert back_off(TREE, row[None, :], 0.5) == [("Apparel", "Topwear")]
    assert back_off(TREE, row[None, :], 0.0) == [("Apparel", "Topwear", "Shirts")]
    assert back_off(TREE, row[None, :], 0.9) == [("Apparel",)]  # the root is always answered


def test_hierarchical_f1_on_a_hand_example() -> None:
    true = [["A", "B", "C"], ["A", "D"]]
    pred = [["A", "B", "E"], ["A"]]  # a wrong leaf under the right parent; a right but coarse answer
    # overlap 2 + 1 = 3 nodes; predicted 3 + 1 = 4; true 3 + 2 = 5
    scores = hierarchical_f1(true, pred)
    assert scores["hp"] == pytest.approx(3 / 4) and scores["hr"] == pytest.approx(3 / 5)
    assert scores["hf1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert path_level_accuracy(true, pred) == {"level_0": 1.0, "level_1": 1.0, "level_2": 0.0}


def _answer(**override: object) -> dict[str, object]:
    return {"label": "Shirts", "probability": 0.6, "top_labels": ["Shirts", "Jeans"], "top_probabilities": [0.6, 0.3],
            "label_path": LEAF_TO_PATH["Shirts"], "top_paths": [LEAF_TO_PATH["Shirts"], LEAF_TO_PATH["Jeans"]],
            "top_path_probabilities": [[0.9, 0.6, 0.6], [0.9, 0.3, 0.3]]} | override


def test_check_answers_refuses_an_impossible_path_or_rising_probabilities() -> None:
    check = {"count": 1, "top_k": 2, "labels": set(LEAF_TO_PATH), "leaf_to_path": LEAF_TO_PATH}
    check_answers([_answer()], **check)
    with pytest.raises(InvalidAnswers, match="not the path of 'Jeans'"):
        check_answers([_answer(top_paths=[LEAF_TO_PATH["Shirts"], ["Apparel", "Topwear", "Jeans"]])], **check)
    with pytest.raises(InvalidAnswers, match="rise down the path"):
        check_answers([_answer(top_path_probabilities=[[0.5, 0.6, 0.6], [0.9, 0.3, 0.3]])], **check)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    return build_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture
def service(registry, postgres_url: str, tmp_path: Path) -> Iterator[TestClient]:
    from api.db.migrate import upgrade

    upgrade(postgres_url)
    move_alias(registry[0], registry[1][0])
    with TestClient(create_app(api_settings(tmp_path, postgres_url), registry[0])) as client:
        wait_ready(client)
        yield client


@pytest.mark.integration
@pytest.mark.slow
def test_predict_gives_paths_and_answers_at_a_level(service: TestClient, registry) -> None:
    settings, versions = registry
    leaf = service.post("/predict", json=SHIRT).json()["predictions"][0]
    for entry in leaf["top_k"]:
        probs = entry["path_probabilities"]
        assert entry["path"][-1] == entry["label"] and len(probs) == len(entry["path"]) == 3
        assert probs == sorted(probs, reverse=True) and probs[-1] == pytest.approx(entry["probability"])
    assert leaf["top_k"][0]["path"] == leaf["label_path"]

    configure_mlflow(settings)
    _, model = load_registered(settings.registered_model, versions[0])
    (full,) = model.predict_records([SHIRT], top_k=len(model.labels))
    sums: dict[str, float] = {}
    for label, p in zip(full["top_labels"], full["top_probabilities"], strict=True):
        root = model.leaf_to_path[label][0]
        sums[root] = sums.get(root, 0.0) + p
    roots = service.post("/predict?level=0&top_k=2", json=SHIRT).json()["predictions"][0]
    assert [t["label"] for t in roots["top_k"]] == sorted(sums, key=sums.get, reverse=True)[:2]
    for entry in roots["top_k"]:
        assert entry["path"] == [entry["label"]] and entry["probability"] == pytest.approx(sums[entry["label"]])
    assert roots["label"] == roots["top_k"][0]["label"] and roots["label_path"] == [roots["label"]]

    middle = service.post("/predict?level=1", json=SHIRT).json()["predictions"][0]
    assert len(middle["label_path"]) == 2 and middle["label_path"][0] == leaf["label_path"][0]

    too_deep = service.post("/predict?level=3", json=SHIRT)
    assert too_deep.status_code == 422
    (error,) = too_deep.json()["detail"]
    assert error["loc"] == ["query", "level"] and "at most 2" in error["msg"]
    for query in ("level=-1", "level=0&explain=true"):
        refused = service.post(f"/predict?{query}", json=SHIRT)
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", "level"]
