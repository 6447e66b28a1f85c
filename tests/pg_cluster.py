"""A throwaway Postgres cluster a test starts itself (initdb in a temporary folder, its own port),
so the test may freeze it (SIGSTOP) without touching the shared server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.api_support import wait_for


def _binaries() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name (field 2) may hold spaces: the parent pid is the 2nd field after ')'.
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


@dataclass
class Cluster:
    url: str
    postmaster: int

    def freeze(self) -> None:
        """Stop the postmaster, then every backend (each is its own process group leader)."""
        os.kill(self.postmaster, signal.SIGSTOP)  # first: no new backend can be forked meanwhile
        for child in _children(self.postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGSTOP)

    def thaw(self) -> None:
        for child in _children(self.postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGCONT)
        os.kill(self.postmaster, signal.SIGCONT)


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """initdb + postgres on a free port (as user postgres when run as root: initdb refuses root)."""
    binaries = _binaries()
    if binaries is None:
        pytest.skip("no Postgres server binaries (initdb) on this machine")
    # Not under pytest's tmp_path: that is private to root, and the cluster runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="productcat-pg-"))
    owner: dict[str, str] = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
    if owner:
        shutil.chown(root, **owner)
    data, port = root / "data", _free_port()
    subprocess.run([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], cwd=root, check=True, capture_output=True, **owner)  # type: ignore[call-overload]
    with (root / "server.log").open("w") as server_log:
        server = subprocess.Popen(
            [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            cwd=root, stdout=server_log, stderr=subprocess.STDOUT, **owner)  # type: ignore[call-overload]
    cluster = Cluster(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres", server.pid)
    try:
        wait_for(lambda: _answers(cluster.url), timeout=30, what="the throwaway Postgres to start")
        yield cluster
    finally:
        cluster.thaw()
        server.send_signal(signal.SIGQUIT)  # immediate shutdown: the cluster is thrown away
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(root, ignore_errors=True)


def _answers(url: str) -> bool:
    engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()
