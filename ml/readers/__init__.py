"""Catalogue readers: each turns one source format into chunks of RawRecord."""

from __future__ import annotations

from ml.params import DatasetSpec
from ml.readers.amazon2018 import read_amazon2018
from ml.readers.base import RawRecord, RecordChunks
from ml.readers.rakuten import read_rakuten
from ml.readers.tabular import read_tabular
from ml.settings import MLSettings

__all__ = ["RawRecord", "RecordChunks", "open_reader"]


def open_reader(spec: DatasetSpec, settings: MLSettings, chunk_rows: int) -> RecordChunks:
    path = spec.resolved_path(settings)
    if not path.exists():
        raise FileNotFoundError(f"catalogue file not found: {path}")
    if spec.format == "amazon2018":
        return read_amazon2018(path, chunk_rows)
    if spec.format == "rakuten":
        if spec.labels_path is None:
            raise ValueError("a rakuten dataset needs `labels_path` in params.yaml")
        return read_rakuten(path, spec.resolved_path(settings, spec.labels_path), chunk_rows)
    return read_tabular(path, spec, chunk_rows)
