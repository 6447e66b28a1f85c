"""Batch scoring of an Amazon-format catalogue: the pandas engine vs the Spark engine (local mode).

    python benchmarks/score_benchmark.py --rows 1000000 --spark-master "local[2]" --update-doc docs/benchmarks.md

The model is a baseline (TF-IDF + linear) registered in a throwaway MLflow store, as the tests
build it; each engine runs in a fresh Python process, so its peak RSS is its own, and a thread
samples the child processes (Spark's JVM and Python workers) for theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.doc_section import write_section  # noqa: E402
from benchmarks.make_catalogue import DEFAULT_SOURCE, load_rows, write_repeated  # noqa: E402

START, END = "<!-- spark-score-benchmark:start -->", "<!-- spark-score-benchmark:end -->"

# Runs inside the child: one score_catalogue call; the summary plus the children's peak RSS as JSON.
CHILD = """
import json, sys, time
from pathlib import Path
from benchmarks.child_memory import ChildMemory
from ml.params import load_params
from ml.score import score_catalogue
from ml.settings import get_settings
engine, catalogue, output = sys.argv[1], sys.argv[2], Path(sys.argv[3])
settings = get_settings()
memory = ChildMemory().start()
started = time.perf_counter()
summary = score_catalogue(settings=settings, params=load_params(settings), source=catalogue,
                          dataset="amazon2018-sample", output=output, engine=engine)
wall = time.perf_counter() - started
peaks = memory.stop()
assert summary["reconciles"]
print(json.dumps({"wall_seconds": wall, **peaks, **summary}))
"""


def _registry_env(root: Path) -> dict[str, str]:
    from tests.api_support import build_registry

    settings, _ = build_registry(root, sizes=(300,))
    return {
        "PRODUCTCAT_INTERIM_DIR": str(settings.interim_dir),
        "PRODUCTCAT_PROCESSED_DIR": str(settings.processed_dir),
        "PRODUCTCAT_REPORTS_DIR": str(settings.reports_dir),
        "PRODUCTCAT_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "PRODUCTCAT_MLFLOW_ARTIFACT_ROOT": str(settings.mlflow_artifact_root),
        "PRODUCTCAT_LOG_LEVEL": "WARNING",
    }


def run(catalogue: Path, workdir: Path, *, engines: list[str], spark_master: str) -> dict[str, dict]:
    env = os.environ | _registry_env(workdir / "registry") | {"PRODUCTCAT_SPARK_MASTER": spark_master}
    results = {}
    for engine in engines:
        done = subprocess.run([sys.executable, "-c", CHILD, engine, str(catalogue), str(workdir / f"{engine}.parquet")],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            results[engine] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
        else:
            results[engine] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def to_markdown(results: dict[str, dict], catalogue: Path, rows: int, spark_master: str) -> str:
    size_mb = catalogue.stat().st_size / 2**20
    lines = [
        START,
        f"Catalogue: {rows:,} rows, {size_mb:,.0f} MiB gzip (real Amazon-2018 rows with fresh ids); baseline model; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; Spark master `{spark_master}`.",
        "",
        "| engine | rows/s | wall time (s) | driver Python peak RSS (MiB) | JVM peak RSS (MiB) "
        "| Python workers peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for engine, r in results.items():
        if "error" in r:
            lines.append(f"| {engine} | failed: {r['error'][:200]} | | | | |")
            continue
        spark = engine == "spark"
        lines.append(
            f"| `--engine {engine}` | {r['read'] / r['wall_seconds']:,.0f} | {r['wall_seconds']:,.1f} "
            f"| {r['peak_rss_mb']:,.0f} | {r['jvm_peak_rss_mb']:,.0f} | {r['workers_peak_rss_mb']:,.0f} |"
            if spark else
            f"| `--engine {engine}` | {r['read'] / r['wall_seconds']:,.0f} | {r['wall_seconds']:,.1f} "
            f"| {r['peak_rss_mb']:,.0f} | - | - |"
        )
    lines += ["", "Reproduce: the command at the top of `benchmarks/score_benchmark.py`.", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--catalogue", type=Path, default=None, help="Reuse this file instead of building one.")
    parser.add_argument("--engine", choices=("pandas", "spark", "both"), default="both")
    parser.add_argument("--spark-master", default="local[2]", help="PRODUCTCAT_SPARK_MASTER of the Spark run.")
    parser.add_argument("--update-doc", type=Path, default=None, help="Rewrite the results section of this file.")
    args = parser.parse_args()
    catalogue = args.catalogue or REPO_ROOT / "benchmarks" / "out" / f"amazon_{args.rows}.jsonl.gz"
    if not catalogue.exists():
        write_repeated(load_rows(REPO_ROOT / DEFAULT_SOURCE), catalogue, args.rows)
    engines = ["pandas", "spark"] if args.engine == "both" else [args.engine]
    with tempfile.TemporaryDirectory() as workdir:
        results = run(catalogue, Path(workdir), engines=engines, spark_master=args.spark_master)
    print(json.dumps(results, indent=2, default=str))
    section = to_markdown(results, catalogue, args.rows, args.spark_master)
    print(section)
    if args.update_doc:
        write_section(args.update_doc, section, start=START, end=END, heading="Batch scoring on Spark")


if __name__ == "__main__":
    main()
