"""Build a large Amazon-2018-format catalogue by repeating real rows with fresh ids.

    python -m benchmarks.make_catalogue --rows 1000000 --out benchmarks/out/amazon_1m.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

DEFAULT_SOURCE = Path("data/sample/amazon2018_meta.jsonl.gz")
# The keys of the format as the platform receives it (amazon2018/FORMAT.md); the
# raw release also carries tech1/tech2 HTML tables that no field here reads.
FORMAT_KEYS = ("also_buy", "also_view", "asin", "brand", "category", "description",
               "feature", "image", "price", "title", "main_cat")


def load_rows(source: Path) -> list[dict[str, Any]]:
    """Real rows, kept to the format's keys."""
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [{key: row[key] for key in FORMAT_KEYS if key in row} for row in rows]


def write_repeated(rows: list[dict[str, Any]], out: Path, n_rows: int, compresslevel: int = 1) -> Path:
    """Write ``n_rows`` lines cycling through ``rows``; each copy gets a fresh, unique asin."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Pre-encode each row once with a placeholder id: the loop then only splices ids in.
    templates = [json.dumps({**row, "asin": "\x00"}).split('"\\u0000"') for row in rows]
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=compresslevel) as handle:
        for i in tqdm(range(n_rows), unit="rows", desc=f"writing {out.name}", leave=False):
            head, tail = templates[i % len(templates)]
            handle.write(f'{head}"R{i:09d}"{tail}\n')
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/amazon_1m.jsonl.gz"))
    args = parser.parse_args()
    write_repeated(load_rows(args.source), args.out, args.rows)
    print(args.out)


if __name__ == "__main__":
    main()
