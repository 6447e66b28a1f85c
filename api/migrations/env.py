"""Alembic environment: the URL comes from the caller (``api.db.migrate``) or the API settings.

Run by ``alembic upgrade head`` from the project root (``alembic.ini``) and by
``api.db.migrate.upgrade`` at service start and in ``productcat db upgrade``.
"""

from __future__ import annotations

from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context
from sqlalchemy.pool import NullPool

from api.db.models import Base
from api.settings import APISettings

config = context.config
# Only the `alembic` command configures logging from the ini file; a process that
# migrates programmatically keeps its own logging.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata  # for `alembic revision --autogenerate` by developers only
# Any fixed number shared by every process that migrates this database.
MIGRATION_LOCK_ID = 7_202_411


def database_url() -> str:
    return config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or APISettings().db_url


def run_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = sa.create_engine(database_url(), poolclass=NullPool)
    with engine.connect() as connection:
        is_sqlite = connection.dialect.name == "sqlite"
        # Batch mode lets later migrations alter SQLite tables (it cannot ALTER most columns).
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=is_sqlite)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Several service workers may start at once: one migrates, the others wait and find it done.
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
