"""API key scopes; feedback rows chained so only their writer (or an admin) supersedes them.

Keys made before this revision get ``predict,feedback``: what every key could do
before (``/model/reload`` needs ``admin`` from now on; grant it with a new key).
Existing feedback is chained in id order, the newest row per request_id last.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("scopes", sa.String(64), nullable=False, server_default="predict,feedback"))

    op.add_column("feedback", sa.Column("previous_id", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE feedback SET previous_id = COALESCE((SELECT MAX(earlier.id) FROM feedback AS earlier"
        " WHERE earlier.request_id = feedback.request_id AND earlier.id < feedback.id), 0)"
    )
    # Batch: SQLite can add neither NOT NULL to a column nor a constraint to a table in place.
    with op.batch_alter_table("feedback") as batch:
        batch.alter_column("previous_id", existing_type=sa.Integer(), nullable=False)
        batch.create_unique_constraint("uq_feedback_request_id_previous_id", ["request_id", "previous_id"])


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_constraint("uq_feedback_request_id_previous_id", type_="unique")
        batch.drop_column("previous_id")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scopes")
