"""step concurrency pools and timeouts

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.add_column(sa.Column("pool", sa.String(255), nullable=True))
        batch.add_column(sa.Column("timeout", sa.Float, nullable=True))
    op.create_index("ix_steps_pool_status", "steps", ["pool", "status"])
    op.create_table(
        "pools",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("slots", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pools")
    op.drop_index("ix_steps_pool_status", "steps")
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("timeout")
        batch.drop_column("pool")
