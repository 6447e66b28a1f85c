"""Lineage on every logged prediction: the model's training run, the data version it was trained on,
the code that trained it and the code that served it.

Nullable: rows logged before this revision keep no lineage (the model version still names it).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("run_id", "data_version", "model_git_commit", "serving_git_commit")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("prediction_log", sa.Column(name, sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prediction_log") as batch:  # SQLite drops a column by copying the table
        for name in reversed(COLUMNS):
            batch.drop_column(name)
