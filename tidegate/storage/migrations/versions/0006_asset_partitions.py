"""asset partition status; backfill run ranges

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "asset_partitions",
        sa.Column("asset_key", sa.String(512), primary_key=True),
        sa.Column("partition_key", sa.String(255), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_asset_partitions_status", "asset_partitions", ["asset_key", "status"])
    # Partitions materialized before this table existed; failures were not tracked.
    op.execute(
        "INSERT INTO asset_partitions (asset_key, partition_key, status, run_id, updated_at) "
        "SELECT m.asset_key, m.partition_key, 'MATERIALIZED', m.run_id, m.timestamp FROM materializations m "
        "WHERE m.id IN (SELECT MAX(id) FROM materializations WHERE partition_key IS NOT NULL "
        "GROUP BY asset_key, partition_key)"
    )
    with op.batch_alter_table("backfills") as batch:
        batch.add_column(sa.Column("run_ranges", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backfills") as batch:
        batch.drop_column("run_ranges")
    op.drop_index("ix_asset_partitions_status", "asset_partitions")
    op.drop_table("asset_partitions")
