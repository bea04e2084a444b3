"""Finding runs by what they are (ids, job, statuses, tags, creation time), newest first, a page
at a time: the storage half of GraphQL's ``runsOrError`` (a mixin of Storage)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select

from tidegate.errors import RunNotFoundError
from tidegate.storage.records import RunRecord, from_row
from tidegate.storage.schema import runs

if TYPE_CHECKING:
    from sqlalchemy import Engine


@dataclass(frozen=True)
class RunFilter:
    """Every given criterion must hold (an empty one matches every run)."""

    run_ids: Sequence[str] | None = None
    job_name: str | None = None
    statuses: Sequence[str] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    created_after: datetime | None = None
    created_before: datetime | None = None


class RunSearch:
    if TYPE_CHECKING:  # provided by Storage, which mixes this class in
        engine: Engine

    def search_runs(self, run_filter: RunFilter, *, after: str | None = None, limit: int = 50) -> list[RunRecord]:
        """Runs matching ``run_filter``, newest first; ``after`` (a run id, the last of the
        previous page) continues the listing after that run. One query; tags are compared
        inside the JSON column, the same on SQLite and PostgreSQL. An unknown ``after`` raises
        RunNotFoundError."""
        query = select(runs).order_by(runs.c.created_at.desc(), runs.c.run_id).limit(limit)
        if run_filter.run_ids is not None:
            query = query.where(runs.c.run_id.in_(list(run_filter.run_ids)))
        if run_filter.job_name is not None:
            query = query.where(runs.c.job_name == run_filter.job_name)
        if run_filter.statuses:
            query = query.where(runs.c.status.in_(list(run_filter.statuses)))
        for key, value in run_filter.tags.items():
            query = query.where(runs.c.tags[key].as_string() == value)
        if run_filter.created_after is not None:
            query = query.where(runs.c.created_at > run_filter.created_after)
        if run_filter.created_before is not None:
            query = query.where(runs.c.created_at < run_filter.created_before)
        with self.engine.connect() as conn:
            if after is not None:
                created = conn.execute(select(runs.c.created_at).where(runs.c.run_id == after)).scalar()
                if created is None:
                    raise RunNotFoundError(f"run '{after}': not found (the cursor of a run listing)")
                query = query.where(
                    or_(runs.c.created_at < created, and_(runs.c.created_at == created, runs.c.run_id > after))
                )
            return [from_row(RunRecord, r) for r in conn.execute(query)]
