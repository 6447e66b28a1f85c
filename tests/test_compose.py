"""Static checks of docker-compose.yml and the Dockerfiles it builds.

No Docker engine is needed: the files are parsed, so a broken rule (an unpinned
image, a missing mount source, a pipeline image drifting from `make demo`) fails
here before anyone runs `docker compose`.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

# ${VAR:-default}, ${VAR-default}, ${VAR}; checks use the defaults, never the caller's shell.
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: str) -> str:
    return _VARIABLE.sub(lambda m: m.group("default") or "", value)


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def is_pinned(reference: str) -> bool:
    """An image reference with a digest, or a tag that is not `latest` and names a version."""
    reference = interpolate(reference)
    if "@sha256:" in reference:
        return True
    name, _, tag = reference.rpartition(":")
    # A colon before the last "/" is a registry port, not a tag.
    if not name or "/" in tag:
        return False
    return tag != "latest" and any(ch.isdigit() for ch in tag)


def dockerfile_of(build: str | dict[str, Any]) -> Path:
    spec = {"context": build} if isinstance(build, str) else build
    context = REPO_ROOT / interpolate(spec.get("context", "."))
    return (context / interpolate(spec.get("dockerfile", "Dockerfile"))).resolve()


def inside_repo(path: Path) -> bool:
    return path.resolve().is_relative_to(REPO_ROOT)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def from_images(path: Path) -> list[str]:
    """Base images of every FROM line, with ARG defaults substituted; earlier stages skipped."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images = []
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "ARG" and "=" in rest:
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip().strip('"')
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), words[0])
            if len(words) >= 3 and words[1].lower() == "as":
                stages.add(words[2].lower())
            if image.lower() not in stages | {"scratch"}:
                images.append(image)
    return images


def shell_commands(script: str) -> list[str]:
    """Split a shell line into its simple commands (on &&, ; and newlines)."""
    parts = re.split(r"&&|;|\n", script)
    return [" ".join(shlex.split(part)) for part in parts if part.strip()]


def dockerfile_cmd(path: Path) -> list[str]:
    cmds = [rest for keyword, rest in dockerfile_instructions(path) if keyword == "CMD"]
    assert cmds, f"{path.name} has no CMD"
    last = cmds[-1]  # only the last CMD takes effect
    return json.loads(last) if last.startswith("[") else ["sh", "-c", last]


def commands_run_by(argv: list[str]) -> list[str]:
    if len(argv) >= 3 and Path(argv[0]).name in {"sh", "bash"} and argv[1] == "-c":
        return shell_commands(argv[2])
    return [" ".join(argv)]


def make_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target, without the @ / - prefixes."""
    lines = (REPO_ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", line))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(" ".join(shlex.split(line.strip().lstrip("@-"))))
    return recipe


def bind_sources(service: dict[str, Any]) -> list[str]:
    """Host paths of the bind mounts; named volumes are returned by named_volumes()."""
    return [source for source, is_bind in _mounts(service) if is_bind]


def named_volumes(service: dict[str, Any]) -> list[str]:
    return [source for source, is_bind in _mounts(service) if not is_bind]


def _mounts(service: dict[str, Any]) -> list[tuple[str, bool]]:
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            source, kind = entry.get("source", ""), entry.get("type", "volume")
            if kind in {"bind", "volume"} and source:
                mounts.append((interpolate(source), kind == "bind"))
            continue
        parts = interpolate(entry).split(":")
        if len(parts) == 1:  # anonymous volume: container path only
            continue
        source = parts[0]
        mounts.append((source, source.startswith((".", "/", "~"))))
    return mounts


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on", {})
    return {name: {} for name in deps} if isinstance(deps, list) else deps


def healthcheck_disabled(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck", {})
    return check.get("disable") is True or check.get("test") in (["NONE"], "NONE")


def built_dockerfiles() -> list[Path]:
    return sorted({dockerfile_of(s["build"]) for s in SERVICES.values() if "build" in s})


# ---- the rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_image_is_pinned_or_built_here(name: str) -> None:
    service = SERVICES[name]
    if "build" in service:
        dockerfile = dockerfile_of(service["build"])
        assert inside_repo(dockerfile) and dockerfile.is_file(), f"{name}: no Dockerfile at {dockerfile}"
    else:
        assert "image" in service, f"{name}: neither image nor build"
        assert is_pinned(service["image"]), f"{name}: image {service['image']!r} is not pinned"


@pytest.mark.parametrize("dockerfile", built_dockerfiles(), ids=lambda p: p.name)
def test_dockerfile_base_images_are_pinned(dockerfile: Path) -> None:
    images = from_images(dockerfile)
    assert images, f"{dockerfile.name} has no FROM line"
    for image in images:
        assert is_pinned(image), f"{dockerfile.name}: FROM {image!r} is not pinned"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_has_a_healthcheck_or_disables_it(name: str) -> None:
    check = SERVICES[name].get("healthcheck")
    assert check, f"{name}: no healthcheck (give a test, or `disable: true` for one-shot jobs)"
    assert healthcheck_disabled(SERVICES[name]) or check.get("test"), f"{name}: healthcheck has no test"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_mount_sources_exist(name: str) -> None:
    for source in bind_sources(SERVICES[name]):
        if source.startswith("."):
            path = REPO_ROOT / source
            assert inside_repo(path), f"{name}: bind source {source} leaves the repository"
            assert path.exists(), f"{name}: bind source {source} is not in the repository"
    declared = COMPOSE.get("volumes") or {}
    for volume in named_volumes(SERVICES[name]):
        assert volume in declared, f"{name}: volume {volume!r} is not declared under top-level volumes"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_targets_exist_and_can_become_healthy(name: str) -> None:
    for target, spec in depends_on(SERVICES[name]).items():
        assert target in SERVICES, f"{name} depends on unknown service {target!r}"
        if (spec or {}).get("condition") == "service_healthy":
            assert not healthcheck_disabled(SERVICES[target]) and "healthcheck" in SERVICES[target], (
                f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
            )


def test_pipeline_image_runs_the_same_commands_as_make_demo() -> None:
    # `make demo` runs these through `first-champion` when the store has no champion yet.
    demo = [line for line in make_recipe("first-champion") if line.startswith("productcat ")]
    assert demo, "the Makefile's first-champion target runs no productcat command"
    pipeline = SERVICES["pipeline"]
    argv = pipeline.get("command") or dockerfile_cmd(dockerfile_of(pipeline["build"]))
    if isinstance(argv, str):
        argv = shlex.split(argv)
    assert commands_run_by(argv) == demo


def test_pipeline_is_an_on_demand_job_talking_to_mlflow() -> None:
    pipeline = SERVICES["pipeline"]
    assert "jobs" in pipeline.get("profiles", []), "pipeline would start with `docker compose up`"
    assert pipeline["environment"]["PRODUCTCAT_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert healthcheck_disabled(pipeline)


def test_mlflow_server_flags_exist_in_the_installed_mlflow() -> None:
    """Catches a flag renamed by an MLflow upgrade before the container crash-loops."""
    from mlflow.cli import server

    known = {opt for param in server.params for opt in param.opts}
    command = SERVICES["mlflow"]["command"]
    argv = shlex.split(command) if isinstance(command, str) else command
    assert argv[:2] == ["mlflow", "server"]
    flags = {arg.split("=")[0] for arg in argv if arg.startswith("--")}
    assert flags <= known, f"unknown mlflow server flags: {sorted(flags - known)}"


def test_mlflow_uses_the_database_created_by_the_init_script() -> None:
    init_sql = (REPO_ROOT / "infra/postgres/init.sql").read_text()
    created = set(re.findall(r"CREATE DATABASE\s+(\w+)", init_sql, flags=re.IGNORECASE))
    command = SERVICES["mlflow"]["command"]
    argv = shlex.split(command) if isinstance(command, str) else command
    uri = interpolate(argv[argv.index("--backend-store-uri") + 1])
    # psycopg2 is the driver the image installs; a bare postgresql:// means psycopg 3 to SQLAlchemy 2.1.
    assert uri.startswith("postgresql+psycopg2://") and uri.rsplit("/", 1)[-1] in created, uri


def test_api_service_serves_with_flags_the_cli_knows_and_logs_to_postgres() -> None:
    import typer.main

    from productcat.cli import app

    api = SERVICES["api"]
    argv = api["command"]
    assert argv[:2] == ["productcat", "serve"]
    serve = next(c for c in typer.main.get_command(app).commands.values() if c.name == "serve")
    known = {opt for param in serve.params for opt in param.opts}
    assert {a for a in argv if a.startswith("--")} <= known
    url = interpolate(api["environment"]["DATABASE_URL"])
    assert url == "postgresql+psycopg2://productcat:productcat@postgres:5432/productcat"
    assert any(v.endswith(":/app/.run/spool") for v in api["volumes"])


def test_stream_service_runs_the_consumer_on_the_compose_broker_with_the_stream_extra() -> None:
    import typer.main

    from productcat.cli import app

    stream = SERVICES["stream"]
    argv = stream["command"]
    consumer = typer.main.get_command(app).load(argv[1])  # loaded as when a user runs it
    assert argv[0] == "productcat" and argv[2] in consumer.commands
    assert interpolate(stream["environment"]["PRODUCTCAT_STREAM_URL"]) == "nats://nats:4222"
    assert "nats" in stream["depends_on"] and "--jetstream" in SERVICES["nats"]["command"]
    assert any(v.endswith(":/app/.run/spool") for v in stream["volumes"])
    dockerfile = dockerfile_of(stream["build"])
    runs = " ".join(rest for keyword, rest in dockerfile_instructions(dockerfile) if keyword == "RUN")
    assert "['optional-dependencies']['stream']" in runs and "['pipeline']" not in runs
    assert dockerfile_cmd(dockerfile) == argv


# ---- Airflow and the two images ------------------------------------------------------------------

AIRFLOW_SERVICES = sorted(name for name in SERVICES if name.startswith("airflow-"))


def airflow_argv(argv: list[str] | str) -> list[str]:
    argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
    if argv and argv[0] == "CMD":
        argv = argv[1:]
    assert argv[0] == "airflow", argv
    return [interpolate(a) for a in argv[1:]]


def test_airflow_runs_api_server_scheduler_dag_processor_and_a_one_shot_init() -> None:
    commands = {name: airflow_argv(SERVICES[name]["command"])[0] for name in AIRFLOW_SERVICES}
    assert sorted(commands.values()) == ["api-server", "dag-processor", "db", "scheduler"]
    init = next(name for name, cmd in commands.items() if cmd == "db")
    assert healthcheck_disabled(SERVICES[init])
    for name in AIRFLOW_SERVICES:
        if name != init:
            assert depends_on(SERVICES[name])[init]["condition"] == "service_completed_successfully", name


PARSE_WITH_AIRFLOW = """
import json, sys
from airflow.cli.cli_parser import get_parser
failed = {}
for argv in json.loads(sys.argv[1]):
    try:
        get_parser().parse_args(argv)
    except SystemExit as exc:
        failed[" ".join(argv)] = exc.code
print(json.dumps(failed))
"""


def test_airflow_commands_and_healthchecks_parse_with_the_installed_airflow() -> None:
    """A command or flag renamed by an Airflow upgrade (as `webserver` was) fails here, not in a crash loop.
    In a subprocess: importing Airflow here would fix its settings before the DAG tests pick their home."""
    import subprocess
    import sys

    argvs = []
    for name in AIRFLOW_SERVICES:
        service = SERVICES[name]
        argvs.append(airflow_argv(service["command"]))
        test = service["healthcheck"].get("test", [])
        if len(test) > 1 and test[1] == "airflow":
            argvs.append(airflow_argv(test))
    done = subprocess.run([sys.executable, "-c", PARSE_WITH_AIRFLOW, json.dumps(argvs)],
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}
    assert len(argvs) == len(AIRFLOW_SERVICES) + 2  # scheduler and dag-processor checked by `airflow jobs check`


def test_airflow_components_share_database_secret_and_execution_api() -> None:
    envs = [SERVICES[name]["environment"] for name in AIRFLOW_SERVICES]
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__API_AUTH__JWT_SECRET",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__DAGS_FOLDER"):
        assert len({interpolate(str(env[key])) for env in envs}) == 1, f"{key} differs between Airflow services"
    env = envs[0]
    init_sql = (REPO_ROOT / "infra/postgres/init.sql").read_text()
    database = interpolate(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).rsplit("/", 1)[-1]
    assert re.search(rf"CREATE DATABASE\s+{database}\b", init_sql, flags=re.IGNORECASE), database
    execution = re.match(r"http://([\w-]+):(\d+)/execution/$", env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert execution, env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    host, port = execution.groups()
    assert airflow_argv(SERVICES[host]["command"])[:3] == ["api-server", "--port", port]
    # The DAG files come from the checkout mounted at /app.
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/app/dags"
    assert all(".:/app" in SERVICES[name]["volumes"] for name in AIRFLOW_SERVICES)
    assert env["PRODUCTCAT_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_api_image_installs_serving_dependencies_only() -> None:
    dockerfile = dockerfile_of(SERVICES["api"]["build"])
    assert dockerfile.name == "api.Dockerfile"
    runs = " ".join(rest for keyword, rest in dockerfile_instructions(dockerfile) if keyword == "RUN")
    assert "['dependencies']" in runs and "optional-dependencies" not in runs and "[pipeline]" not in runs
    assert "pip install --no-deps ." in runs
    assert dockerfile_cmd(dockerfile) == SERVICES["api"]["command"]


def test_training_image_installs_the_pipeline_extra_for_airflow_and_the_pipeline_job() -> None:
    dockerfile = dockerfile_of(SERVICES["pipeline"]["build"])
    runs = " ".join(rest for keyword, rest in dockerfile_instructions(dockerfile) if keyword == "RUN")
    assert "['optional-dependencies']['pipeline']" in runs
    assert all(dockerfile_of(SERVICES[name]["build"]) == dockerfile for name in AIRFLOW_SERVICES)


def test_spark_cluster_is_opt_in_and_the_worker_joins_the_master() -> None:
    """`docker compose up` (and `make demo`) start no Spark; the `spark` profile starts a master and a
    worker registered with it, and Airflow's driver reaches that master only when the user says so."""
    master, worker = SERVICES["spark-master"], SERVICES["spark-worker"]
    assert master["profiles"] == worker["profiles"] == ["spark"]
    assert "spark://spark-master:7077" in worker["command"]
    assert [master["command"][1], worker["command"][1]] == [
        "org.apache.spark.deploy.master.Master", "org.apache.spark.deploy.worker.Worker"]
    assert depends_on(worker)["spark-master"]["condition"] == "service_healthy"
    # Executors read the staged input and write part files at the paths the driver (Airflow) uses.
    assert ".:/app" in worker["volumes"]
    for name in AIRFLOW_SERVICES:
        assert interpolate(SERVICES[name]["environment"]["PRODUCTCAT_SPARK_MASTER"]) == "local[*]", name
    for port in master["ports"]:
        assert interpolate(port).startswith("127.0.0.1:"), port
