"""The human-review queue: products whose top probability fell below the version's review threshold
get no category; they wait in ``review_item`` for a person, and ``prediction_log.needs_review`` says which
answers abstained.

Rows logged before this revision were all answered, hence the server default.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXED = ("created_at", "status", "model_version")


def upgrade() -> None:
    op.add_column("prediction_log", sa.Column("needs_review", sa.Boolean(), nullable=False,
                                              server_default=sa.false()))
    op.create_table(
        "review_item",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("probability", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False, server_default="http"),
        sa.Column("resolved_label", sa.Text(), nullable=True),
        sa.Column("resolved_label_path", sa.JSON(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.Integer(), nullable=True),
        sa.Column("feedback_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name="pk_review_item"),
    )
    for column in INDEXED:
        op.create_index(f"ix_review_item_{column}", "review_item", [column])


def downgrade() -> None:
    for column in reversed(INDEXED):
        op.drop_index(f"ix_review_item_{column}", table_name="review_item")
    op.drop_table("review_item")
    with op.batch_alter_table("prediction_log") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("needs_review")
