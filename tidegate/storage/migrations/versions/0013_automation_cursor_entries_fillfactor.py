"""automation cursor entries: pages kept 60% free on PostgreSQL (fillfactor 40)

Revision ID: 0013
Revises: 0012

A tick rewrites the entry of every asset it evaluated (its evaluation time at least changes):
thousands of rows updated in place. With full pages each new row version goes to another
page and into the primary key's index too; with room left on its page it is a heap-only
update (no index entry) and the page's dead versions are pruned as it is next written. The
bench's upserts of 4,418 and 4,833 entries took 24-26 ms (one outlier 44 ms) instead of 33-45
ms in alternated runs. Rows written before this move to pages with room on their next
update. SQLite has no such setting.
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE automation_cursor_entries SET (fillfactor = 40)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE automation_cursor_entries RESET (fillfactor)")
