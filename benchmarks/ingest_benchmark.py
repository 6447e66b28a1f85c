"""Streaming ingest vs a plain pandas load of the same Amazon-format JSONL.gz,
and the pandas engine vs the Spark engine (local mode) on it.

    python benchmarks/ingest_benchmark.py --rows 1000000 --update-doc docs/benchmarks.md
    python benchmarks/ingest_benchmark.py --rows 1000000 --engine both --spark-master "local[2]" \
        --update-doc docs/benchmarks.md

Each contender runs in a fresh Python process, so its peak RSS is its own; the
Spark contender also samples its JVM and Python workers (its child processes).
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

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.doc_section import write_section  # noqa: E402
from benchmarks.make_catalogue import DEFAULT_SOURCE, load_rows, write_repeated  # noqa: E402

START, END = "<!-- ingest-benchmark:start -->", "<!-- ingest-benchmark:end -->"
SPARK_START, SPARK_END = "<!-- spark-ingest-benchmark:start -->", "<!-- spark-ingest-benchmark:end -->"

# Runs inside the child: the workload, then its own wall time and peak RSS as JSON.
CHILD = """
import json, resource, sys, time
started = time.perf_counter()
{body}
print(json.dumps({{"seconds": time.perf_counter() - started, "rows": rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  **globals().get("extra", {{}})}}))
"""

PANDAS_BODY = """
import pandas as pd
frame = pd.read_json(sys.argv[1], lines=True, compression="gzip")
rows = len(frame)
"""

PRODUCTCAT_BODY = """
from ml.ingest import ingest
from ml.params import load_params
from ml.settings import get_settings
settings = get_settings()
summary = ingest(settings=settings, params=load_params(settings))
rows = summary["read"]
assert summary["reconciles"]
"""

# The same ingest call with engine=spark; the session is started first so its
# start-up is reported on its own, and a thread samples the JVM and the Python
# workers (children of this process) for their peak RSS.
SPARK_BODY = """
from benchmarks.child_memory import ChildMemory
from ml.ingest import ingest
from ml.params import load_params
from ml.settings import get_settings
from ml.spark_session import spark_session
settings = get_settings()
params = load_params(settings)
params.ingest.engine = "spark"
memory = ChildMemory().start()
session_started = time.perf_counter()
spark_session(settings)
startup = time.perf_counter() - session_started
summary = ingest(settings=settings, params=params)
peaks = memory.stop()
rows = summary["read"]
assert summary["reconciles"]
extra = {"startup_seconds": startup, **peaks}
"""


def _run_child(body: str, args: list[str], env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(body=body), *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(
    catalogue: Path, chunk_rows: int, workdir: Path, *, engine: str = "pandas", spark_master: str = "local[2]"
) -> dict[str, dict[str, float]]:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["ingest"].update(dataset="bench", chunk_rows=chunk_rows)
    params["datasets"]["bench"] = {"format": "amazon2018", "path": str(catalogue.resolve())}
    params_file = workdir / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    env = os.environ | {
        "PRODUCTCAT_PARAMS_FILE": str(params_file),
        "PRODUCTCAT_INTERIM_DIR": str(workdir / "interim"),
        "PRODUCTCAT_REPORTS_DIR": str(workdir / "reports"),
        "PRODUCTCAT_LOG_LEVEL": "WARNING",
    }
    results: dict[str, dict[str, float]] = {}
    if engine in ("pandas", "both"):
        results[PANDAS_ENGINE] = _run_child(PRODUCTCAT_BODY, [], env)
    if engine == "pandas":  # the whole-file load (~9 GiB at 1M rows) is the streaming section's reference only
        results["pandas.read_json(lines=True) (load only)"] = _run_child(PANDAS_BODY, [str(catalogue)], env)
    if engine in ("spark", "both"):
        results[f"productcat ingest --engine spark ({spark_master})"] = _run_child(
            SPARK_BODY, [], env | {"PRODUCTCAT_SPARK_MASTER": spark_master}
        )
    return results


PANDAS_ENGINE = "productcat ingest (stream, clean, validate, write Parquet)"


def to_markdown(results: dict[str, dict[str, float]], catalogue: Path, rows: int, chunk_rows: int) -> str:
    size_mb = catalogue.stat().st_size / 2**20
    lines = [
        START,
        f"Catalogue: {rows:,} rows, {size_mb:,.0f} MiB gzip (real Amazon-2018 rows with fresh ids); "
        f"`chunk_rows` = {chunk_rows:,}; {os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| reader | rows/s | wall time (s) | peak RSS (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | |")
        else:
            rate = r["rows"] / r["seconds"]
            lines.append(f"| {name} | {rate:,.0f} | {r['seconds']:,.1f} | {r['peak_rss_mb']:,.0f} |")
    lines += ["", "Reproduce: `make bench-ingest` (or the command at the top of `benchmarks/ingest_benchmark.py`).",
              END]
    return "\n".join(lines)


def spark_markdown(results: dict[str, dict[str, float]], catalogue: Path, rows: int, chunk_rows: int) -> str:
    size_mb = catalogue.stat().st_size / 2**20
    lines = [
        SPARK_START,
        f"Catalogue: {rows:,} rows, {size_mb:,.0f} MiB gzip (one file); `chunk_rows` = {chunk_rows:,}; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| engine | rows/s | wall time (s) | of which session start (s) | driver Python peak RSS (MiB) "
        "| JVM peak RSS (MiB) | Python workers peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if name.startswith("pandas.read_json"):
            continue
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | |")
            continue
        spark = "startup_seconds" in r
        cells = [
            f"{r['rows'] / r['seconds']:,.0f}", f"{r['seconds']:,.1f}",
            f"{r['startup_seconds']:,.1f}" if spark else "-", f"{r['peak_rss_mb']:,.0f}",
            f"{r['jvm_peak_rss_mb']:,.0f}" if spark else "-", f"{r['workers_peak_rss_mb']:,.0f}" if spark else "-",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Reproduce: the `--engine both` command at the top of `benchmarks/ingest_benchmark.py`.", SPARK_END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=20_000)
    parser.add_argument("--catalogue", type=Path, default=None, help="Reuse this file instead of building one.")
    parser.add_argument("--update-doc", type=Path, default=None, help="Rewrite the results section of this file.")
    parser.add_argument(
        "--engine", choices=("pandas", "spark", "both"), default="pandas",
        help="pandas: the streaming ingest vs a pandas load; spark: the Spark engine; both: the two engines.",
    )
    parser.add_argument("--spark-master", default="local[2]", help="PRODUCTCAT_SPARK_MASTER of the Spark run.")
    args = parser.parse_args()
    out_dir = REPO_ROOT / "benchmarks" / "out"
    catalogue = args.catalogue or out_dir / f"amazon_{args.rows}.jsonl.gz"
    if not catalogue.exists():
        write_repeated(load_rows(REPO_ROOT / DEFAULT_SOURCE), catalogue, args.rows)
    with tempfile.TemporaryDirectory() as workdir:
        results = run(catalogue, args.chunk_rows, Path(workdir), engine=args.engine, spark_master=args.spark_master)
    print(json.dumps(results, indent=2))
    if args.engine == "pandas":
        section = to_markdown(results, catalogue, args.rows, args.chunk_rows)
        print(section)
        if args.update_doc:
            write_section(args.update_doc, section, start=START, end=END,
                          heading="Streaming ingest of a 1M-row Amazon-format catalogue")
    if args.engine in ("spark", "both"):
        section = spark_markdown(results, catalogue, args.rows, args.chunk_rows)
        print(section)
        if args.update_doc:
            write_section(args.update_doc, section, start=SPARK_START, end=SPARK_END, heading="Ingest on Spark")


if __name__ == "__main__":
    main()
