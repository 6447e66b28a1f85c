"""Stage 2: dedupe the canonical products and deal them into train /
validation / test by a hash of the product id.

The split of a product depends on its id (and the frozen salt and fractions in
params.yaml) alone, never on the rest of the file: appending rows never moves
an existing product, and the test set stays the test set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ml.ingest import IngestOutputs
from ml.io import ParquetSink, append_jsonl, peak_rss_mb, replace_on_success, write_json
from ml.params import Params, SplitParams
from ml.schema import PRODUCT_ARROW_SCHEMA
from ml.settings import MLSettings
from ml.text import normalise_title

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "validation", "test")
DUPLICATES_FILE = "duplicates.jsonl"
SUMMARY_FILE = "split_summary.json"
_BUCKETS = 2**64


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def test_set_fingerprint(ids: Iterable[str]) -> str:
    """Order-independent fingerprint of a set of ids: equal fingerprints = same test set."""
    total = 0
    for product_id in ids:
        total = (total + _hash64(product_id)) % _BUCKETS
    return f"{total:016x}"


def assign_split(product_id: str, params: SplitParams) -> str:
    """Deterministic split of one product id."""
    share = _hash64(f"{params.salt}:{product_id}") / _BUCKETS
    if share < params.test_fraction:
        return "test"
    if share < params.test_fraction + params.validation_fraction:
        return "validation"
    return "train"


class Deduper:
    """Keeps the first row of each exact id and of each (normalised title, label).

    Holds 64-bit hashes of keys, not the keys, so memory per distinct product is small."""

    def __init__(self) -> None:
        self._ids: dict[int, str] = {}
        self._titles: dict[int, str] = {}

    def duplicate_of(self, product_id: str, title: str | None, label: str | None) -> tuple[str, str] | None:
        id_key = _hash64(product_id)
        if (first := self._ids.get(id_key)) is not None:
            return "duplicate_id", first
        norm = normalise_title(title)
        title_key = _hash64(f"{norm}\x1f{label}") if norm else None
        title_first = self._titles.get(title_key) if title_key is not None else None
        # Remember the id even when the row is dropped: a later row with the same
        # id is then a duplicate id (of the kept product), never a new product.
        self._ids[id_key] = title_first or product_id
        if title_first is not None:
            return "duplicate_title_label", title_first
        if title_key is not None:
            self._titles[title_key] = product_id
        return None


@dataclass(frozen=True, slots=True)
class SplitOutputs:
    folder: Path
    summary: Path

    def split_file(self, split: str) -> Path:
        return self.folder / f"{split}.parquet"

    @property
    def duplicates(self) -> Path:
        return self.folder / DUPLICATES_FILE

    @classmethod
    def for_settings(cls, settings: MLSettings) -> SplitOutputs:
        return cls(
            settings.resolve(settings.processed_dir),
            settings.resolve(settings.reports_dir) / SUMMARY_FILE,
        )


def ingested_from(settings: MLSettings) -> dict[str, Any]:
    """The dataset key and source file (path, SHA-256) of the ingest whose products are being split;
    empty when the ingest summary is missing (products made by hand)."""
    path = IngestOutputs.for_settings(settings).summary
    if not path.exists():
        return {}
    summary = json.loads(path.read_text())
    return {key: summary.get(key) for key in ("dataset", "source_path", "source_sha256")}


def split_source(settings: MLSettings) -> dict[str, Any]:
    """What the current split was made from (see ``ingested_from``), from its summary."""
    path = SplitOutputs.for_settings(settings).summary
    return json.loads(path.read_text()).get("ingest", {}) if path.exists() else {}


def read_split(settings: MLSettings, name: str) -> pd.DataFrame:
    path = SplitOutputs.for_settings(settings).split_file(name)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `productcat split` first")
    return pq.read_table(path).to_pandas()


def split(*, settings: MLSettings, params: Params) -> dict[str, Any]:
    """Dedupe ``data/interim/products.parquet`` and write one Parquet per split."""
    source = IngestOutputs.for_settings(settings).products
    if not source.exists():
        raise FileNotFoundError(f"{source} not found: run `productcat ingest` first")
    out = SplitOutputs.for_settings(settings)
    out.folder.mkdir(parents=True, exist_ok=True)
    # Outputs replace the previous ones only when the whole run succeeds, the summary last.
    targets = (*(out.split_file(s) for s in SPLITS), out.duplicates, out.summary)
    with replace_on_success(*targets) as temps:
        split_temps = dict(zip(SPLITS, temps, strict=False))
        summary = _dedupe_and_deal(pq.ParquetFile(source), params, split_temps, duplicates_path=temps[-2])
        summary["ingest"] = ingested_from(settings)  # training reads what the split saw from here
        write_json(temps[-1], summary)
    log.info(
        "read %d = kept %d + duplicates %d; train %d / validation %d / test %d",
        summary["read"], summary["kept"], summary["duplicates"],
        summary["rows"]["train"], summary["rows"]["validation"], summary["rows"]["test"],
    )
    return summary


def _dedupe_and_deal(
    parquet: pq.ParquetFile, params: Params, split_paths: dict[str, Path], *, duplicates_path: Path
) -> dict[str, Any]:
    dedupe = Deduper()
    class_counts: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
    duplicates: Counter[str] = Counter()
    title_splits: dict[int, set[str]] = defaultdict(set)
    test_ids: list[str] = []
    read = 0
    sinks = {s: ParquetSink(split_paths[s], PRODUCT_ARROW_SCHEMA) for s in SPLITS}
    try:
        with duplicates_path.open("w", encoding="utf-8") as dup_file, tqdm(
            total=parquet.metadata.num_rows, unit="rows", desc="split", leave=False
        ) as bar:
            for batch in parquet.iter_batches(batch_size=params.ingest.chunk_rows):
                rows = batch.to_pylist()
                read += len(rows)
                chosen: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
                dropped = []
                for row in rows:
                    dup = dedupe.duplicate_of(row["id"], row["title"], row["label"])
                    if dup is not None:
                        duplicates[dup[0]] += 1
                        dropped.append({"id": row["id"], "reason": dup[0], "kept_id": dup[1], "title": row["title"]})
                        continue
                    name = assign_split(row["id"], params.split)
                    chosen[name].append(row)
                    class_counts[name][row["label"]] += 1
                    if norm := normalise_title(row["title"]):
                        title_splits[_hash64(norm)].add(name)
                    if name == "test":
                        test_ids.append(row["id"])
                for name, split_rows in chosen.items():
                    sinks[name].write(pa.Table.from_pylist(split_rows, schema=PRODUCT_ARROW_SCHEMA))
                append_jsonl(dup_file, dropped)
                bar.update(len(rows))
    finally:
        for sink in sinks.values():
            sink.close()
    kept = {s: sinks[s].rows for s in SPLITS}
    summary = {
        "read": read,
        "kept": sum(kept.values()),
        "duplicates": sum(duplicates.values()),
        "duplicate_reasons": dict(duplicates),
        "reconciles": read == sum(kept.values()) + sum(duplicates.values()),
        "rows": kept,
        "fractions": {s: round(kept[s] / max(1, sum(kept.values())), 4) for s in SPLITS},
        "test_fingerprint": test_set_fingerprint(test_ids),
        # Same normalised title in two splits (variants with different labels): a leakage measure.
        "titles_in_several_splits": sum(1 for splits in title_splits.values() if len(splits) > 1),
        "classes": {s: len(class_counts[s]) for s in SPLITS},
        "classes_missing_from_train": sorted(
            (set(class_counts["test"]) | set(class_counts["validation"])) - set(class_counts["train"])
        ),
        "class_counts": {s: dict(class_counts[s].most_common()) for s in SPLITS},
        "peak_rss_mb": peak_rss_mb(),
    }
    return summary
