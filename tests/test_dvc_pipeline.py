"""`dvc repro` runs ingest + split; a second repro does nothing; push/pull work offline."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent


def _dvc(project: Path, *args: str) -> str:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for name in ("INTERIM_DIR", "PROCESSED_DIR", "REPORTS_DIR", "PARAMS_FILE", "PROJECT_ROOT"):
        env.pop(f"PRODUCTCAT_{name}", None)
    done = subprocess.run([str(BIN / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the pipeline definition, its code and the sample, in a git repo of its own."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "ml", root / "ml", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "data" / "sample", root / "data" / "sample")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _dvc(root, "init", "-q")
    _dvc(root, "remote", "add", "-d", "local", str(tmp_path / "store"))
    return root


@pytest.mark.integration
@pytest.mark.slow
def test_repro_twice_then_push_and_pull(project: Path):
    first = _dvc(project, "repro")
    for stage in ("ingest", "split", "train", "evaluate"):
        assert f"Running stage '{stage}'" in first
    second = _dvc(project, "repro")
    assert "Running stage" not in second
    assert "up to date" in second
    _dvc(project, "push")
    test_split = project / "data" / "processed" / "test.parquet"
    expected = test_split.read_bytes()
    shutil.rmtree(project / "data" / "processed")
    shutil.rmtree(project / "data" / "interim")
    shutil.rmtree(project / ".dvc" / "cache")
    _dvc(project, "pull")
    assert test_split.read_bytes() == expected
    assert (project / "data" / "interim" / "products.parquet").exists()
    assert (project / "reports" / "evaluation.json").exists() and (project / "mlflow.db").exists()
