"""Integrated-gradients explanations of the transformer family (ml/models/transformer.py).

Attributions are taken on the word embeddings: the path runs from a baseline where every real token is
the padding token (special tokens kept) to the product's own tokens, and each token's share is the sum
over its embedding of (input - baseline) x the path-averaged gradient of the class's logit
(Gauss-Legendre quadrature, as captum's LayerIntegratedGradients computes it by default). The shares add
up to the logit minus the baseline's logit, up to the quadrature's error.

Computed here with torch alone: captum would bring matplotlib, which serving does not install. The
embeddings are fed to the model as ``inputs_embeds``, so no hook is placed on the shared model and
predictions running beside an explanation are untouched. Always the torch weights, whatever runtime
serves predictions, in fp32 (no autocast) so that one input gives one answer. The steps run a few per
forward/backward pass, with the deadline checked between passes.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ml.explain import Deadline, Explanation, FeatureWeight, field_spans, strongest, text_layout

log = logging.getLogger(__name__)

METHOD = "integrated-gradients"
STEPS_PER_PASS = 8  # interpolation steps per forward/backward pass: the deadline is checked between passes

Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def integrated_gradients(forward: Forward, inputs: torch.Tensor, baseline: torch.Tensor, mask: torch.Tensor, *,
                         target: int, n_steps: int, deadline: Deadline) -> torch.Tensor:
    """(inputs - baseline) x the integral over alpha in [0, 1] of d logit[target] / d embeddings at
    baseline + alpha (inputs - baseline), for one sequence (shape 1 x tokens x dims)."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    alphas, step_sizes = (nodes + 1) / 2, weights / 2  # from [-1, 1] to [0, 1]
    delta = inputs - baseline
    total = torch.zeros_like(inputs)
    for first in range(0, n_steps, STEPS_PER_PASS):
        deadline.check("integrating gradients")
        alpha = torch.tensor(alphas[first:first + STEPS_PER_PASS], dtype=inputs.dtype, device=inputs.device)
        step = torch.tensor(step_sizes[first:first + STEPS_PER_PASS], dtype=inputs.dtype, device=inputs.device)
        path = (baseline + alpha.view(-1, 1, 1) * delta).requires_grad_(True)
        logits = forward(path, mask.expand(len(alpha), -1))
        (gradients,) = torch.autograd.grad(logits[:, target].sum(), path)
        total += (gradients * step.view(-1, 1, 1)).sum(dim=0, keepdim=True)
    return delta * total


def explain_transformer(classifier: Any, record: Mapping[str, Any], *, label_index: int,  # noqa: ANN401
                        deadline: Deadline, n_steps: int, top_features: int) -> Explanation:
    layout = text_layout(record)
    tokenizer, model = classifier.tokenizer, classifier.model
    device = next(model.parameters()).device
    encoded = tokenizer(layout.text, truncation=True, max_length=classifier.max_length,
                        return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = torch.tensor([encoded["input_ids"]], device=device)
    special = torch.tensor([encoded["special_tokens_mask"]], device=device, dtype=torch.bool)
    mask = torch.ones_like(ids)
    baseline_ids = torch.where(special, ids, torch.full_like(ids, tokenizer.pad_token_id))
    embed = model.get_input_embeddings()

    def forward(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits.float()

    with torch.no_grad():
        inputs, baseline = embed(ids).float(), embed(baseline_ids).float()
        logits = forward(torch.cat([inputs, baseline]), torch.cat([mask, mask]))
    score, base_value = float(logits[0, label_index]), float(logits[1, label_index])
    with torch.enable_grad():
        attributions = integrated_gradients(forward, inputs, baseline, mask, target=label_index, n_steps=n_steps,
                                            deadline=deadline)
    per_token = attributions.sum(dim=-1)[0].detach().cpu().numpy().astype(np.float64)

    char_weights = np.zeros(len(layout.text), dtype=np.float64)
    by_token: dict[str, float] = defaultdict(float)
    pieces = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    for weight, (start, end), piece, is_special in zip(
            per_token, encoded["offset_mapping"], pieces, encoded["special_tokens_mask"], strict=True):
        if is_special or end <= start:
            continue
        char_weights[start:end] += weight / (end - start)
        by_token[piece] += float(weight)
    features = [FeatureWeight(feature=piece, kind="token", weight=weight) for piece, weight in by_token.items()]
    # score is base_value + the attributions, as for every method; the model's own logit differs from it
    # by the integral's approximation error, which more steps shrink.
    log.debug("integrated gradients: approximation error %.4g", score - base_value - float(per_token.sum()))
    return Explanation(
        label=classifier.labels[label_index], method=METHOD, base_value=base_value,
        score=base_value + float(per_token.sum()), fields=field_spans(layout, char_weights),
        top_features=strongest(features, top_features),
    )
