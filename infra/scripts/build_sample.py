"""Rebuild data/sample/ from the full catalogues: a few thousand real rows per
source, every k-th row with the header kept, so a fresh clone can run the
pipeline with nothing beside it; and a few hundred real product photos of the
photo-bearing catalogues, matched to sample rows, as small tar archives named
like the full ones (member names, join table). Archives are byte-reproducible:
members sorted, fixed times and owners.

    python infra/scripts/build_sample.py --raw-data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import gzip
import io
import shutil
import tarfile
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


# Photos per catalogue: every k-th sample row (listing) that has one, up to this many rows.
FASHION_PHOTO_ROWS = 1000  # 60x80 JPEGs of ~1.4 KB: gzip saves the tar headers
MARKETPLACE_PHOTO_LISTINGS = 150  # all photos of each listing (several per listing): ~270 of 224x224
FLIPKART_PHOTO_ROWS = 100  # at most 320 px a side, ~18 KB each


def _every_kth(items: list[str], count: int) -> list[str]:
    step = max(1, len(items) // count)
    return items[::step][:count]


def _read_members(archive: Path, names: set[str]) -> dict[str, bytes]:
    """The wanted members' bytes, from one streaming pass over the archive."""
    found: dict[str, bytes] = {}
    with tarfile.open(archive, "r|*") as tar:
        for info in tar:
            if info.isfile() and info.name in names:
                handle = tar.extractfile(info)
                if handle is not None:
                    found[info.name] = handle.read()
    return found


def _write_tar(target: Path, members: dict[str, bytes]) -> None:
    """A reproducible tar (gzip when the name ends in .gz): same members -> same bytes."""
    with target.open("wb") as raw:
        stream = gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) if target.suffix == ".gz" else raw
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name in sorted(members):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(members[name]), 0, 0o644
                tar.addfile(info, io.BytesIO(members[name]))
        if stream is not raw:
            stream.close()


def _sample_ids(path: Path, column: str, lineterminator: str | None = None) -> list[str]:
    return pd.read_csv(path, dtype=str, keep_default_na=False, lineterminator=lineterminator)[column].tolist()


def build_photos(raw: Path, out: Path) -> None:
    """Photo archives for the fashion, marketplace and flipkart samples (rebuilt from their sample rows)."""
    # fashion: images/<id>.jpg
    archive = raw / "fashion-products/images.tar.gz"
    wanted = {f"images/{i}.jpg" for i in _sample_ids(out / "fashion_styles.csv.gz", "id")}
    present = _read_members(archive, wanted)
    chosen = _every_kth(sorted(present, key=lambda n: int(n[7:-4])), FASHION_PHOTO_ROWS)
    _write_tar(out / "fashion_images.tar.gz", {name: present[name] for name in chosen})
    # marketplace: images/<Images.id>.jpg, linked to listings by Images.csv product_id
    listings = _sample_ids(out / "marketplace_products.csv.gz", "id", "\n")
    table = pd.read_csv(raw / "facebook-marketplace/Images.csv.gz", dtype=str, keep_default_na=False)
    listed = set(table["product_id"])
    with_photos = [i for i in listings if i in listed]
    keep = set(_every_kth(with_photos, MARKETPLACE_PHOTO_LISTINGS))
    rows = table[table["product_id"].isin(keep)]
    rows.to_csv(out / "marketplace_images.csv.gz", index=False, compression={"method": "gzip", "mtime": 0})
    names = {f"images/{i}.jpg" for i in rows["id"]}
    _write_tar(out / "marketplace_images.tar", _read_members(raw / "facebook-marketplace/images.tar", names))
    # flipkart: images/<uniq_id>.jpg
    wanted = {f"images/{i}.jpg" for i in _sample_ids(out / "flipkart_products.csv.gz", "uniq_id")}
    present = _read_members(raw / "flipkart/images.tar", wanted)
    chosen = _every_kth(sorted(present), FLIPKART_PHOTO_ROWS)
    _write_tar(out / "flipkart_images.tar", {name: present[name] for name in chosen})


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
    build_photos(raw, out)
    for path in sorted(out.iterdir()):
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")
    with gzip.open(out / "fashion_styles.csv.gz", "rt") as handle:
        print("fashion header:", handle.readline().strip())


if __name__ == "__main__":
    main()
