"""Transformer training speed on this machine's CPU: what each fine-tuning setting buys, in one run.

    .venv/bin/python benchmarks/gpu_finetune.py prepare          # once: .gpu/ (fashion split texts)
    .venv/bin/python benchmarks/transformer_cpu_speed.py --update-doc docs/benchmarks.md

Each setting trains the same rows for the same number of steps through TransformerClassifier.fit
(the code `productcat train --family transformer` runs); the settings take turns, round after
round, so a busy machine slows them alike. The figure is training samples/s over the timed steps
(the first step of each round is left out: it carries allocation and thread start-up).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.doc_section import write_section  # noqa: E402

log = logging.getLogger("transformer_cpu_speed")
START, END = "<!-- transformer-cpu-speed:start -->", "<!-- transformer-cpu-speed:end -->"

SETTINGS: dict[str, dict[str, Any]] = {
    "random batches (before)": {"length_bucketing": False},
    "length-bucketed batches": {"length_bucketing": True},
    "+ frozen embeddings": {"length_bucketing": True, "freeze_embeddings": True},
    "+ lowest 3 of 6 layers frozen": {"length_bucketing": True, "freeze_embeddings": True, "frozen_layers": 3},
}


def measure(texts: list[str], labels: list[str], *, rounds: int, steps: int, batch_size: int,
            max_length: int) -> dict[str, dict[str, float]]:
    import torch

    from ml.models.transformer import TransformerClassifier, TransformerConfig, default_base_model

    base = default_base_model()
    rows = steps * batch_size
    timings: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    for r in range(rounds):
        picked = [(r * rows + i) % len(texts) for i in range(rows)]
        round_texts, round_labels = [texts[i] for i in picked], [labels[i] for i in picked]
        for name, options in SETTINGS.items():
            config = TransformerConfig(base_model=base, max_length=max_length, batch_size=batch_size, epochs=1,
                                       seed=13 + r, **options)
            steps_seen: list[dict[str, float]] = []
            TransformerClassifier.fit(round_texts, round_labels, [], [], config=config, on_step=steps_seen.append)
            timings[name] += steps_seen[1:]
            log.info("round %d/%d %s: %.1f samples/s", r + 1, rounds, name,
                     sum(s["samples"] for s in steps_seen[1:]) / sum(s["seconds"] for s in steps_seen[1:]))
    return {name: {
        "samples_per_second": sum(s["samples"] for s in timed) / sum(s["seconds"] for s in timed),
        "padded_tokens_per_sample": sum(s["padded_tokens"] for s in timed) / sum(s["samples"] for s in timed),
        "step_ms_median": 1000 * statistics.median(s["seconds"] for s in timed),
        "threads": torch.get_num_threads(),
    } for name, timed in timings.items()}


def to_markdown(results: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    before = results["random batches (before)"]["samples_per_second"]
    lines = [
        START,
        f"{platform.processor() or platform.machine()}, {next(iter(results.values()))['threads']} torch threads, "
        f"Python {platform.python_version()}; MiniLM-L6, batch {args.batch_size}, max {args.max_length} tokens, "
        f"fashion texts; {args.rounds} rounds x {args.steps} steps per setting, settings taking turns.",
        "",
        "| setting | training samples/s | vs before | padded tokens per sample | step p50 (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['samples_per_second']:.1f} | {r['samples_per_second'] / before:.2f}x | "
                     f"{r['padded_tokens_per_sample']:.1f} | {r['step_ms_median']:.0f} |")
    lines += ["", "Reproduce: `.venv/bin/python benchmarks/transformer_cpu_speed.py --update-doc docs/benchmarks.md` "
              "(after `benchmarks/gpu_finetune.py prepare`).", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO_ROOT / ".gpu", help="Folder from gpu_finetune.py prepare.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--update-doc", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import pandas as pd

    train = pd.read_parquet(args.data / "train.parquet").sample(frac=1.0, random_state=13)
    results = measure(train["text"].tolist(), train["label"].tolist(), rounds=args.rounds, steps=args.steps,
                      batch_size=args.batch_size, max_length=args.max_length)
    print(json.dumps(results, indent=2))  # noqa: T201 - a benchmark's report
    if args.update_doc:
        write_section(args.update_doc, to_markdown(results, args), start=START, end=END,
                      heading="Transformer training speed on CPU")


if __name__ == "__main__":
    main()
