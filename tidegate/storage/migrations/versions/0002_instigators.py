"""instigators, ticks, leases

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "instigators",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("cursor", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("cron", sa.String(255), nullable=True),
        sa.Column("running_since", Stamp, nullable=True),
        sa.Column("last_tick_at", Stamp, nullable=True),
        sa.Column("next_tick_at", Stamp, nullable=True),
        sa.Column("last_run_key", sa.String(1024), nullable=True),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    op.create_index("ix_instigators_updated_at", "instigators", ["updated_at"])
    op.create_table(
        "ticks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("instigator", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tick_time", Stamp, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_ids", sa.JSON, nullable=False),
        sa.Column("new_run_keys", sa.JSON, nullable=False),
        sa.Column("skipped_run_keys", sa.JSON, nullable=False),
        sa.Column("skip_reason", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("cursor", sa.Text, nullable=True),
        sa.Column("started_at", Stamp, nullable=False),
        sa.Column("ended_at", Stamp, nullable=False),
        sa.UniqueConstraint("instigator", "tick_time", name="uq_ticks_instigator_time"),
    )
    op.create_index("ix_ticks_instigator_id", "ticks", ["instigator", "id"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_at", Stamp, nullable=False),
    )


def downgrade() -> None:
    for table in ("leases", "ticks", "instigators"):
        op.drop_table(table)
