from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from ml.params import Params, load_params
from ml.settings import MLSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO_ROOT / "data" / "sample"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def settings(tmp_path: Path) -> MLSettings:
    """Repo params and bundled sample, with every output in a temporary folder."""
    return MLSettings(
        project_root=REPO_ROOT,
        interim_dir=tmp_path / "interim",
        processed_dir=tmp_path / "processed",
        reports_dir=tmp_path / "reports",
    )


@pytest.fixture
def params(settings: MLSettings) -> Params:
    return load_params(settings)


def write_jsonl_gz(path: Path, rows: Iterable[dict[str, Any] | str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def read_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture
def amazon_rows() -> list[dict[str, Any]]:
    """The real Amazon-2018 rows bundled with the sample."""
    return read_jsonl_gz(SAMPLE_DIR / "amazon2018_meta.jsonl.gz")


@pytest.fixture
def with_dataset(params: Params) -> Callable[..., Params]:
    """Params with one extra dataset entry (name 'under-test'), selected for ingest."""

    def make(**spec: Any) -> Params:
        data = params.model_dump()
        data["datasets"]["under-test"] = spec
        data["ingest"]["dataset"] = "under-test"
        return Params.model_validate(data)

    return make
