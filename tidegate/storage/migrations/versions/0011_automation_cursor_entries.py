"""automation cursor entries: an automation sensor's cursor stored per asset

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "automation_cursor_entries",
        sa.Column("sensor", sa.String(255), primary_key=True),
        sa.Column("asset_key", sa.String(512), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("entry", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("automation_cursor_entries")
