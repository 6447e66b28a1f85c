"""Explanations served: which version explained which label for which request, how long it took and
its strongest features.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXED = ("created_at", "request_id")


def upgrade() -> None:
    op.create_table(
        "explanation_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("duration_ms", sa.Double(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_explanation_log"),
    )
    for column in INDEXED:
        op.create_index(f"ix_explanation_log_{column}", "explanation_log", [column])


def downgrade() -> None:
    for column in reversed(INDEXED):
        op.drop_index(f"ix_explanation_log_{column}", table_name="explanation_log")
    op.drop_table("explanation_log")
