"""Full-split fine-tune of the transformer family on a GPU (bf16 autocast): throughput, step time,
model FLOP utilisation and the accuracy it reaches, in one short run.

Three steps, because the GPU machine has the checkout but neither the catalogues nor this
project's virtualenv (its own python3 holds torch, transformers, pandas and scikit-learn):

1. here, once:   .venv/bin/python benchmarks/gpu_finetune.py prepare
   ingests and splits the full fashion catalogue with the pipeline's own code and writes .gpu/
   (git-ignored): the model texts and labels of train / validation / test, and the base
   checkpoint (bf16 safetensors, so the folder stays under the 64 MiB a run may carry);
2. on the GPU:   python3 benchmarks/gpu_finetune.py run --data .gpu --out "$OUT"
   (with `.gpu` carried) trains with ml/models/transformer.py's TransformerClassifier.fit, the code
   `productcat train --family transformer` runs, and writes gpu_finetune.json;
3. here:         .venv/bin/python benchmarks/gpu_finetune.py record --result <gpu_finetune.json> \\
                     --update-doc docs/benchmarks.md

`run` also works on CPU (`--max-train-rows 256 --epochs 1` checks the script end to end).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

log = logging.getLogger("gpu_finetune")
START, END = "<!-- gpu-finetune-benchmark:start -->", "<!-- gpu-finetune-benchmark:end -->"
SPLITS = ("train", "validation", "test")

# Dense bf16 tensor-core peaks (vendor data sheets, no sparsity), TFLOP/s, matched on the device name.
BF16_PEAK_TFLOPS = {
    "H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0,
    "L40S": 362.1, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.2,
}


def _prepare(args: argparse.Namespace) -> None:
    """Full catalogue -> split (pipeline code) -> .gpu/: texts + labels per split, bf16 base checkpoint."""
    import pandas as pd
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ml.features import product_texts
    from ml.ingest import ingest
    from ml.models.transformer import default_base_model
    from ml.params import load_params
    from ml.settings import MLSettings
    from ml.split import read_split, split

    work = REPO_ROOT / "benchmarks" / "out" / "gpu" / args.dataset
    settings = MLSettings(project_root=REPO_ROOT, interim_dir=work / "interim", processed_dir=work / "processed",
                          reports_dir=work / "reports")
    params = load_params(settings)
    params.ingest.dataset = args.dataset
    if not (work / "processed" / "test.parquet").exists():
        ingest(settings=settings, params=params)
        split(settings=settings, params=params)
    args.data.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        frame = read_split(settings, name)
        pd.DataFrame({"text": product_texts(frame.to_dict("records")), "label": frame["label"]}).to_parquet(
            args.data / f"{name}.parquet", index=False)
    base = default_base_model()
    # The encoder alone, as the package ships it: `run` puts a head for the split's labels on top.
    model = AutoModel.from_pretrained(base).to(torch.bfloat16)
    model.save_pretrained(args.data / "base", safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(args.data / "base")
    size = sum(f.stat().st_size for f in args.data.rglob("*") if f.is_file())
    log.info("wrote %s (%.1f MiB); carry it to the GPU machine", args.data, size / 2**20)


def _peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in device_name), None)


def _flops_per_padded_token(model: Any, seq_len: float) -> float:
    """Training FLOPs per token: 6 x the non-embedding parameters (forward 2, backward 4) plus the
    attention products (QK^T and AV: 4 x layers x seq_len x width forward, 3x that with backward)."""
    config = model.config
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embedding
    return 6 * dense + 12 * config.num_hidden_layers * seq_len * config.hidden_size


def _run(args: argparse.Namespace) -> None:
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoModel, AutoTokenizer

    from ml.models.transformer import TransformerClassifier, TransformerConfig

    frames = {name: pd.read_parquet(args.data / f"{name}.parquet") for name in SPLITS}
    train = frames["train"]
    if args.max_train_rows and len(train) > args.max_train_rows:
        train = train.sample(n=args.max_train_rows, random_state=13)
    # The carried checkpoint is bf16 to travel light; train from fp32 master weights as `productcat train` does.
    base = Path("/tmp/productcat-gpu-base")
    AutoModel.from_pretrained(args.data / "base", dtype=torch.float32).save_pretrained(base)
    AutoTokenizer.from_pretrained(args.data / "base").save_pretrained(base)
    config = TransformerConfig(base_model=str(base), max_length=args.max_length, batch_size=args.batch_size,
                               epochs=args.epochs, learning_rate=args.learning_rate, patience=args.epochs)
    steps: list[dict[str, float]] = []
    epochs: list[dict[str, float]] = []
    started = time.perf_counter()
    clf, report = TransformerClassifier.fit(
        train["text"].tolist(), train["label"].tolist(),
        frames["validation"]["text"].tolist(), frames["validation"]["label"].tolist(),
        config=config, on_step=steps.append, on_epoch=lambda epoch, record: epochs.append({"epoch": epoch, **record}),
    )
    wall = time.perf_counter() - started
    test = frames["test"][frames["test"]["label"].isin(clf.labels)]
    infer_started = time.perf_counter()
    proba = clf.predict_proba(test["text"].tolist(), batch_size=256)
    infer_seconds = time.perf_counter() - infer_started
    pred = np.asarray(clf.labels)[proba.argmax(axis=1)]
    timed = steps[min(10, len(steps) - 1):]  # the first steps carry kernel selection and warm-up
    step_seconds = sum(s["seconds"] for s in timed)
    padded, tokens = sum(s["padded_tokens"] for s in timed), sum(s["tokens"] for s in timed)
    seq_len = padded / sum(s["samples"] for s in timed)
    achieved = _flops_per_padded_token(clf.model, seq_len) * padded / step_seconds
    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    peak = _peak_tflops(device_name) if torch.cuda.is_available() else None
    result = {
        "device": device_name, "torch": torch.__version__, "precision": "bf16 autocast" if torch.cuda.is_available()
        else "fp32", "train_rows": len(train), "classes": len(clf.labels), "epochs_run": len(epochs),
        "batch_size": args.batch_size, "max_length": args.max_length, "learning_rate": args.learning_rate,
        "wall_seconds": wall, "train_seconds": report.train_seconds,
        "epoch_seconds": report.train_seconds / max(len(epochs), 1),
        "samples_per_second": report.train_samples_per_second,
        "tokens_per_second": tokens / step_seconds, "padded_tokens_per_second": padded / step_seconds,
        "step_ms_median": 1000 * statistics.median(s["seconds"] for s in timed),
        "step_ms_p90": 1000 * float(np.percentile([s["seconds"] for s in timed], 90)),
        "mean_padded_length": seq_len, "model_tflops": achieved / 1e12,
        "peak_bf16_tflops": peak, "mfu": achieved / (peak * 1e12) if peak else None,
        "test_rows": len(test), "test_accuracy": float(accuracy_score(test["label"], pred)),
        "test_macro_f1": float(f1_score(test["label"], pred, average="macro", zero_division=0)),
        "test_items_per_second": len(test) / infer_seconds, "history": epochs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_finetune.json").write_text(json.dumps(result, indent=2))
    log.info("%s", json.dumps({k: v for k, v in result.items() if k != "history"}, indent=2))


def to_markdown(result: dict[str, Any], result_path: Path) -> str:
    mfu = f"{100 * result['mfu']:.1f} %" if result.get("mfu") is not None else "n/a (no bf16 peak on record)"
    lines = [
        START,
        f"Device: {result['device']}, torch {result['torch']}, {result['precision']}; fashion train split "
        f"({result['train_rows']:,} rows, {result['classes']} classes), batch {result['batch_size']}, "
        f"max {result['max_length']} tokens, lr {result['learning_rate']}, {result['epochs_run']} epochs.",
        "",
        "| samples/s | tokens/s (real) | tokens/s (padded) | step p50 / p90 (ms) | epoch (s) | model TFLOP/s | MFU "
        "| test accuracy | test macro-F1 | inference items/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result['samples_per_second']:,.0f} | {result['tokens_per_second']:,.0f} | "
        f"{result['padded_tokens_per_second']:,.0f} | {result['step_ms_median']:.1f} / {result['step_ms_p90']:.1f} | "
        f"{result['epoch_seconds']:.1f} | {result['model_tflops']:.2f} | {mfu} | {result['test_accuracy']:.4f} | "
        f"{result['test_macro_f1']:.4f} | {result['test_items_per_second']:,.0f} |",
        "",
        f"Reproduce: `.venv/bin/python benchmarks/gpu_finetune.py prepare`, then on the GPU machine "
        f"`python3 benchmarks/gpu_finetune.py run --data .gpu --out \"$OUT\"`, then "
        f"`.venv/bin/python benchmarks/gpu_finetune.py record --result {result_path.name} "
        f"--update-doc docs/benchmarks.md`.",
        END,
    ]
    return "\n".join(lines)


def _record(args: argparse.Namespace) -> None:
    from benchmarks.doc_section import write_section

    result = json.loads(args.result.read_text())
    write_section(args.update_doc, to_markdown(result, args.result), start=START, end=END,
                  heading="Transformer fine-tuning on a GPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="Write the carry folder (split texts + base checkpoint).")
    prepare.add_argument("--dataset", default="fashion", help="params.yaml dataset key (a full catalogue).")
    prepare.add_argument("--data", type=Path, default=REPO_ROOT / ".gpu")
    run = commands.add_parser("run", help="Fine-tune on the carried data; writes gpu_finetune.json to --out.")
    run.add_argument("--data", type=Path, default=REPO_ROOT / ".gpu")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--epochs", type=int, default=3)
    run.add_argument("--batch-size", type=int, default=64)
    run.add_argument("--max-length", type=int, default=64, help="Tokens; fashion titles average about 24.")
    run.add_argument("--learning-rate", type=float, default=1e-4)
    run.add_argument("--max-train-rows", type=int, default=None, help="Subsample (a CPU smoke run).")
    record = commands.add_parser("record", help="Write a run's figures into docs/benchmarks.md.")
    record.add_argument("--result", type=Path, required=True)
    record.add_argument("--update-doc", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    {"prepare": _prepare, "run": _run, "record": _record}[args.command](args)


if __name__ == "__main__":
    main()
