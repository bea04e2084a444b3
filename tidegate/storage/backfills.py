"""Storage of backfills: one run per partition, submitted by the beat as limits allow, each
keyed by (``backfill:<id>``, partition key) so nothing is submitted twice across restarts.
Mixed into :class:`tidegate.storage.api.Storage`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from tidegate.names import BackfillStatus, RunStatus
from tidegate.storage.records import from_row
from tidegate.storage.schema import backfills, runs

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine


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
    run_ranges: tuple[tuple[str, str], ...] | None = None  # one run per range; None: per partition
    run_config: Mapping[str, Any] | None = None  # each run's config, stored form (as runs.run_config)

    @property
    def origin(self) -> str:
        return backfill_origin(self.backfill_id)

    def runs(self) -> dict[str, tuple[str, str | None]]:
        """Each run this backfill submits, in order: run key -> (partition key, None), or
        (first, last) of a range run. Keys are compared, never parsed back from run keys
        (a dynamic partition key may contain the separator)."""
        if self.run_ranges is None:
            return {key: (key, None) for key in self.partition_keys}
        return {range_run_key(first, last): (first, last) for first, last in self.run_ranges}

    def partitions_per_run(self) -> dict[str, int]:
        """Run key -> how many of the backfill's partitions that run covers."""
        if self.run_ranges is None:
            return dict.fromkeys(self.partition_keys, 1)
        position = {k: i for i, k in enumerate(self.partition_keys)}
        return {range_run_key(first, last): position[last] - position[first] + 1 for first, last in self.run_ranges}


@dataclass(frozen=True)
class BackfillProgress:
    total: int  # partitions
    by_status: Mapping[str, int]  # run status -> partitions in runs of that status (submitted so far)
    submitted_keys: frozenset[str]  # run keys submitted
    in_flight: int  # runs queued or started

    @property
    def done(self) -> int:
        return sum(self.by_status.get(s, 0) for s in RunStatus.TERMINAL)


def range_run_key(first: str, last: str) -> str:
    return f"{first}...{last}"


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
        run_ranges: Sequence[tuple[str, str]] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> BackfillRecord:
        """One row, however many partitions (they are a JSON list): one statement."""
        with self.engine.begin() as conn:
            backfill_id = self.create_backfill_in(
                conn,
                job_name,
                partition_keys,
                max_concurrent=max_concurrent,
                tags=tags,
                run_ranges=run_ranges,
                run_config=run_config,
            )
        return self.get_backfill(backfill_id)

    def create_backfill_in(
        self,
        conn: Connection,
        job_name: str,
        partition_keys: Sequence[str],
        *,
        max_concurrent: int | None = None,
        tags: Mapping[str, str] | None = None,
        run_ranges: Sequence[tuple[str, str]] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> str:
        """``create_backfill`` within the caller's transaction (an automation tick's); its id."""
        backfill_id = uuid.uuid4().hex[:12]
        conn.execute(
            insert(backfills).values(
                backfill_id=backfill_id,
                job_name=job_name,
                partition_keys=list(partition_keys),
                status=BackfillStatus.REQUESTED,
                max_concurrent=max_concurrent,
                tags=dict(tags or {}),
                created_at=datetime.now(UTC),
                run_ranges=[list(r) for r in run_ranges] if run_ranges is not None else None,
                run_config=dict(run_config) if run_config else None,
            )
        )
        return backfill_id

    def get_backfill(self, backfill_id: str) -> BackfillRecord:
        from tidegate.errors import BackfillNotFoundError, TidegateError

        with self.engine.connect() as conn:
            row = conn.execute(select(backfills).where(backfills.c.backfill_id.startswith(backfill_id)).limit(2)).all()
        if not row:
            raise BackfillNotFoundError(f"backfill '{backfill_id}': not found")
        if len(row) != 1:
            raise TidegateError(f"backfill '{backfill_id}': ambiguous prefix")
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
        in_flight = 0
        covered = backfill.partitions_per_run()
        for row in rows:
            counts[row.status] = counts.get(row.status, 0) + covered.get(row.run_key, 1)
            in_flight += row.status in (RunStatus.QUEUED, RunStatus.STARTED)
        return BackfillProgress(len(backfill.partition_keys), counts, frozenset(r.run_key for r in rows), in_flight)

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
