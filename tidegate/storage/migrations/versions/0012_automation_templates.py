"""automation templates: a condition's template stored once, named by digest in the records

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "automation_templates",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("template", sa.Text, nullable=False),
    )


def downgrade() -> None:
    # the records that name their template get it back inline (the format the earlier code reads)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE automation_evaluations AS e SET record = ((e.record::jsonb - 'template') "
            "|| jsonb_build_object('v', 2, 'condition', t.template::jsonb))::json "
            "FROM automation_templates AS t WHERE e.record->>'v' = '3' AND e.record->>'template' = t.digest"
        )
    else:
        op.execute(
            "UPDATE automation_evaluations SET record = json_set(json_remove(record, '$.template'), '$.v', 2, "
            "'$.condition', json((SELECT t.template FROM automation_templates AS t "
            "WHERE t.digest = json_extract(automation_evaluations.record, '$.template')))) "
            "WHERE json_extract(record, '$.v') = 3"
        )
    op.drop_table("automation_templates")
