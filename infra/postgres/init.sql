-- Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d),
-- as POSTGRES_USER, so that user owns the new database. POSTGRES_DB holds the API's
-- request log; MLflow keeps its tracking + registry schema in a database of its own
-- so its migrations never touch application tables.
CREATE DATABASE mlflow;
