"""Alembic environment: runs on the connection that tidegate.storage.migrate hands over."""

from __future__ import annotations

from alembic import context

from tidegate.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `tidegate db upgrade`, not the alembic CLI")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
