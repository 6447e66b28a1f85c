"""Rebuild data/sample/ from the full catalogues: a few thousand real rows per
source, every k-th row with the header kept, so a fresh clone can run the
pipeline with nothing beside it.

    python infra/scripts/build_sample.py --raw-data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import pandas as pd

# source file (relative to the raw data dir) -> (sample file, data rows kept)
CSV_SLICES: dict[str, tuple[str, int]] = {
    "fashion-products/styles.csv.gz": ("fashion_styles.csv.gz", 5000),
    "facebook-marketplace/Products.csv.gz": ("marketplace_products.csv.gz", 1500),
    "flipkart/flipkart_com-ecommerce_sample.csv.gz": ("flipkart_products.csv.gz", 1500),
    "amazon-in-2023/Amazon-Products.csv.gz": ("amazon_in_products.csv.gz", 1500),
}


def _copy_slice(source: Path, target: Path, rows: int, lineterminator: str | None) -> None:
    # Every k-th row, in file order, so a file sorted by category keeps all its classes.
    # Parsed and written back as CSV so quoted multi-line fields stay whole.
    frame = pd.read_csv(source, dtype=str, keep_default_na=False, lineterminator=lineterminator)
    step = max(1, len(frame) // rows)
    frame.iloc[::step].head(rows).to_csv(target, index=False, compression="gzip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw-data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("data/sample"))
    args = parser.parse_args()
    raw, out = args.raw_data_dir, args.out
    out.mkdir(parents=True, exist_ok=True)
    for relative, (name, rows) in CSV_SLICES.items():
        terminator = "\n" if "marketplace" in relative else None
        _copy_slice(raw / relative, out / name, rows, terminator)
    shutil.copyfile(raw / "amazon2018/amazon2018_meta_sample.jsonl.gz", out / "amazon2018_meta.jsonl.gz")
    shutil.copyfile(raw / "rakuten-sample/X_train_sample.csv", out / "rakuten_x.csv")
    texts = pd.read_csv(raw / "rakuten-sample/X_train_sample.csv", usecols=[0])
    labels = pd.read_csv(raw / "rakuten-sample/Y_train_labels.csv")
    kept = labels[labels.iloc[:, 0].isin(texts.iloc[:, 0])]
    kept.rename(columns={kept.columns[0]: ""}).to_csv(out / "rakuten_y.csv", index=False)  # as the original
    for path in sorted(out.iterdir()):
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")
    with gzip.open(out / "fashion_styles.csv.gz", "rt") as handle:
        print("fashion header:", handle.readline().strip())


if __name__ == "__main__":
    main()
