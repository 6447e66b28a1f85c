"""Which data a model was trained on: the DVC hash of the split (when the split
came from `dvc repro`) and a content hash of the split files (always)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from ml.settings import MLSettings
from ml.split import SPLITS, SplitOutputs


def content_hash(settings: MLSettings) -> str:
    digest = hashlib.md5()
    for name in SPLITS:
        path = SplitOutputs.for_settings(settings).split_file(name)
        digest.update(hashlib.md5(path.read_bytes()).hexdigest().encode() if path.exists() else b"-")
    return digest.hexdigest()


def dvc_split_hash(settings: MLSettings) -> str | None:
    """md5 that dvc.lock records for the split stage's output folder, if that folder is the one in use."""
    lock = settings.resolve(Path("dvc.lock"))
    if not lock.exists():
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    processed = settings.resolve(settings.processed_dir)
    for out in stages.get("split", {}).get("outs", []):
        if settings.resolve(Path(out["path"])) == processed:
            return out.get("md5")
    return None


def data_version(settings: MLSettings) -> dict[str, str]:
    version = {"data_content_md5": content_hash(settings)}
    if (dvc := dvc_split_hash(settings)) is not None:
        version["data_dvc_md5"] = dvc
    return version
