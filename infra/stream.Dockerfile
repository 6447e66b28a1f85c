# Streaming consumer image: `productcat stream run` with the serving dependencies plus the
# broker clients (`[project] dependencies` + the `stream` extra; no Airflow, DVC or Evidently).
# Build context is the repository root (see .dockerignore):
#   docker build -f infra/stream.Dockerfile -t productcat-stream .
#   docker run --rm -e PRODUCTCAT_STREAM_URL=nats://<nats>:4222 \
#       -e PRODUCTCAT_MLFLOW_TRACKING_URI=http://<mlflow>:5000 \
#       -e DATABASE_URL=postgresql+psycopg2://<user>:<password>@<host>:5432/<db> productcat-stream
FROM python:3.11.11-slim-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PRODUCTCAT_PROJECT_ROOT=/app

RUN useradd --uid 1000 --create-home app

WORKDIR /app

COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['stream']))" > /tmp/requirements.txt \
    && pip install --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY productcat ./productcat
COPY ml ./ml
COPY api ./api
COPY monitoring ./monitoring
COPY streaming ./streaming
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
EXPOSE 9108

# Migrates the request-log database, waits for a champion, then consumes until SIGTERM.
CMD ["productcat", "stream", "run"]
