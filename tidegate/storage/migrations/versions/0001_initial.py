"""runs, steps, events, materializations

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("job_name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(255), nullable=False),
        sa.Column("run_key", sa.String(1024), nullable=True),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("asset_selection", sa.JSON, nullable=True),
        sa.Column("parent_run_id", sa.String(64), nullable=True),
        sa.Column("steps_remaining", sa.Integer, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("started_at", Stamp, nullable=True),
        sa.Column("ended_at", Stamp, nullable=True),
        sa.UniqueConstraint("origin", "run_key", name="uq_runs_origin_run_key"),
    )
    op.create_index("ix_runs_status_priority", "runs", ["status", "priority", "created_at"])
    op.create_index("ix_runs_created_at", "runs", ["created_at"])

    op.create_table(
        "steps",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step_key", sa.String(512), nullable=False),
        sa.Column("asset_key", sa.String(512), nullable=False),
        sa.Column("display_name", sa.String(512), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("downstream", sa.JSON, nullable=False),
        sa.Column("pending_upstream", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("ready_at", Stamp, nullable=True),
        sa.Column("enqueued_at", Stamp, nullable=True),
        sa.Column("started_at", Stamp, nullable=True),
        sa.Column("ended_at", Stamp, nullable=True),
        sa.Column("heartbeat_at", Stamp, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.UniqueConstraint("run_id", "step_key", name="uq_steps_run_step"),
    )
    op.create_index("ix_steps_status_ready_at", "steps", ["status", "ready_at"])

    op.create_table(
        "events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step_key", sa.String(512), nullable=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("timestamp", Stamp, nullable=False),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("data", sa.JSON, nullable=True),
    )
    op.create_index("ix_events_run_id", "events", ["run_id", "id"])

    op.create_table(
        "materializations",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("asset_key", sa.String(512), nullable=False),
        sa.Column("partition_key", sa.String(255), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step_key", sa.String(512), nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("timestamp", Stamp, nullable=False),
    )
    op.create_index("ix_materializations_asset", "materializations", ["asset_key", "id"])


def downgrade() -> None:
    for table in ("materializations", "events", "steps", "runs"):
        op.drop_table(table)
