"""Inference variants of a fine-tuned transformer, written into its artifact folder so that they
travel inside the same MLflow model version: ONNX fp32 (batch and sequence axes dynamic) and a
dynamically quantised int8 copy. The fp32 graph must reproduce torch on real rows, or the export
fails; which variant serves is decided later, by the gate, on the frozen test set."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.models.transformer import ONNX_FILES, TORCH_RUNTIME, TransformerClassifier
from ml.params import ExportParams

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask")


class _Logits(torch.nn.Module):
    """The classifier as a graph with plain tensor inputs and one output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(clf: TransformerClassifier, path: Path, *, opset: int, example_texts: list[str]) -> None:
    """fp32 ONNX graph of ``clf`` on CPU; ``example_texts`` (two or more, of different lengths) trace it."""
    encoded = clf.tokenizer(example_texts, truncation=True, max_length=clf.max_length, padding=True,
                            return_tensors="pt")
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=clf.max_length)
    device = clf.model.device
    clf.model.cpu()
    try:
        torch.onnx.export(
            _Logits(clf.model).eval(), tuple(encoded[name] for name in INPUT_NAMES), str(path),
            input_names=list(INPUT_NAMES), output_names=["logits"], opset_version=opset, dynamo=True,
            dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUT_NAMES},
            external_data=False,  # one self-contained file (the weights are ~90 MB, far from protobuf's 2 GB)
        )
    finally:
        clf.model.to(device)


def quantize_int8(source: Path, target: Path) -> None:
    """Weights of every MatMul as int8, activations quantised on the fly per call; the embedding
    table stays fp32 (a lookup gains nothing from int8 and would lose precision)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


def export_variants(clf: TransformerClassifier, folder: Path, *, params: ExportParams,
                    check_texts: list[str]) -> dict[str, Any]:
    """Write the variants into ``folder`` (where ``clf`` was saved) and check fp32 against torch on
    ``check_texts``; returns what the run and the model card record."""
    started = time.perf_counter()
    fp32 = folder / ONNX_FILES["onnx-fp32"]
    export_onnx(clf, fp32, opset=params.opset, example_texts=sorted(check_texts, key=len)[-2:])
    if params.int8:
        quantize_int8(fp32, folder / ONNX_FILES["onnx-int8"])
    clf.folder = folder
    reference = clf.predict_proba(check_texts)
    info: dict[str, Any] = {"opset": params.opset, "check_rows": len(check_texts), "runtimes": {}}
    try:
        for runtime in clf.available_runtimes():
            if runtime == TORCH_RUNTIME:
                continue
            clf.use_runtime(runtime)
            proba = clf.predict_proba(check_texts)
            info["runtimes"][runtime] = {
                "file": ONNX_FILES[runtime], "max_abs_diff": float(np.abs(proba - reference).max()),
                "top1_agreement": float((proba.argmax(axis=1) == reference.argmax(axis=1)).mean()),
                "megabytes": round((folder / ONNX_FILES[runtime]).stat().st_size / 2**20, 1),
            }
    finally:
        clf.use_runtime(TORCH_RUNTIME)
    diff = info["runtimes"].get("onnx-fp32", {}).get("max_abs_diff", float("inf"))
    if diff > params.max_abs_diff:
        raise RuntimeError(f"the fp32 ONNX export differs from torch by {diff:.2e} (> {params.max_abs_diff})")
    info["seconds"] = time.perf_counter() - started
    log.info("exported %s in %.1f s: %s", ", ".join(info["runtimes"]), info["seconds"], info["runtimes"])
    return info
