"""dynamic partitions

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "dynamic_partitions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("partitions_def", sa.String(255), nullable=False),
        sa.Column("partition_key", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("partitions_def", "partition_key", name="uq_dynamic_partitions_key"),
    )


def downgrade() -> None:
    op.drop_table("dynamic_partitions")
