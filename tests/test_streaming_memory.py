"""Ingest memory is bounded by the chunk size, not by the file size."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from benchmarks.make_catalogue import write_repeated
from tests.conftest import REPO_ROOT


def _ingest_in_fresh_process(tmp_path, catalogue, tag):
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["ingest"].update(dataset="big", chunk_rows=2000)
    params["datasets"]["big"] = {"format": "amazon2018", "path": str(catalogue)}
    params_file = tmp_path / f"params-{tag}.yaml"
    params_file.write_text(yaml.safe_dump(params))
    env = os.environ | {
        "PRODUCTCAT_PARAMS_FILE": str(params_file),
        "PRODUCTCAT_INTERIM_DIR": str(tmp_path / tag / "interim"),
        "PRODUCTCAT_REPORTS_DIR": str(tmp_path / tag / "reports"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "productcat", "ingest", "--json"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_file_size(tmp_path, amazon_rows):
    small = write_repeated(amazon_rows, tmp_path / "small.jsonl.gz", 10_000)
    large = write_repeated(amazon_rows, tmp_path / "large.jsonl.gz", 60_000)
    small_run = _ingest_in_fresh_process(tmp_path, small, "small")
    large_run = _ingest_in_fresh_process(tmp_path, large, "large")
    assert large_run["read"] == 60_000 and large_run["reconciles"]
    # Six times the rows; the peak may move by allocator noise, not by the data.
    assert large_run["peak_rss_mb"] < small_run["peak_rss_mb"] + 40, (small_run, large_run)
