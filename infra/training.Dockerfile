# Training image: the `productcat` CLI with every pipeline dependency (Airflow, DVC,
# Evidently, ONNX export). The compose `pipeline` job and the Airflow services run it.
# Build context is the repository root (see .dockerignore):
#   docker build -f infra/training.Dockerfile -t productcat-training .
#   docker run --rm -v "$PWD:/app" productcat-training              # trains on the bundled sample (CPU)
#   docker build -f infra/training.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#       -t productcat-training:cuda . && docker run --rm --gpus all -v "$PWD:/app" productcat-training:cuda
FROM python:3.11.11-slim-bookworm

# PyPI's torch wheel bundles CUDA (gigabytes); the CPU index keeps the image small.
# GPU users swap the index, e.g. --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Match the host user so files written into bind-mounted folders stay the host user's.
ARG APP_UID=1000
ARG APP_GID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git: DVC needs a Git repository to run `dvc repro` / `dvc push`. Java 17: Spark's JVM (the
# `spark` extra: `--engine spark` drivers in Airflow, and the compose profile's master and worker).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*

# --non-unique: the host's ids may already be taken by a system account in the image.
RUN groupadd --non-unique --gid "${APP_GID}" app \
    && useradd --non-unique --uid "${APP_UID}" --gid "${APP_GID}" --create-home app

WORKDIR /app

# Dependencies first, read from pyproject.toml (their only declaration: the serving set
# plus the `pipeline` extra), so a code change rebuilds one small layer instead of
# reinstalling torch and Airflow.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['pipeline'] + p['optional-dependencies']['spark']))" > /tmp/requirements.txt \
    && pip install --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY --chown=app:app . .
# /app itself must be the user's too: the pipeline creates reports/ and data/ outputs there.
# /opt/airflow is AIRFLOW_HOME in compose: a new named volume takes this folder's owner.
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && mkdir -p /app/.run/spool /opt/airflow \
    && chown app:app /app /app/.run /app/.run/spool /opt/airflow

USER app

# The same commands as `make demo`; tests/test_compose.py keeps the two in step.
CMD ["sh", "-c", "productcat ingest && productcat split && productcat train --reason 'first champion on the bundled sample' && productcat evaluate && productcat gate"]
