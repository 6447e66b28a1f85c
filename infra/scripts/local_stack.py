"""Start, check and stop the local stack that `make demo` runs: the MLflow UI, Airflow
(api-server, scheduler, dag-processor, triggerer on SQLite, as `airflow standalone` runs them)
and the prediction API, each in the background with a pid file and a log under the run folder.
Everything listens on 127.0.0.1 only.

    python infra/scripts/local_stack.py up [mlflow airflow api]   # start (all by default), wait until each answers
    python infra/scripts/local_stack.py status                    # exit 1 unless every started service answers
    python infra/scripts/local_stack.py down                      # stop what `up` started (by pid file)

Ports and folders come from the environment: MLFLOW_PORT (5000), AIRFLOW_PORT (8080),
API_PORT (8000), PRODUCTCAT_RUN_DIR (.run), AIRFLOW_HOME (<run dir>/airflow). The ML
settings (PRODUCTCAT_*) and DATABASE_URL pass through to every service unchanged, so
Airflow's tasks, the API and the MLflow UI all use the same store and request log.
The API serves /model, /metrics and /reports/drift without a key here
(PRODUCTCAT_API_OPEN_READ_ROUTES=true unless set otherwise), so the printed links work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = float(os.environ.get("PRODUCTCAT_STACK_TIMEOUT", "240"))
# Then SIGKILL what is left. Airflow's components exit cleanly in a few seconds on an idle machine;
# measured 16-28 s on 2 cores shared with test runs, so the grace leaves room for that.
STOP_GRACE_S = float(os.environ.get("PRODUCTCAT_STOP_GRACE", "30"))
PROGRESS_EVERY_S = 10
CURL_BODY = '{"title": "Turtle Check Men Navy Blue Shirt", "brand": "Turtle", "price": "$24.99"}'
# What `airflow standalone` starts, minus its log servers: Airflow 3.3 binds the scheduler's
# (8793) and the triggerer's (8794) to every interface, with no setting for the host. On one
# machine the api-server reads task logs straight from AIRFLOW_HOME/logs, so they are not needed.
AIRFLOW_COMPONENTS = (("api-server",), ("scheduler", "--skip-serve-logs"), ("dag-processor",),
                      ("triggerer", "--skip-serve-logs"))


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    health_path: str  # answers 2xx once the service is usable
    command: list[str]
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def run_dir() -> Path:
    path = Path(os.environ.get("PRODUCTCAT_RUN_DIR", ".run"))
    return (path if path.is_absolute() else REPO_ROOT / path).resolve()


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME") or run_dir() / "airflow").resolve()


def airflow_command() -> list[str]:
    """One process group: migrate the metadata database, then every component side by side."""
    airflow = shlex.quote(str(BIN / "airflow"))
    components = " & ".join(f"{airflow} {' '.join(args)}" for args in AIRFLOW_COMPONENTS)
    return ["/bin/sh", "-c", f"{airflow} db migrate && {{ {components} & wait; }}"]


def services() -> dict[str, Service]:
    sys.path.insert(0, str(REPO_ROOT))
    from ml.settings import MLSettings

    settings = MLSettings(project_root=Path(os.environ.get("PRODUCTCAT_PROJECT_ROOT", REPO_ROOT)))
    base = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                         "PRODUCTCAT_PROJECT_ROOT": str(settings.project_root)}
    mlflow_port, airflow_port, api_port, stream_port = (
        int(os.environ.get(k, d)) for k, d in
        (("MLFLOW_PORT", 5000), ("AIRFLOW_PORT", 8080), ("API_PORT", 8000), ("STREAM_METRICS_PORT", 9108)))
    airflow_env = base | {
        "AIRFLOW_HOME": str(airflow_home()),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # One task per core: each training task already uses every core it gets.
        "AIRFLOW__CORE__PARALLELISM": str(os.cpu_count() or 2),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(airflow_port),
        # Tasks report back to the api-server: it must be the port chosen above.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{airflow_port}/execution/",
    }
    return {
        "mlflow": Service("mlflow", mlflow_port, "/health", [
            str(BIN / "mlflow"), "ui", "--backend-store-uri", settings.tracking_uri,
            "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"], base),
        # SIGTERM to the whole group: each component shuts itself down on it (no standalone parent
        # to order them; the shell's background jobs would ignore a SIGINT).
        "airflow": Service("airflow", airflow_port, "/api/v2/monitor/health", airflow_command(), airflow_env),
        "api": Service("api", api_port, "/ready", [str(BIN / "productcat"), "serve", "--port", str(api_port)],
                       base | {"PRODUCTCAT_API_OPEN_READ_ROUTES": os.environ.get("PRODUCTCAT_API_OPEN_READ_ROUTES",
                                                                               "true")}),
        # Opt-in (`up stream`, `make stream-bg`): the consumer needs a broker; NATS runs on this machine.
        "stream": Service("stream", stream_port, "/health", [str(BIN / "productcat"), "stream", "run"],
                          base | {"PRODUCTCAT_STREAM_URL": os.environ.get("PRODUCTCAT_STREAM_URL",
                                                                          "nats://127.0.0.1:4222"),
                                  "PRODUCTCAT_STREAM_METRICS_PORT": str(stream_port)}),
    }


# What `up` starts when no service is named.
DEFAULT_SERVICES = ("mlflow", "airflow", "api")


def pid_file(service: Service) -> Path:
    return run_dir() / f"{service.name}.pid"


def running_pid(service: Service) -> int | None:
    try:
        pid = int(pid_file(service).read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def answers(service: Service) -> bool:
    try:
        with urllib.request.urlopen(service.url + service.health_path, timeout=3) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def check_ports(chosen: list[Service]) -> None:
    """Refuse before starting anything: a half-started stack is worse than none."""
    for service in chosen:
        if running_pid(service) is None and port_taken(service.port):
            raise SystemExit(f"{service.name}: port {service.port} is taken by another program; free it or set "
                             f"{service.name.upper()}_PORT")


def start(service: Service) -> None:
    if (pid := running_pid(service)) is not None:
        print(f"{service.name}: already running (pid {pid})")
        return
    if service.name == "airflow":
        airflow_home().mkdir(parents=True, exist_ok=True)
    log = (run_dir() / f"{service.name}.log").open("ab")
    # A session of its own: `down` stops the whole process group (Airflow is several processes).
    process = subprocess.Popen(service.command, cwd=REPO_ROOT, env=service.env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    pid_file(service).write_text(str(process.pid))
    print(f"{service.name}: started (pid {process.pid}, log {run_dir() / f'{service.name}.log'})")


def wait_until_answering(chosen: list[Service]) -> None:
    """Poll each service's health URL; say what is still awaited every PROGRESS_EVERY_S seconds
    (Airflow migrates its metadata database first: a minute or two on 2 cores)."""
    started = time.monotonic()
    deadline = started + START_TIMEOUT_S
    waiting = list(chosen)
    next_note = started + PROGRESS_EVERY_S
    while waiting and time.monotonic() < deadline:
        for service in list(waiting):
            if answers(service):
                waiting.remove(service)
                print(f"{service.name}: answers on {service.url} after {time.monotonic() - started:.0f} s", flush=True)
            elif running_pid(service) is None:
                tail = (run_dir() / f"{service.name}.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"{service.name} exited before answering; its log ends:\n{tail}")
        if waiting and time.monotonic() >= next_note:
            awaited = ", ".join(f"{s.name} ({s.url}{s.health_path})" for s in waiting)
            print(f"  waiting for {awaited}: {time.monotonic() - started:.0f} s of {START_TIMEOUT_S:.0f} s", flush=True)
            next_note += PROGRESS_EVERY_S
        time.sleep(1)
    if waiting:
        names = ", ".join(s.name for s in waiting)
        raise SystemExit(f"not answering after {START_TIMEOUT_S:.0f} s: {names} (logs in {run_dir()})")


def airflow_login() -> tuple[str, str] | None:
    generated = airflow_home() / "simple_auth_manager_passwords.json.generated"
    if not generated.exists():
        return None
    user, password = next(iter(json.loads(generated.read_text()).items()))
    return user, password


def show(chosen: list[Service]) -> None:
    print()
    for service in chosen:
        if service.name == "mlflow":
            print(f"  MLflow UI     {service.url}  (runs, metrics, registry: move the `champion` alias here)")
        elif service.name == "airflow":
            login = airflow_login()
            who = f"login {login[0]} / {login[1]}" if login else "login: see the airflow log"
            print(f"  Airflow UI    {service.url}  ({who}; unpause and trigger product_retrain)")
        elif service.name == "stream":
            broker = service.env["PRODUCTCAT_STREAM_URL"]
            print(f"  Stream        {broker}  (health and metrics at {service.url}/metrics)")
            print("                productcat stream publish --file <catalogue.csv>; productcat stream tail")
        else:
            print(f"  API           {service.url}/docs  (Swagger; drift reports at {service.url}/reports/drift)")
    if api := next((s for s in chosen if s.name == "api"), None):
        print("\n  Try:\n")
        print(f"  curl -s -X POST '{api.url}/predict?top_k=3' -H 'Content-Type: application/json' -d '{CURL_BODY}'\n")
        request = urllib.request.Request(f"{api.url}/predict?top_k=3", data=CURL_BODY.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            print("  " + response.read().decode())
    print(f"\n  Stop everything with `make stop` (pid files and logs in {run_dir()}).")


def up(names: list[str]) -> None:
    run_dir().mkdir(parents=True, exist_ok=True)
    chosen = [services()[name] for name in names]
    check_ports(chosen)
    for service in chosen:
        start(service)
    wait_until_answering(chosen)
    show(chosen)


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def down() -> None:
    """SIGTERM every service's process group at once, then wait for all of them together, so the
    slowest sets the time, not the sum of the three (one after another, each with its own 20 s
    timeout, `make stop` took about 40 s). A group still alive after STOP_GRACE_S gets SIGKILL."""
    started = time.monotonic()
    stopping: dict[str, int] = {}
    for service in services().values():
        pid = running_pid(service)
        pid_file(service).unlink(missing_ok=True)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        stopping[service.name] = pid
    if stopping:
        print(f"stopping {', '.join(stopping)} (up to {STOP_GRACE_S:.0f} s each to finish cleanly)", flush=True)
    deadline = started + STOP_GRACE_S
    while stopping and time.monotonic() < deadline:
        for name, pid in list(stopping.items()):
            if not group_alive(pid):
                del stopping[name]
                print(f"{name}: stopped (pid {pid}) after {time.monotonic() - started:.1f} s", flush=True)
        time.sleep(0.2)
    for name, pid in stopping.items():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        print(f"{name}: killed (pid {pid}) after {STOP_GRACE_S:.0f} s without exiting", flush=True)


def status() -> int:
    down_count = 0
    for service in services().values():
        pid = running_pid(service)
        if pid is None:
            print(f"{service.name:8} not started")
            continue
        ok = answers(service)
        down_count += not ok
        print(f"{service.name:8} pid {pid}  {service.url}{service.health_path}  {'answers' if ok else 'NOT ANSWERING'}")
    return 1 if down_count else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("up", help="start services in the background and wait until they answer")
    start_parser.add_argument("names", nargs="*",
                              help="services to start: mlflow, airflow, api, stream (default: the first three)")
    commands.add_parser("status", help="which services run and answer; exit 1 if one does not answer")
    commands.add_parser("down", help="stop every service started by `up`")
    args = parser.parse_args()
    if args.command == "up":
        known = list(services())
        if unknown := set(args.names) - set(known):
            parser.error(f"unknown services {sorted(unknown)}; choose from {known}")
        up(args.names or list(DEFAULT_SERVICES))
    elif args.command == "down":
        down()
    else:
        raise SystemExit(status())


if __name__ == "__main__":
    main()
