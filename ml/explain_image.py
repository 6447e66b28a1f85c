"""Explanations for the photo families: where in the photo the label came from, and how much of a
fusion's decision came from the text and how much from the photo.

- Photo: occlusion. The prepared photo is cut into ``grid`` x ``grid`` patches; each is set to the
  normalised mid-grey (0) in turn, and the drop of the label's log-probability under the image head is
  that patch's weight (> 0: the patch supports the label). One batch of ``grid**2 + 1`` forward passes.
- Fusion: the stacking head is linear in [log p_text, log p_image], so the label's logit splits exactly
  into a text part, a photo part and a bias. Softmax ignores what every class shares, so each part is
  taken relative to its mean over the classes: the shares are those centred parts' sizes, and the words
  are the text model's own exact explanation (ml/explain_linear.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ml.explain import Deadline, Explanation, FeatureWeight, ImageMap, Unexplainable, strongest

GRID = 4  # patches per side: 17 forward passes, about 0.3 s at 112 px on one CPU core
FLOOR = 1e-6


def _log_label_proba(head: Any, vectors: np.ndarray, *, label_index: int, n_classes: int) -> np.ndarray:  # noqa: ANN401
    from ml.models.image import full_proba

    return np.log(np.clip(full_proba(head, vectors, n_classes)[:, label_index], FLOOR, 1.0))


def occlusion_map(image_model: Any, photo: Path, *, label_index: int, deadline: Deadline,  # noqa: ANN401
                  grid: int = GRID) -> tuple[ImageMap, float]:
    """The patch weights of ``photo`` for the label, and the label's log-probability on the whole photo."""
    import torch
    from PIL import Image

    from ml.models.efficientnet_lite import prepare

    embedder = image_model.embedder
    with Image.open(photo) as opened:
        x = prepare([opened.convert("RGB")], size=embedder.size)
    size = x.shape[-1]
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    batch = x.repeat(grid * grid + 1, 1, 1, 1)
    for cell in range(grid * grid):
        r, c = divmod(cell, grid)
        batch[cell + 1, :, edges[r]:edges[r + 1], edges[c]:edges[c + 1]] = 0.0
    deadline.check("preparing the photo")
    with torch.inference_mode():
        vectors = embedder._backbone().features(batch).numpy()  # noqa: SLF001 - the embedder's own backbone
    deadline.check("occluding the photo")
    logp = _log_label_proba(image_model.head, vectors, label_index=label_index, n_classes=len(image_model.labels))
    weights = (logp[0] - logp[1:]).reshape(grid, grid)
    image_map = ImageMap(rows=grid, cols=grid, size=size, weights=[[float(w) for w in row] for row in weights])
    return image_map, float(logp[0])


def _patch_features(image_map: ImageMap) -> list[FeatureWeight]:
    return [FeatureWeight(feature=f"photo patch row {r + 1}, column {c + 1}", kind="patch", weight=w)
            for r, row in enumerate(image_map.weights) for c, w in enumerate(row)]


def explain_image(classifier: Any, record: Mapping[str, Any], *, label_index: int, deadline: Deadline,  # noqa: ANN401
                  image_root: Path | None, top_features: int) -> Explanation:
    from ml.models.image_embeddings import photo_file

    photo = photo_file(record, image_root)
    if photo is None:
        raise Unexplainable("the image model read no photo for this product (its answer is the training prior)")
    image_map, logp = occlusion_map(classifier, photo, label_index=label_index, deadline=deadline)
    return Explanation(
        label=classifier.labels[label_index], method="occlusion", base_value=logp, score=logp, fields=[],
        top_features=strongest(_patch_features(image_map), top_features), image_map=image_map,
        modality_shares={"text": 0.0, "image": 1.0})


def explain_fusion(classifier: Any, record: Mapping[str, Any], *, label_index: int, deadline: Deadline,  # noqa: ANN401
                   image_root: Path | None, top_features: int) -> Explanation:
    """The text model's word contributions, the photo's occlusion map and the text/photo shares of the
    stacking head's decision; a product without a photo is answered (and explained) by its text alone."""
    from ml.explain_linear import explain_linear
    from ml.features import product_texts
    from ml.models.fusion import stack_features
    from ml.models.image_embeddings import photo_file

    text = explain_linear(classifier.text, record, label_index=label_index, deadline=deadline,
                          top_features=top_features)
    photo = photo_file(record, image_root)
    column = np.flatnonzero(classifier.stacker.classes_ == label_index)
    if photo is None or not column.size:
        return replace(text, modality_shares={"text": 1.0, "image": 0.0})
    image_map, _ = occlusion_map(classifier.image, photo, label_index=label_index, deadline=deadline)
    text_proba = classifier.text.predict_proba(product_texts([record]))
    vector = classifier.image.embedder.embed_files([photo])
    image_proba = classifier.image.head_proba(vector)
    x = stack_features(text_proba, image_proba)[0]
    k = len(classifier.labels)
    weights, bias = classifier.stacker.coef_, classifier.stacker.intercept_
    if weights.shape[0] == 1:  # two classes: scikit-learn keeps one row, the second class's logit
        weights, bias = np.vstack([-weights, weights]) / 2, np.concatenate([-bias, bias]) / 2
    parts = {"text": weights[:, :k] @ x[:k], "image": weights[:, k:] @ x[k:]}
    centred = {name: float(part[column[0]] - part.mean()) for name, part in parts.items()}
    total = abs(centred["text"]) + abs(centred["image"]) or 1.0
    shares = {name: round(abs(value) / total, 4) for name, value in centred.items()}
    score = float(bias[column[0]] + parts["text"][column[0]] + parts["image"][column[0]])
    features = strongest([*text.top_features, *_patch_features(image_map)], top_features)
    return replace(text, method="late-fusion", base_value=float(bias[column[0]]), score=score,
                   top_features=features, image_map=image_map, modality_shares=shares)
