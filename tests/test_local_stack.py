"""The local stack's commands and environment (infra/scripts/local_stack.py): nothing it starts
listens beyond 127.0.0.1, and the demo's read routes are open on purpose."""

from __future__ import annotations

import importlib.util
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import psutil
import pytest

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "infra" / "scripts" / "local_stack.py"


@pytest.fixture
def local_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    monkeypatch.setenv("PRODUCTCAT_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("PRODUCTCAT_API_OPEN_READ_ROUTES", raising=False)
    spec = importlib.util.spec_from_file_location("local_stack", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "local_stack", module)  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def airflow_invocations(command: list[str]) -> list[list[str]]:
    """Each `airflow ...` the shell line runs, as argv without the binary."""
    assert command[:2] == ["/bin/sh", "-c"], command
    words = shlex.split(command[2].replace("&&", " ; ").replace("&", " ; ").replace("{", " ").replace("}", " "))
    runs, current = [], None
    for word in words:
        if word.endswith("/airflow"):
            current = []
            runs.append(current)
        elif word in {";", "wait"}:
            current = None
        elif current is not None:
            current.append(word)
    return runs


def test_airflow_runs_every_component_with_the_log_servers_off(local_stack: ModuleType) -> None:
    airflow = local_stack.services()["airflow"]
    runs = airflow_invocations(airflow.command)
    assert runs[0] == ["db", "migrate"]
    assert sorted(run[0] for run in runs[1:]) == ["api-server", "dag-processor", "scheduler", "triggerer"]
    for run in runs[1:]:  # the two that would start a log server on every interface
        assert ("--skip-serve-logs" in run) == (run[0] in {"scheduler", "triggerer"}), run
    assert airflow.env["AIRFLOW__API__HOST"] == "127.0.0.1"
    from airflow.cli.cli_parser import get_parser  # every argv is one the installed Airflow accepts

    parser = get_parser()
    for run in runs:
        parsed = parser.parse_args(run)
        assert getattr(parsed, "skip_serve_logs", False) == ("--skip-serve-logs" in run)


def test_the_demo_api_opens_read_routes_unless_told_otherwise(local_stack: ModuleType,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert local_stack.services()["api"].env["PRODUCTCAT_API_OPEN_READ_ROUTES"] == "true"
    monkeypatch.setenv("PRODUCTCAT_API_OPEN_READ_ROUTES", "false")
    assert local_stack.services()["api"].env["PRODUCTCAT_API_OPEN_READ_ROUTES"] == "false"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.e2e
def test_started_airflow_listens_on_loopback_only(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRODUCTCAT_", "AIRFLOW"))} | {
        "PRODUCTCAT_RUN_DIR": str(tmp_path / "run"), "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW_PORT": str(_free_port()), "PRODUCTCAT_STACK_TIMEOUT": "420",
    }

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=600)

    started = script("up", "airflow")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        leader = int((tmp_path / "run" / "airflow.pid").read_text())
        time.sleep(10)  # the scheduler and triggerer are up well after the api-server answers
        group = [p for p in psutil.process_iter() if _in_group(p, leader)]
        listening = {(c.laddr.ip, c.laddr.port) for p in group for c in _connections(p) if c.status == "LISTEN"}
        assert listening, "the api-server should listen"
        assert all(ip in {"127.0.0.1", "::1"} for ip, _ in listening), listening
        names = " ".join(" ".join(_cmdline(p)) for p in group)
        assert "scheduler" in names and "triggerer" in names
    finally:
        stopped = script("down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def _in_group(process: psutil.Process, leader: int) -> bool:
    try:
        return os.getpgid(process.pid) == leader
    except (ProcessLookupError, psutil.Error):
        return False


def _connections(process: psutil.Process) -> list[psutil._common.pconn]:
    try:
        return process.net_connections(kind="inet")
    except psutil.Error:
        return []


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []
