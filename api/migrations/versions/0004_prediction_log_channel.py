"""The channel a prediction came through: ``http`` (/predict) or a broker (``nats``, ``amqp``,
``redis``, ``kafka``: the stream consumer).

Rows logged before this revision came through /predict, hence the server default.

Revision ID: 0004
Revises: 0003
Create Date: 2025-04-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("prediction_log", sa.Column("channel", sa.String(16), nullable=False, server_default="http"))


def downgrade() -> None:
    with op.batch_alter_table("prediction_log") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("channel")
