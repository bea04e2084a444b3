"""run configuration: the config a run (or a backfill's runs) was launched with, EnvVar values
kept as markers

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("run_config", sa.JSON(), nullable=True))
    op.add_column("backfills", sa.Column("run_config", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in ("backfills", "runs"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("run_config")
