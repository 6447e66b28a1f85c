"""`dvc repro` runs ingest + split; a second repro does nothing; push/pull work offline."""

import shutil
from pathlib import Path

import pytest

from tests.conftest import make_dvc_project, run_dvc


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_dvc_project(tmp_path / "project", tmp_path / "store")


@pytest.mark.integration
@pytest.mark.slow
def test_repro_twice_then_push_and_pull(project: Path):
    first = run_dvc(project, "repro")
    for stage in ("ingest", "split", "train", "evaluate"):
        assert f"Running stage '{stage}'" in first
    second = run_dvc(project, "repro")
    assert "Running stage" not in second
    assert "up to date" in second
    run_dvc(project, "push")
    test_split = project / "data" / "processed" / "test.parquet"
    expected = test_split.read_bytes()
    shutil.rmtree(project / "data" / "processed")
    shutil.rmtree(project / "data" / "interim")
    shutil.rmtree(project / ".dvc" / "cache")
    run_dvc(project, "pull")
    assert test_split.read_bytes() == expected
    assert (project / "data" / "interim" / "products.parquet").exists()
    assert len(list((project / "data" / "interim" / "images" / "fashion-sample").glob("*.jpg"))) == 1000  # photos too
    assert (project / "reports" / "evaluation.json").exists() and (project / "mlflow.db").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_pull_data_restores_missing_outputs_and_leaves_present_ones_alone(project: Path):
    from ml.data_version import pull_data
    from ml.settings import MLSettings

    run_dvc(project, "repro", "split")
    run_dvc(project, "push")
    settings = MLSettings(project_root=project, interim_dir=Path("data/interim"),
                          processed_dir=Path("data/processed"), reports_dir=Path("reports"))
    assert pull_data(settings)["pulled"] is False  # outputs present: DVC would refuse to overwrite them
    test_split = project / "data" / "processed" / "test.parquet"
    expected = test_split.read_bytes()
    shutil.rmtree(project / "data" / "processed")
    shutil.rmtree(project / "data" / "interim")
    assert pull_data(settings)["pulled"] is True
    assert test_split.read_bytes() == expected


@pytest.mark.integration
@pytest.mark.slow
def test_versioning_data_leaves_the_git_checkout_clean(project: Path):
    """dvc.lock is pipeline state: with the repo's `.gitignore` and DVC config, `version_data` (the DAG's
    dvc commit + push) changes no tracked file, so the next run records a clean commit."""
    import subprocess

    from ml.data_version import version_data
    from ml.registry import git_commit
    from ml.settings import MLSettings
    from tests.conftest import REPO_ROOT

    assert "no_scm = true" in (REPO_ROOT / ".dvc" / "config").read_text()
    assert "/dvc.lock" in (REPO_ROOT / ".gitignore").read_text().splitlines()
    shutil.copy(REPO_ROOT / ".gitignore", project / ".gitignore")
    run_dvc(project, "config", "core.no_scm", "true")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=project, check=True,
                              capture_output=True, text=True).stdout

    git("add", "-A")
    git("commit", "-q", "-m", "pipeline")
    run_dvc(project, "repro", "split")
    settings = MLSettings(project_root=project, interim_dir=Path("data/interim"),
                          processed_dir=Path("data/processed"), reports_dir=Path("reports"))
    result = version_data(settings)
    assert result["versioned"] and result["data_dvc_md5"]
    assert (project / "dvc.lock").is_file()
    assert git("status", "--porcelain") == ""
    assert not git_commit(settings).endswith("-dirty")
