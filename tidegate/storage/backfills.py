"""Storage of backfills: one run per partition, submitted by the beat as limits allow, each
keyed by (``backfill:<id>``, partition key) so nothing is submitted twice across restarts.
Mixed into :class:`tidegate.storage.api.Storage`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import insert, select, update

from tidegate.names import RunStatus
from tidegate.storage.records import from_row
from tidegate.storage.schema import backfills, runs

if TYPE_CHECKING:
    from sqlalchemy import Engine

BACKFILL_TAG = "tidegate/backfill"


class BackfillStatus:
    REQUESTED = "REQUESTED"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"


@dataclass(frozen=True)
class BackfillRecord:
    backfill_id: str
    job_name: str
    partition_keys: tuple[str, ...]
    status: str
    max_concurrent: int | None
    tags: Mapping[str, str]
    created_at: datetime
    ended_at: datetime | None

    @property
    def origin(self) -> str:
        return backfill_origin(self.backfill_id)


@dataclass(frozen=True)
class BackfillProgress:
    total: int
    by_status: Mapping[str, int]  # run status -> count (runs submitted so far)
    submitted_keys: frozenset[str]

    @property
    def done(self) -> int:
        return sum(self.by_status.get(s, 0) for s in RunStatus.TERMINAL)

    @property
    def in_flight(self) -> int:
        return self.by_status.get(RunStatus.QUEUED, 0) + self.by_status.get(RunStatus.STARTED, 0)


def backfill_origin(backfill_id: str) -> str:
    return f"backfill:{backfill_id}"


class BackfillStorage:
    if TYPE_CHECKING:  # provided by Storage, which mixes this class in
        engine: Engine
        dialect: str

    def create_backfill(
        self,
        job_name: str,
        partition_keys: Sequence[str],
        *,
        max_concurrent: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> BackfillRecord:
        backfill_id = uuid.uuid4().hex[:12]
        with self.engine.begin() as conn:
            conn.execute(
                insert(backfills).values(
                    backfill_id=backfill_id,
                    job_name=job_name,
                    partition_keys=list(partition_keys),
                    status=BackfillStatus.REQUESTED,
                    max_concurrent=max_concurrent,
                    tags=dict(tags or {}),
                    created_at=datetime.now(UTC),
                )
            )
        return self.get_backfill(backfill_id)

    def get_backfill(self, backfill_id: str) -> BackfillRecord:
        from tidegate.errors import TidegateError

        with self.engine.connect() as conn:
            row = conn.execute(select(backfills).where(backfills.c.backfill_id.startswith(backfill_id)).limit(2)).all()
        if len(row) != 1:
            raise TidegateError(f"backfill '{backfill_id}': {'not found' if not row else 'ambiguous prefix'}")
        return from_row(BackfillRecord, row[0])

    def list_backfills(self, *, status: str | None = None, limit: int = 50) -> list[BackfillRecord]:
        query = select(backfills).order_by(backfills.c.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(backfills.c.status == status)
        with self.engine.connect() as conn:
            return [from_row(BackfillRecord, r) for r in conn.execute(query)]

    def backfill_progress(self, backfill: BackfillRecord) -> BackfillProgress:
        query = select(runs.c.run_key, runs.c.status).where(runs.c.origin == backfill.origin)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return BackfillProgress(len(backfill.partition_keys), counts, frozenset(r.run_key for r in rows))

    def set_backfill_status(self, backfill_id: str, status: str) -> bool:
        """REQUESTED -> ``status``; False if it had already ended."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    update(backfills)
                    .where(backfills.c.backfill_id == backfill_id, backfills.c.status == BackfillStatus.REQUESTED)
                    .values(status=status, ended_at=datetime.now(UTC))
                ).rowcount
                == 1
            )

    def backfill_run_ids(self, backfill: BackfillRecord, *, statuses: Sequence[str] | None = None) -> list[str]:
        query = select(runs.c.run_id).where(runs.c.origin == backfill.origin)
        if statuses is not None:
            query = query.where(runs.c.status.in_(list(statuses)))
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())
