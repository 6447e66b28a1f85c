"""`score_catalogue(engine="spark")` answers exactly as the pandas engine: the same rows,
labels, probabilities and top labels, and the same counts of unreadable rows by reason."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from tests.api_support import build_registry
from tests.conftest import SAMPLE_DIR

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMING = {"seconds", "rows_per_second", "peak_rss_mb"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    from ml.params import load_params

    settings, versions = build_registry(tmp_path_factory.mktemp("spark-score"), sizes=(300,))
    return settings, load_params(settings), versions[0]


def _csv_with_unreadable_rows(path: Path) -> Path:
    """40 real fashion products with one row of each unreadable kind among them."""
    with gzip.open(SAMPLE_DIR / "fashion_styles.csv.gz", "rt", encoding="utf-8") as handle:
        lines = [next(handle) for _ in range(41)]
    bad = ["90001,,Men,Apparel,Topwear,Shirts,Blue,Fall,2011.0,Casual\n",  # missing_text
           ",Blue Shirt,Men,Apparel,Topwear,Shirts,Blue,Fall,2011.0,Casual\n",  # missing_id
           "90002,Red Shirt,Men,Apparel,Topwear,Shirts,Red,Fall,2011.0,Casual,extra,fields\n"]  # bad_row
    path.write_text(lines[0] + "".join(lines[1:15] + bad + lines[15:]), encoding="utf-8")
    return path


def _score_both(registry, spark, tmp_path: Path, **where: Any) -> tuple[dict, dict, Any, Any]:
    import pyarrow.parquet as pq

    from ml.score import score_catalogue

    settings, params, _ = registry
    summaries, tables = {}, {}
    for engine in ("pandas", "spark"):
        output = tmp_path / f"{engine}.parquet"
        summaries[engine] = score_catalogue(settings=settings, params=params, output=output, chunk_rows=16,
                                            top_k=3, engine=engine, spark=spark, **where)
        tables[engine] = pq.read_table(output)
    return summaries["pandas"], summaries["spark"], tables["pandas"], tables["spark"]


@pytest.mark.parametrize("where", [
    {"dataset": "amazon2018-sample"},
    {"dataset": "fashion-sample", "source": "csv"},
], ids=["amazon2018-jsonl", "csv-with-unreadable-rows"])
def test_spark_engine_scores_like_the_pandas_engine(registry, spark, tmp_path, where):
    import numpy as np

    from ml.score import SCORE_SCHEMA

    if where.get("source") == "csv":
        where = {**where, "source": _csv_with_unreadable_rows(tmp_path / "catalogue.csv")}
    by_pandas, by_spark, pandas_rows, spark_rows = _score_both(registry, spark, tmp_path, **where)

    assert pandas_rows.schema == spark_rows.schema == SCORE_SCHEMA
    assert by_spark["engine"] == "spark" and by_pandas["engine"] == "pandas"
    same = TIMING | {"engine", "output"}
    assert {k: v for k, v in by_spark.items() if k not in same} == {k: v for k, v in by_pandas.items() if k not in same}
    assert by_spark["reconciles"] and by_spark["scored"] == spark_rows.num_rows > 0
    if "source" in where:
        assert by_spark["unreadable_reasons"] == {"missing_text": 1, "missing_id": 1, "bad_row": 1}

    # Spark's rows come in partition order: compare product by product.
    left = pandas_rows.to_pandas().sort_values(["id", "title"], ignore_index=True)
    right = spark_rows.to_pandas().sort_values(["id", "title"], ignore_index=True)
    for column in ("id", "title", "label", "model_name", "model_version"):
        assert left[column].tolist() == right[column].tolist(), column
    np.testing.assert_allclose(right["probability"], left["probability"], rtol=0, atol=1e-9)
    assert [list(v) for v in left["top_labels"]] == [list(v) for v in right["top_labels"]]
    assert [list(v) for v in left["label_path"]] == [list(v) for v in right["label_path"]]
    np.testing.assert_allclose(np.vstack(right["top_probabilities"]), np.vstack(left["top_probabilities"]),
                               rtol=0, atol=1e-9)
    _, _, version = registry
    assert set(right["model_version"]) == {version} and right["scored_at"].notna().all()
    assert left["scored_at"].notna().all()


def test_spark_engine_scores_a_named_version_and_cleans_up(registry, spark, tmp_path):
    from ml.score import score_catalogue

    settings, params, version = registry
    output = tmp_path / "named.parquet"
    summary = score_catalogue(settings=settings, params=params, output=output, dataset="rakuten-sample",
                              engine="spark", version=version, spark=spark)
    assert summary["model_version"] == version and summary["scored"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.parquet", "named.summary.json"]
    with pytest.raises(LookupError, match="no version 999"):
        score_catalogue(settings=settings, params=params, output=output, engine="spark", version="999", spark=spark)


def test_score_command_refuses_an_unknown_engine_and_two_model_choices(tmp_path):
    from typer.testing import CliRunner

    from productcat.cli import app

    output = str(tmp_path / "out.parquet")
    result = CliRunner().invoke(app, ["score", "--output", output, "--engine", "dask"])
    assert result.exit_code != 0 and "engine must be one of pandas, spark" in result.output
    result = CliRunner().invoke(app, ["score", "--output", output, "--version", "1", "--alias", "champion"])
    assert result.exit_code != 0 and "not both" in result.output
    assert not (tmp_path / "out.parquet").exists()
