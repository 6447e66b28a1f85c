-- Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d),
-- as POSTGRES_USER, so that user owns the new database. POSTGRES_DB holds the API's
-- request log; MLflow and Airflow keep their schemas in databases of their own so
-- their migrations never touch application tables.
CREATE DATABASE mlflow;
CREATE DATABASE airflow;
