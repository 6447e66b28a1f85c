# Prediction API image: `productcat serve` with the serving dependencies only
# (`[project] dependencies` of pyproject.toml; no Airflow, DVC, Evidently or ONNX export,
# tests/test_serving_dependencies.py keeps serving free of them). Build context is the
# repository root (see .dockerignore):
#   docker build -f infra/api.Dockerfile -t productcat-api .
#   docker run --rm -p 8000:8000 -e PRODUCTCAT_MLFLOW_TRACKING_URI=http://<mlflow>:5000 \
#       -e DATABASE_URL=postgresql+psycopg2://<user>:<password>@<host>:5432/<db> productcat-api
FROM python:3.11.11-slim-bookworm

# The CPU wheel of torch: a serving box needs no CUDA (ONNX Runtime or torch on CPU).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PRODUCTCAT_PROJECT_ROOT=/app

RUN useradd --uid 1000 --create-home app

WORKDIR /app

# Dependencies first (their only declaration is pyproject.toml), so a code change
# rebuilds one small layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Only what serving reads: the packages (the `productcat` CLI included), the Alembic config and params.yaml.
COPY productcat ./productcat
COPY ml ./ml
COPY api ./api
COPY monitoring ./monitoring
COPY alembic.ini params.yaml README.md ./
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && mkdir -p /app/.run/spool \
    && chown -R app:app /app/.run

# The commit the image was built from (`--build-arg GIT_COMMIT=$(git rev-parse HEAD)`): an image has
# no .git, and every request-log row records the serving code version.
ARG GIT_COMMIT=
ENV PRODUCTCAT_CODE_VERSION=${GIT_COMMIT}

USER app
EXPOSE 8000

# `productcat serve` migrates the request-log database (Alembic), then serves the champion.
CMD ["productcat", "serve", "--host", "0.0.0.0", "--port", "8000"]
