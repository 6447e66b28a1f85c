"""Which data a model was trained on: the DVC hash of the split (when the split
is versioned in DVC) and a content hash of the split files (always); and the DVC
pull / commit + push that the retraining DAG runs around ingest and split.

`dvc.lock` is the pipeline's own state, rewritten by every run, so it is not
tracked by git (and DVC runs with `core.no_scm`, so it never stages anything):
a run leaves the checkout as it found it and records its true commit. The data
version lives where the model does: the training run's tags (`data_dvc_md5`,
`data_content_md5`) and its `data/dvc.lock` artifact, from which
`productcat pull-data --version N` restores that data out of the DVC remote."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ml.settings import MLSettings
from ml.split import SPLITS, SplitOutputs

log = logging.getLogger(__name__)


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


# ---- DVC: restore and record the data a run uses ----------------------------------------------

DATA_STAGES = ("ingest", "split")  # the dvc.yaml stages whose outputs are the training data
LOCK_ARTIFACT = "data/dvc.lock"  # where a training run keeps the dvc.lock of its data


def is_dvc_project(settings: MLSettings) -> bool:
    root = settings.resolve(Path("."))
    return (root / "dvc.yaml").is_file() and (root / ".dvc").is_dir()


def run_dvc(settings: MLSettings, *args: str) -> str:
    """Run the `dvc` installed beside this interpreter in the project root; its output, or
    RuntimeError carrying that output."""
    executable = Path(sys.executable).parent / "dvc"
    command = [str(executable) if executable.exists() else "dvc", *args]
    done = subprocess.run(command, cwd=settings.resolve(Path(".")), capture_output=True, text=True,
                          env=os.environ | {"DVC_NO_ANALYTICS": "1"})
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed ({done.returncode}): {output}")
    return output


def _uses_dvc_outputs(settings: MLSettings) -> bool:
    """True when this run writes where dvc.yaml's ingest/split outputs live."""
    return all(
        settings.resolve(getattr(settings, name)) == settings.resolve(MLSettings.model_fields[name].default)
        for name in ("interim_dir", "processed_dir")
    )


def pull_data(settings: MLSettings) -> dict[str, Any]:
    """Restore the ingest/split outputs that dvc.lock records from the DVC remote, so a run on a
    fresh worker starts from the last versioned data. Outputs already in the workspace are left
    alone (ingest rewrites them anyway, and DVC would refuse to overwrite uncached files);
    versions never pushed are skipped."""
    if not is_dvc_project(settings):
        return {"pulled": False, "why": "not a DVC project (no dvc.yaml / .dvc)"}
    if not _uses_dvc_outputs(settings):
        return {"pulled": False, "why": "the data folders are not dvc.yaml's outputs"}
    if not settings.resolve(Path("dvc.lock")).exists():
        return {"pulled": False, "why": "no data version recorded yet (the first run's version_data writes dvc.lock)"}
    present = [name for name in ("interim_dir", "processed_dir") if settings.resolve(getattr(settings, name)).exists()]
    if present:
        return {"pulled": False, "why": f"already in the workspace: {', '.join(present)}"}
    output = run_dvc(settings, "pull", "--allow-missing", *DATA_STAGES)
    log.info("dvc pull: %s", output.splitlines()[-1] if output else "nothing to pull")
    return {"pulled": True, "output": output[-2000:]}


def version_data(settings: MLSettings, *, why_not: str | None = None) -> dict[str, Any]:
    """Record this run's ingest + split outputs in dvc.lock and the DVC cache, then push them
    to the remote: the model trained next names a data version anyone can `dvc pull`.

    ``why_not`` is the caller's reason the outputs do not match params.yaml (a dataset override):
    dvc.lock would then describe data that params.yaml does not produce, so nothing is committed.
    Either way the content hash of the split is returned."""
    result: dict[str, Any] = {"data_content_md5": content_hash(settings), "versioned": False}
    if why_not is None and not is_dvc_project(settings):
        why_not = "not a DVC project (no dvc.yaml / .dvc)"
    if why_not is None and not _uses_dvc_outputs(settings):
        why_not = "the data folders are not dvc.yaml's outputs"
    if why_not is not None:
        log.info("data not versioned in DVC: %s", why_not)
        return result | {"why": why_not}
    run_dvc(settings, "commit", "--force", *DATA_STAGES)
    pushed = run_dvc(settings, "push", *DATA_STAGES)
    log.info("dvc push: %s", pushed.splitlines()[-1] if pushed else "done")
    return result | {"versioned": True, "data_dvc_md5": dvc_split_hash(settings), "push": pushed[-500:]}


def restore_data_version(settings: MLSettings, *, version: str) -> dict[str, Any]:
    """Put back the ingest/split outputs a registered model version was trained on: its run's
    dvc.lock becomes the project's, then `dvc pull --force` fetches that data from the remote."""
    import mlflow

    from ml.registry import model_version, registry_client

    if not is_dvc_project(settings):
        raise RuntimeError("not a DVC project (no dvc.yaml / .dvc)")
    client = registry_client(settings)
    target = model_version(client, settings, version)
    try:
        lock = mlflow.artifacts.download_artifacts(run_id=target.run_id, artifact_path=LOCK_ARTIFACT,
                                                   tracking_uri=settings.tracking_uri)
    except Exception as exc:  # MLflow raises several types for a missing artifact
        raise RuntimeError(f"v{target.version}'s run has no {LOCK_ARTIFACT}: its data was not versioned in DVC "
                           f"(data_content_md5 {target.tags.get('data_content_md5', 'unknown')})") from exc
    settings.resolve(Path("dvc.lock")).write_bytes(Path(lock).read_bytes())
    output = run_dvc(settings, "pull", "--force", *DATA_STAGES)
    return {"pulled": True, "version": str(target.version), "data_dvc_md5": dvc_split_hash(settings),
            "output": output[-2000:]}
