"""Storage for operating runs: the run queue's view, concurrency pools, cancellation and the
run monitor's queries. Mixed into :class:`tidegate.storage.api.Storage`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, exists, func, literal, select, update

from tidegate.names import BackfillStatus, RunStatus, StepStatus
from tidegate.storage.engine import database_now, dialect_insert, retry_transient
from tidegate.storage.records import NewEvent, RunRecord, StepRecord, StepRef, from_row
from tidegate.storage.schema import backfills, leases, pools, runs, steps

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Select

_NOT_DONE = (StepStatus.PLANNED, StepStatus.WAITING, StepStatus.READY, StepStatus.ENQUEUED, StepStatus.RUNNING)


@dataclass(frozen=True)
class PoolInfo:
    name: str
    slots: int | None  # None: no limit configured
    active: int  # READY, ENQUEUED or RUNNING
    waiting: int


@dataclass(frozen=True)
class PendingWork:
    """What the launcher and the beat may have to do, read in one statement (``pending_work``):
    each flag says only whether a cheap indexed query found any such row, so that an idle
    round reads nothing else. ``failed`` is True whenever it was not asked for."""

    now: datetime  # the database's time of the read
    queued: bool = True  # a QUEUED run: the run queue decides
    ready: bool = True  # a READY step: maybe unpublished, or a retry that is due
    waiting: bool = True  # a WAITING step: a pool may have a free slot
    running: bool = True  # a RUNNING step: the monitor judges heartbeats and timeouts
    enqueued: bool = True  # an ENQUEUED step: the monitor watches the broker for it
    failed: bool = True  # a FAILURE run ended since ``failed_since``: maybe a run retry
    backfills: bool = True  # a REQUESTED backfill
    lease_holder: str | None = None  # who holds the lease asked about (``lease``), if anyone

    @property
    def steps_in_flight(self) -> bool:
        return self.ready or self.enqueued or self.running


@dataclass(frozen=True)
class CancelResult:
    canceled: bool  # False: the run had already ended
    running: tuple[StepRef, ...]  # steps that were RUNNING: revoke their tasks
    released: tuple[StepRef, ...] = ()  # other runs' steps that got the freed pool slots: publish


def pending_select(dialect: str, failed_since: datetime | None, lease: str | None) -> Select[Any]:
    """The one-row statement of :class:`PendingWork` (``pending_from_row`` reads its row)."""

    def step_in(status: str) -> Any:
        return exists().where(steps.c.status == status)  # ix_steps_status_ready_at

    failed: Any = literal(True)
    if failed_since is not None:
        failed = exists().where(runs.c.status == RunStatus.FAILURE, runs.c.ended_at >= failed_since)
    now: Any = func.strftime("%Y-%m-%d %H:%M:%f", "now") if dialect == "sqlite" else func.now()
    holder: Any = literal(None)
    if lease is not None:
        holder = select(leases.c.holder).where(leases.c.name == lease).scalar_subquery()
    return select(
        now.label("now"),
        exists().where(runs.c.status == RunStatus.QUEUED).label("queued"),  # ix_runs_status_priority
        step_in(StepStatus.READY).label("ready"),
        step_in(StepStatus.WAITING).label("waiting"),
        step_in(StepStatus.RUNNING).label("running"),
        step_in(StepStatus.ENQUEUED).label("enqueued"),
        failed.label("failed"),
        exists().where(backfills.c.status == BackfillStatus.REQUESTED).label("backfills"),
        holder.label("lease_holder"),
    )


def _queued_query(limit: int) -> Select[Any]:
    return (
        select(runs)
        .where(runs.c.status == RunStatus.QUEUED)
        .order_by(runs.c.priority.desc(), runs.c.created_at, runs.c.run_id)
        .limit(limit)
    )


def pending_from_row(row: Any) -> PendingWork:
    when = datetime.fromisoformat(row.now).replace(tzinfo=UTC) if isinstance(row.now, str) else row.now.astimezone(UTC)
    return PendingWork(
        when,
        queued=bool(row.queued),
        ready=bool(row.ready),
        waiting=bool(row.waiting),
        running=bool(row.running),
        enqueued=bool(row.enqueued),
        failed=bool(row.failed),
        backfills=bool(row.backfills),
        lease_holder=row.lease_holder,
    )


class RunControl:
    if TYPE_CHECKING:  # provided by Storage, which mixes this class in
        engine: Engine
        dialect: str

        def _append_events(
            self, conn: Connection, run_id: str, step_key: str | None, new: Sequence[NewEvent], now: datetime
        ) -> None: ...

        def _fill_pools(self, conn: Connection, names: set[str], now: datetime) -> list[StepRef]: ...

        @staticmethod
        def _attempt(run_id: str, step_key: str, attempt: int) -> tuple[Any, ...]: ...

    # -- the launcher's and the beat's cheap look -----------------------------------------

    def pending_work(self, *, failed_since: datetime | None = None) -> PendingWork:
        """See :class:`PendingWork`; one statement on one connection."""
        with self.engine.connect() as conn:
            return self.pending_work_in(conn, failed_since=failed_since)

    def pending_work_in(
        self, conn: Connection, *, failed_since: datetime | None = None, lease: str | None = None
    ) -> PendingWork:
        """``pending_work`` on ``conn`` (the beat reads it in its round's transaction, with the
        holder of its ``lease``)."""
        return pending_from_row(conn.execute(pending_select(self.dialect, failed_since, lease)).one())

    # -- the run queue ---------------------------------------------------------------------

    def queued_runs(self, limit: int = 1000) -> list[RunRecord]:
        """QUEUED runs, highest priority first, then oldest."""
        with self.engine.connect() as conn:
            return [from_row(RunRecord, r) for r in conn.execute(_queued_query(limit))]

    def queue_view(self, limit: int = 1000) -> tuple[list[RunRecord], list[RunRecord]]:
        """``queued_runs(limit)`` and ``started_runs()`` on one connection (the launcher's round
        after a tick committed runs: one checkout less before the run starts)."""
        with self.engine.connect() as conn:
            queued = [from_row(RunRecord, r) for r in conn.execute(_queued_query(limit))]
            started = [
                from_row(RunRecord, r) for r in conn.execute(select(runs).where(runs.c.status == RunStatus.STARTED))
            ]
        return queued, started

    def started_runs(self) -> list[RunRecord]:
        with self.engine.connect() as conn:
            return [
                from_row(RunRecord, r) for r in conn.execute(select(runs).where(runs.c.status == RunStatus.STARTED))
            ]

    @retry_transient
    def fail_run(self, run_id: str, message: str) -> bool:
        """End a QUEUED or STARTED run FAILURE with ``message`` (e.g. its job is gone), its
        unfinished steps CANCELED, in one transaction."""
        return self._end_run(run_id, RunStatus.FAILURE, message).canceled

    @retry_transient
    def cancel_run(self, run_id: str) -> CancelResult:
        """QUEUED/STARTED -> CANCELED and every unfinished step CANCELED, in one transaction.
        Steps not yet started never start (claims need a STARTED run); RUNNING steps lose
        ownership, so their outcome is not recorded; the caller revokes their tasks."""
        return self._end_run(run_id, RunStatus.CANCELED, "canceled")

    def _end_run(self, run_id: str, status: str, message: str) -> CancelResult:
        """The run row first, then the pools of its unfinished steps, then those steps: the
        lock order of storage.api (a pool's holder may take WAITING steps of this run)."""
        with self.engine.begin() as conn:
            now = database_now(conn)
            ended = conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id, runs.c.status.in_([RunStatus.QUEUED, RunStatus.STARTED]))
                .values(status=status, ended_at=now, steps_remaining=0)
            ).rowcount
            if ended != 1:
                return CancelResult(False, ())
            used = select(steps.c.pool).where(
                steps.c.run_id == run_id, steps.c.status.in_(_NOT_DONE), steps.c.pool.is_not(None)
            )
            conn.execute(
                select(pools.c.name).where(pools.c.name.in_(used.distinct())).order_by(pools.c.name).with_for_update()
            )
            rows = conn.execute(
                update(steps)
                .where(steps.c.run_id == run_id, steps.c.status.in_(_NOT_DONE))
                .values(status=StepStatus.CANCELED, ended_at=now)
                .returning(
                    steps.c.run_id,
                    steps.c.step_key,
                    steps.c.attempt,
                    steps.c.queue,
                    steps.c.display_name,
                    steps.c.timeout,
                    steps.c.started_at,
                    steps.c.pool,
                )
            ).all()
            running = tuple(
                StepRef(r.run_id, r.step_key, r.attempt, r.queue, r.display_name, r.timeout)
                for r in rows
                if r.started_at is not None
            )
            self._append_events(conn, run_id, None, [NewEvent(f"RUN_{status}", message)], now)
            released = self._fill_pools(conn, {r.pool for r in rows if r.pool is not None}, now)
        return CancelResult(True, running, tuple(released))

    # -- pools -----------------------------------------------------------------------------

    def set_pool_limit(self, name: str, slots: int | None) -> list[StepRef]:
        """Set (or with None remove) a pool's limit; returns steps promoted by a larger limit."""
        with self.engine.begin() as conn:
            now = database_now(conn)
            if slots is None:
                conn.execute(delete(pools).where(pools.c.name == name))
            else:
                conn.execute(
                    dialect_insert(self.dialect)(pools)
                    .values(name=name, slots=slots)
                    .on_conflict_do_update(index_elements=["name"], set_={"slots": slots})
                )
            return self._fill_pools(conn, {name}, now)

    def fill_all_pools(self) -> list[StepRef]:
        """Promote WAITING steps of every pool with free slots (a safety net for the handover)."""
        with self.engine.connect() as conn:
            names = set(
                conn.execute(select(steps.c.pool).where(steps.c.status == StepStatus.WAITING).distinct()).scalars()
            )
        if not names:
            return []
        with self.engine.begin() as conn:
            return self._fill_pools(conn, names, database_now(conn))

    def pools_overview(self) -> list[PoolInfo]:
        with self.engine.connect() as conn:
            limits = dict(conn.execute(select(pools.c.name, pools.c.slots)).all())
            counts = conn.execute(
                select(steps.c.pool, steps.c.status, func.count())
                .where(
                    steps.c.pool.is_not(None),
                    steps.c.status.in_([StepStatus.WAITING, StepStatus.READY, StepStatus.ENQUEUED, StepStatus.RUNNING]),
                )
                .group_by(steps.c.pool, steps.c.status)
            ).all()
        active: dict[str, int] = {}
        waiting: dict[str, int] = {}
        for pool, status, count in counts:
            target = waiting if status == StepStatus.WAITING else active
            target[pool] = target.get(pool, 0) + count
        names = sorted(set(limits) | set(active) | set(waiting))
        return [PoolInfo(n, limits.get(n), active.get(n, 0), waiting.get(n, 0)) for n in names]

    # -- the run monitor's queries ---------------------------------------------------------

    def running_steps(self) -> list[StepRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(steps).where(steps.c.status == StepStatus.RUNNING)).all()
        return [from_row(StepRecord, r) for r in rows]

    def enqueued_steps(self, *, before: datetime | None = None) -> list[StepRef]:
        """ENQUEUED steps (sent before ``before``, a time of the database's clock, e.g.
        ``db_now()`` minus a timeout): candidates for re-publishing."""
        query = select(
            steps.c.run_id, steps.c.step_key, steps.c.attempt, steps.c.queue, steps.c.display_name, steps.c.timeout
        ).where(steps.c.status == StepStatus.ENQUEUED)
        if before is not None:
            query = query.where(steps.c.enqueued_at < before)
        with self.engine.connect() as conn:
            return [StepRef(*r) for r in conn.execute(query.order_by(steps.c.enqueued_at)).all()]

    def touch_enqueued(self, refs: Sequence[StepRef]) -> None:
        """Record that these ENQUEUED steps were sent again now (the database's time)."""
        with self.engine.begin() as conn:
            now = database_now(conn)
            for ref in refs:
                conn.execute(
                    update(steps)
                    .where(*self._attempt(ref.run_id, ref.step_key, ref.attempt), steps.c.status == StepStatus.ENQUEUED)
                    .values(enqueued_at=now)
                )

    def recently_failed_runs(self, *, since: datetime) -> list[RunRecord]:
        query = select(runs).where(runs.c.status == RunStatus.FAILURE, runs.c.ended_at >= since)
        with self.engine.connect() as conn:
            return [from_row(RunRecord, r) for r in conn.execute(query)]

    def child_runs(self, parent_run_id: str) -> list[RunRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(runs).where(runs.c.parent_run_id == parent_run_id)).all()
        return [from_row(RunRecord, r) for r in rows]
