# MLflow tracking + registry server, built here rather than taken from a registry
# image so the server runs the same MLflow version as the project (pyproject pins
# mlflow==3.17.*) plus the Postgres driver its backend store needs.
#   docker build -f infra/mlflow.Dockerfile infra
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install mlflow==3.17.2 psycopg2-binary==2.9.13

# /mlartifacts is created here, owned by the server's user, so a named volume
# mounted on it starts with that ownership and the non-root server can write.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin mlflow \
    && mkdir /mlartifacts \
    && chown mlflow:mlflow /mlartifacts

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000

# Standalone default (SQLite in the home folder); docker-compose.yml passes the
# Postgres backend and the artifact destination.
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--artifacts-destination", "/mlartifacts"]
