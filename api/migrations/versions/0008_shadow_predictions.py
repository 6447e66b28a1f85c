"""The challenger's answers to live requests, scored in the champion's shadow (api/shadow.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXED = ("created_at", "request_id")


def upgrade() -> None:
    op.create_table(
        "shadow_prediction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("champion_version", sa.String(64), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("probability", sa.Double(), nullable=False),
        sa.Column("top_k", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_shadow_prediction"),
        sa.UniqueConstraint("request_id", "model_version", name="uq_shadow_prediction_request_id"),
    )
    for column in INDEXED:
        op.create_index(f"ix_shadow_prediction_{column}", "shadow_prediction", [column])


def downgrade() -> None:
    for column in reversed(INDEXED):
        op.drop_index(f"ix_shadow_prediction_{column}", table_name="shadow_prediction")
    op.drop_table("shadow_prediction")
