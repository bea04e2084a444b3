"""event sensors: an index for reading events by type after a cursor; on PostgreSQL, event
and materialization ids drawn only once their transaction has an id (see storage/events.py)

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The transaction's id is assigned before the row's id is drawn: a reader that sees a drawn id
# in the sequence and then takes a snapshot finds that transaction among the running ones.
NEXT_ID = """
CREATE OR REPLACE FUNCTION tidegate_next_event_id(seq regclass) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN nextval(seq);
END
$$
"""


def upgrade() -> None:
    op.create_index("ix_events_type_id", "events", ["event_type", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NEXT_ID)
        for table in ("events", "materializations"):
            op.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT tidegate_next_event_id('{table}_id_seq')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("events", "materializations"):
            op.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('{table}_id_seq')")
        op.execute("DROP FUNCTION tidegate_next_event_id(regclass)")
    op.drop_index("ix_events_type_id", "events")
