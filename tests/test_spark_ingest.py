"""The Spark ingest engine gives the pandas engine's outputs, row for row, on real samples."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from ml.ingest import IngestOutputs, ingest
from ml.params import Params
from ml.settings import MLSettings
from tests.conftest import REPO_ROOT, write_jsonl_gz

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMING_FIELDS = {"seconds", "rows_per_second", "peak_rss_mb", "outputs"}


def _run(root: Path, params: Params, dataset: str, engine: str) -> tuple[dict[str, Any], list[dict], list[str]]:
    settings = MLSettings(
        project_root=REPO_ROOT, interim_dir=root / engine / "interim", reports_dir=root / engine / "reports",
        spark_master="local[2]", spark_shuffle_partitions=2,
    )
    run_params = params.model_copy(deep=True)
    run_params.ingest.engine = engine
    summary = ingest(settings=settings, params=run_params, dataset=dataset)
    out = IngestOutputs.for_settings(settings)
    assert json.loads(out.summary.read_text()) == summary
    table = pq.read_table(out.products)
    return summary, table.to_pylist(), out.quarantine.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("dataset", ["amazon2018-sample", "flipkart-sample"])
def test_spark_engine_matches_pandas(spark: Any, tmp_path: Path, params: Params, dataset: str) -> None:
    pandas_summary, pandas_rows, pandas_bad = _run(tmp_path, params, dataset, "pandas")
    spark_summary, spark_rows, spark_bad = _run(tmp_path, params, dataset, "spark")

    assert pandas_summary["read"] > 0 and pandas_summary["kept"] > 0
    assert {k: v for k, v in spark_summary.items() if k not in TIMING_FIELDS} == {
        k: v for k, v in pandas_summary.items() if k not in TIMING_FIELDS
    }
    assert spark_rows == pandas_rows  # same rows, same values, same (source) order
    assert spark_bad == pandas_bad
    assert pq.read_schema(tmp_path / "spark" / "interim" / "products.parquet") == pq.read_schema(
        tmp_path / "pandas" / "interim" / "products.parquet"
    )
    assert not list((tmp_path / "spark" / "interim").glob(".spark-ingest-*"))  # scratch removed


@pytest.mark.parametrize("compressed", [True, False], ids=["gz-one-split", "plain-many-splits"])
def test_spark_engine_quarantines_like_pandas(
    spark: Any, tmp_path: Path, with_dataset: Any, amazon_rows: list[dict[str, Any]], compressed: bool
) -> None:
    """Malformed lines, blank lines, wrong types and missing fields: same reasons, same row numbers,
    whether the file is one split (gzip) or many (plain text, numbered across splits)."""
    good = amazon_rows[:40]
    hostile: list[dict[str, Any] | str] = [
        *good[:10], "{not json", "", "[1, 2]", {"asin": "B0", "title": 7}, {"title": "no id"},
        {**good[10], "price": "call us"}, {**good[11], "title": "x" * 600}, *good[12:],
    ]
    source = write_jsonl_gz(tmp_path / "hostile.jsonl.gz", hostile)
    if not compressed:
        source = tmp_path / "hostile.jsonl"
        source.write_bytes(gzip.decompress((tmp_path / "hostile.jsonl.gz").read_bytes()))
    params = with_dataset(format="amazon2018", path=str(source))

    pandas_summary, pandas_rows, pandas_bad = _run(tmp_path, params, "under-test", "pandas")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "16k" if not compressed else "128m")
    try:
        splits = spark.read.text(str(source)).rdd.getNumPartitions()
        assert splits == 1 if compressed else splits > 1
        spark_summary, spark_rows, spark_bad = _run(tmp_path, params, "under-test", "spark")
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")

    assert pandas_summary["quarantined"] >= 4 and pandas_summary["unparsed_prices"] >= 1
    assert spark_summary["quarantine_reasons"] == pandas_summary["quarantine_reasons"]
    assert spark_summary["unparsed_prices"] == pandas_summary["unparsed_prices"]
    assert (spark_summary["read"], spark_summary["kept"]) == (pandas_summary["read"], pandas_summary["kept"])
    assert spark_rows == pandas_rows
    assert spark_bad == pandas_bad
