"""automation evaluations: per automation tick and asset, the condition tree as evaluated and
the runs it requested

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "automation_evaluations",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("sensor", sa.String(255), nullable=False),
        sa.Column("tick_id", sa.BigInteger, nullable=False),
        sa.Column("asset_key", sa.String(512), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested", sa.Integer, nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
        sa.Column("run_ids", sa.JSON, nullable=False),
        sa.Column("backfill_ids", sa.JSON, nullable=False),
    )
    op.create_index("ix_automation_evaluations_asset", "automation_evaluations", ["asset_key", "tick_id"])
    op.create_index("ix_automation_evaluations_time", "automation_evaluations", ["evaluated_at"])


def downgrade() -> None:
    op.drop_index("ix_automation_evaluations_time", "automation_evaluations")
    op.drop_index("ix_automation_evaluations_asset", "automation_evaluations")
    op.drop_table("automation_evaluations")
