"""The one storage API used by every process: instigators, the beat, workers and the CLI.

Each method's docstring says what it does in one transaction. The same contract tests run
on SQLite and PostgreSQL (tests/test_storage_contract.py).

Time: every timestamp written here, and every "now" an age is judged against, is the
database's clock (``database_now``), read once per transaction: a heartbeat written by a worker
whose host runs 30 s behind is as fresh as one written by the beat's host.

Lock order (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serializes writers, so it cannot
deadlock): runs, then steps, then pools (pools by name), and a transaction holding a pool may
then promote other runs' WAITING steps. So: a transaction that changes a run's steps and may
change the run locks the run row first: ``start_run``, ``cancel_run`` and ``fail_run`` update
it first, ``complete_step`` and ``fail_step`` lock it (``SELECT ... FOR UPDATE``) before their
step. Ending a run locks the pools of its unfinished steps before those steps, since a pool's
holder may be promoting one of them. Transactions that change only step rows (claim,
heartbeat, enqueue) take no run lock.

Idempotency: a write retried after a lost commit acknowledgement (``retry_transient``) does no
harm. Status changes are compare-and-set; a submitted run's id is chosen before the first
attempt and inserted with ON CONFLICT DO NOTHING, so a retry finds the run it already created.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    Text,
    and_,
    any_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tidegate.definitions.job import RunPlan, StepPlan
from tidegate.definitions.metadata import metadata_json_default
from tidegate.errors import RunNotFoundError, StorageError
from tidegate.names import PARTITION_TAG, PartitionStatus, RunStatus, StepStatus
from tidegate.storage import migrate
from tidegate.storage.automation import AutomationStorage
from tidegate.storage.backfills import BackfillStorage
from tidegate.storage.control import RunControl
from tidegate.storage.engine import (
    DriverStatement,
    KeptConnections,
    as_database_now,
    database_now,
    dialect_insert,
    make_engine,
    normalize_url,
    now_column,
    retry_transient,
    run_pipelined,
)
from tidegate.storage.instigators import InstigatorStorage
from tidegate.storage.partitions import DynamicPartitionStorage
from tidegate.storage.records import (
    ClaimedStep,
    Continuation,
    EventRecord,
    MaterializationRecord,
    NewEvent,
    NewMaterialization,
    RunRecord,
    StepRecord,
    StepRef,
    SubmitResult,
    from_row,
)
from tidegate.storage.run_search import RunSearch
from tidegate.storage.schema import asset_partitions, events, materializations, pools, runs, steps
from tidegate.storage.tokens import TokenStorage

RUNLESS_RUN_ID = ""  # the run id of events recorded outside any run, as in Dagster
# STEP_STARTED data of a step claimed by continuation: the id of the broker task it runs inside.
CONTINUED_IN = "continued_in_task"


_REF = (steps.c.run_id, steps.c.step_key, steps.c.attempt, steps.c.queue, steps.c.display_name, steps.c.timeout)
_READY_OR_WAITING = case((steps.c.pool.is_(None), StepStatus.READY), else_=StepStatus.WAITING)
_HOLDS_SLOT = (StepStatus.READY, StepStatus.ENQUEUED, StepStatus.RUNNING)


# At most this many events, and partitions, of an asset step go into its success statement
# (one cached statement per count, ``_success_statement``); more (a step that logged a lot, a
# range of many partitions) take the general path.
_FAST_EVENTS = 32
_FAST_PARTITIONS = 4


class _NotOwned(Exception):
    """The attempt no longer owned its step: leave the success transaction, rolling it back."""


class _Pooled(Exception):
    """The step still runs, but its success hands pool slots over: not for the one-round-trip
    success statement (which wrote nothing), for the general path."""


def _ref(row: Any) -> StepRef:
    return StepRef(row.run_id, row.step_key, row.attempt, row.queue, row.display_name, row.timeout)


class Storage(
    RunControl, InstigatorStorage, DynamicPartitionStorage, BackfillStorage, RunSearch, TokenStorage, AutomationStorage
):
    """Runs, steps, events and materializations in one SQL database."""

    def __init__(
        self, url: str, *, engine: Engine | None = None, pre_ping: bool = True, keep_connections: bool = False
    ) -> None:
        self.url = normalize_url(url)
        self.engine = engine or make_engine(self.url, pre_ping=pre_ping)
        self.dialect = make_url(self.url).get_backend_name()
        # A worker's claims and successes each on a connection its thread keeps (``KeptConnections``).
        self._kept = KeptConnections(self.engine) if keep_connections and self._pipelined else None

    def _run_pipelined(
        self, statements: Sequence[tuple[DriverStatement, Mapping[str, Any]]]
    ) -> list[list[SimpleNamespace]]:
        if self._kept is not None:
            return self._kept.run(statements)
        with self.engine.connect() as conn:
            return run_pipelined(conn, statements)

    @property
    def _pipelined(self) -> bool:
        """PostgreSQL through psycopg 3, whose pipeline mode sends a transaction in one round
        trip, or a single statement alone as its own transaction (``run_pipelined``)."""
        return self.engine.dialect.name == "postgresql" and self.engine.dialect.driver == "psycopg"

    @classmethod
    def open(
        cls, url: str, *, upgrade: bool | None = None, pre_ping: bool = True, keep_connections: bool = False
    ) -> Storage:
        """Open the database, checking that its schema is current.

        ``upgrade=None`` upgrades a SQLite database (the embedded default) automatically and
        asks for ``tidegate db upgrade`` elsewhere. ``pre_ping=False`` (workers, whose every
        write retries a lost connection) checks a pooled connection out without a round trip
        (``make_engine``). ``keep_connections`` (workers, whose threads live long): each thread
        claims and records its steps on a connection it keeps (``KeptConnections``).
        """
        storage = cls(url, pre_ping=pre_ping, keep_connections=keep_connections)
        if upgrade is None:
            upgrade = storage.dialect == "sqlite"
        current = migrate.current_revision(storage.engine)
        if current != migrate.head_revision():
            if not upgrade:
                raise StorageError(
                    f"database {storage.safe_url}: schema is at {current or 'nothing'}, this code "
                    f"needs {migrate.head_revision()}; run `tidegate db upgrade`"
                )
            migrate.upgrade(storage.engine)
        return storage

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def db_now(self) -> datetime:
        """The database's current time: the one clock every process compares against."""
        with self.engine.connect() as conn:
            return database_now(conn)

    def dispose(self) -> None:
        if self._kept is not None:
            self._kept.close()
        self.engine.dispose()

    # -- submission ------------------------------------------------------------------------

    def submit_run(
        self,
        plan: RunPlan,
        *,
        origin: str,
        run_key: str | None = None,
        tags: Mapping[str, str] | None = None,
        priority: int = 0,
        parent_run_id: str | None = None,
    ) -> SubmitResult:
        """Insert a QUEUED run and all its planned steps, in one transaction.

        ``UNIQUE(origin, run_key)`` makes a repeated request a no-op that returns the existing
        run (``created=False``). The run id is chosen once, before the first attempt: when a
        commit's acknowledgement is lost and the transaction is run again, the retry finds the
        run it committed and returns it (``created=True``) instead of creating a second one,
        with or without a run key. Instigators use ``submit_in`` to add their tick and cursor
        to the same transaction.
        """
        run_id = uuid.uuid4().hex
        return self._submit(
            run_id, plan, origin=origin, run_key=run_key, tags=tags, priority=priority, parent_run_id=parent_run_id
        )

    @retry_transient
    def _submit(self, run_id: str, plan: RunPlan, **kwargs: Any) -> SubmitResult:
        with self.engine.begin() as conn:
            return self.submit_in(conn, plan, run_id=run_id, **kwargs)

    def submit_in(
        self,
        conn: Connection,
        plan: RunPlan,
        *,
        origin: str,
        run_key: str | None = None,
        tags: Mapping[str, str] | None = None,
        priority: int = 0,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> SubmitResult:
        """``submit_run`` inside the caller's transaction (``run_id``: the id to insert, new
        if None; a run that already has it is returned as created by this call)."""
        run_id = run_id or uuid.uuid4().hex
        now = self._creation_time(conn)
        values = {
            "run_id": run_id,
            "job_name": plan.job_name,
            "status": RunStatus.QUEUED,
            "origin": origin,
            "run_key": run_key,
            "priority": priority,
            "tags": {**plan.tags, **(tags or {})},
            "asset_selection": list(plan.asset_selection) if plan.asset_selection else None,
            "parent_run_id": parent_run_id,
            "run_config": dict(plan.run_config) if plan.run_config else None,
            "steps_remaining": len(plan.steps),
            "created_at": now,
        }
        # No conflict target: both the run id (a retried submission) and (origin, run_key)
        # (a repeated request) make the insert a no-op.
        statement = dialect_insert(self.dialect)(runs).values(**values).on_conflict_do_nothing()
        if conn.execute(statement.returning(runs.c.run_id)).first() is None:
            if conn.execute(select(runs.c.run_id).where(runs.c.run_id == run_id)).first() is not None:
                return SubmitResult(run_id, created=True)  # committed by an attempt whose ack was lost
            existing = conn.execute(
                select(runs.c.run_id).where(runs.c.origin == origin, runs.c.run_key == run_key)
            ).scalar_one()
            return SubmitResult(existing, created=False)
        self._insert_steps(conn, run_id, plan.steps)
        self._append_events(conn, run_id, None, [NewEvent("RUN_QUEUED", f"origin {origin}")], now)
        return SubmitResult(run_id, created=True)

    @staticmethod
    def _insert_steps(conn: Connection, run_id: str, planned: Sequence[StepPlan]) -> None:
        """Insert PLANNED steps, each waiting for its upstream steps in the plan (one statement).

        The rows go to the driver as they are stored (``downstream`` as the JSON text the
        planner made, else encoded here), past SQLAlchemy's per-row parameter processing (a
        run of 4,000 steps cost the beat 0.26 s as an executemany of dicts): on psycopg by
        ``COPY``, on SQLite through the driver's ``executemany``."""
        if not planned:
            return
        status = StepStatus.PLANNED.value
        rows = [
            (
                run_id,
                s.step_key,
                s.asset_key,
                s.display_name,
                status,
                1,
                s.queue,
                s.downstream_json if s.downstream_json is not None else json.dumps(list(s.downstream)),
                len(s.upstream),
                s.pool,
                s.timeout,
            )
            for s in planned
        ]
        columns = "run_id, step_key, asset_key, display_name, status, attempt, queue, downstream, pending_upstream, "
        columns += "pool, timeout"
        if conn.dialect.driver == "psycopg":
            Storage._copy_in(conn, f"COPY steps ({columns}) FROM STDIN", rows)
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql(f"INSERT INTO steps ({columns}) VALUES ({', '.join('?' * len(rows[0]))})", rows)
        else:  # another driver: through SQLAlchemy, the JSON column encoded by it
            names = columns.split(", ")
            values: list[dict[str, Any]] = [dict(zip(names, row, strict=True)) for row in rows]
            for value, step in zip(values, planned, strict=True):
                value["downstream"] = list(step.downstream)
            conn.execute(insert(steps), values)

    @staticmethod
    def _copy_in(conn: Connection, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """``COPY ... FROM STDIN`` of ``rows`` on the psycopg connection under ``conn``, in its
        transaction. A failure is raised as an executed statement's would be: wrapped in
        SQLAlchemy's DBAPIError (which ``retry_transient`` reads), the connection invalidated
        when it was lost."""
        dbapi: Any = conn.dialect.loaded_dbapi
        driver: Any = conn.connection.driver_connection
        try:
            with driver.cursor() as cursor, cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        except dbapi.Error as exc:
            lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
            if lost:
                conn.invalidate()
            raise DBAPIError.instance(
                sql, None, exc, dbapi.Error, connection_invalidated=lost, dialect=conn.dialect
            ) from exc

    def _insert_ignore(self, table: Any, values: Mapping[str, Any], conflict: Sequence[str]) -> Any:
        return (
            dialect_insert(self.dialect)(table).values(**values).on_conflict_do_nothing(index_elements=list(conflict))
        )

    # -- starting runs and publishing steps ------------------------------------------------

    @retry_transient
    def start_run(self, run_id: str) -> list[StepRef]:
        """QUEUED -> STARTED and its root steps PLANNED -> READY, in one transaction.

        Returns the READY steps to publish; empty if the run was not QUEUED.

        PostgreSQL through psycopg, for a run with steps and no pooled root: one statement
        (``_start_statement``), its own transaction, in one round trip, the same writes,
        instead of six round trips between the run's wake-up in the launcher and its first
        step on the broker. Otherwise (nothing written by it) the general path below.
        """
        if self._pipelined:
            with self.engine.connect() as conn:
                (outcome,) = run_pipelined(conn, [(_start_statement(self.engine.dialect), {"b_run_id": run_id})])
            if outcome[0].started:
                return [_ref(r) for r in outcome if r.step_key is not None]
            if outcome[0].was_status != RunStatus.QUEUED:
                return []
        with self.engine.begin() as conn:
            now = database_now(conn)
            started = conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id, runs.c.status == RunStatus.QUEUED)
                .values(status=RunStatus.STARTED, started_at=now)
            ).rowcount
            if started != 1:
                return []
            rows = conn.execute(
                update(steps)
                .where(
                    steps.c.run_id == run_id,
                    steps.c.status == StepStatus.PLANNED,
                    steps.c.pending_upstream == 0,
                )
                .values(status=_READY_OR_WAITING, ready_at=now)
                .returning(*_REF, steps.c.status, steps.c.pool)
            ).all()
            ready = self._ready_refs(conn, rows, now)
            self._append_events(conn, run_id, None, [NewEvent("RUN_STARTED")], now)
            if not conn.execute(select(runs.c.steps_remaining).where(runs.c.run_id == run_id)).scalar():
                self._close_run(conn, run_id, now)  # a run with no steps
        return ready

    def queued_run_ids(self, limit: int | None = None) -> list[str]:
        """QUEUED runs, highest priority first, then oldest."""
        query = (
            select(runs.c.run_id)
            .where(runs.c.status == RunStatus.QUEUED)
            .order_by(runs.c.priority.desc(), runs.c.created_at, runs.c.run_id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def steps_to_publish(self, *, now: datetime | None = None, grace_seconds: float = 2.0) -> list[StepRef]:
        """READY steps nobody has published: first attempts READY for over ``grace_seconds``
        (their publisher died or the broker was down) and retries whose due time has come.

        Ages are judged by the database's clock (``now``, when given, stands for it)."""
        with self.engine.connect() as conn:
            now = now or database_now(conn)
            cutoff = now - timedelta(seconds=grace_seconds)
            query = select(*_REF).where(
                steps.c.status == StepStatus.READY,
                ((steps.c.attempt == 1) & (steps.c.ready_at <= cutoff))
                | ((steps.c.attempt > 1) & (steps.c.ready_at <= now)),
            )
            rows = conn.execute(query.order_by(steps.c.ready_at)).all()
        return [_ref(r) for r in rows]

    @retry_transient
    def mark_enqueued(self, refs: Iterable[StepRef]) -> None:
        """READY -> ENQUEUED for each attempt still READY, in one transaction (one UPDATE per
        run and attempt, so a fan-out of hundreds of children costs one statement)."""
        groups: dict[tuple[str, int], list[str]] = {}
        for ref in refs:
            groups.setdefault((ref.run_id, ref.attempt), []).append(ref.step_key)
        if not groups:
            return
        if self.dialect == "postgresql" and len(groups) == 1:
            # One statement, atomic by itself: no BEGIN and COMMIT round trips around it.
            with self.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                ((run_id, attempt), keys), *_ = groups.items()
                conn.execute(
                    update(steps)
                    .where(
                        steps.c.run_id == run_id,
                        steps.c.step_key.in_(keys),
                        steps.c.attempt == attempt,
                        steps.c.status == StepStatus.READY,
                    )
                    .values(status=StepStatus.ENQUEUED, enqueued_at=func.now())
                )
            return
        with self.engine.begin() as conn:
            # PostgreSQL's now() in the UPDATE itself: the transaction's time, one round trip less.
            now: Any = func.now() if self.dialect == "postgresql" else database_now(conn)
            for (run_id, attempt), keys in groups.items():
                conn.execute(
                    update(steps)
                    .where(
                        steps.c.run_id == run_id,
                        steps.c.step_key.in_(keys),
                        steps.c.attempt == attempt,
                        steps.c.status == StepStatus.READY,
                    )
                    .values(status=StepStatus.ENQUEUED, enqueued_at=now)
                )

    # -- executing steps -------------------------------------------------------------------

    @retry_transient
    def claim_step(self, run_id: str, step_key: str, attempt: int, worker: str) -> ClaimedStep | None:
        """Compare-and-set READY|ENQUEUED -> RUNNING for this attempt of a STARTED run.

        Returns None when the step is anything else (a duplicate delivery, an old attempt, a
        finished or canceled run): the caller must then do nothing.

        PostgreSQL: one statement (the compare-and-set, the run's row and the STEP_STARTED
        event in one ``UPDATE ... FROM runs`` with a data-modifying CTE), sent alone as its own
        transaction in one round trip (``run_pipelined``).

        The claim commits durably. A claim committed with ``synchronous_commit`` off was
        measured and dropped: a PostgreSQL crash in the next fraction of a second could lose
        it, and another worker could then claim the same attempt while this one still runs
        it; heartbeats and outcomes compare-and-set on (run, step, attempt, RUNNING), not on
        the worker, so both would pass as the owner.
        """
        if self._pipelined:
            params = self._claim_params(run_id, step_key, attempt, worker, None)
            dialect = self.engine.dialect
            (rows,) = self._run_pipelined([(_claim_driver_statement(dialect), params)])
            return self._claimed(rows[0] if rows else None, None)
        with self.engine.begin() as conn:
            now = None if self.dialect == "postgresql" else database_now(conn)
            return self._claim(conn, run_id, step_key, attempt, worker, now, None)

    def _claim(
        self,
        conn: Connection,
        run_id: str,
        step_key: str,
        attempt: int,
        worker: str,
        now: datetime | None,
        run: RunRecord | None,
        delivery: str | None = None,
    ) -> ClaimedStep | None:
        """The claim's compare-and-set, its STEP_STARTED event and the records it returns, in
        the caller's transaction; ``run``, when the caller has it, spares reading the run.
        ``now`` None stands for PostgreSQL's ``now()`` (the transaction's database time).
        ``delivery``: for a continuation, the broker task the step runs inside, recorded in
        the event (``continued_deliveries``) so that revoking the step can terminate it.

        PostgreSQL: one round trip, ``UPDATE steps ... FROM runs`` (the STARTED check and the
        run's row) whose RETURNING feeds the event's INSERT in the same statement, so the
        event exists exactly when the claim does. SQLite (its RETURNING cannot name the other
        table): the UPDATE, then the event, then the run's row if the caller has none."""
        if self.dialect == "postgresql":
            params = self._claim_params(run_id, step_key, attempt, worker, delivery)
            if now is not None:
                params["b_now"] = now
            return self._claimed(conn.execute(_claim_statement(now is not None), params).one_or_none(), run)
        message = f"attempt {attempt} on {worker}" + (f" (continuing task {delivery})" if delivery else "")
        data: dict[str, Any] = {"attempt": attempt, CONTINUED_IN: delivery} if delivery else {"attempt": attempt}
        assert now is not None
        owned = (*self._attempt(run_id, step_key, attempt), steps.c.status.in_([StepStatus.READY, StepStatus.ENQUEUED]))
        row = conn.execute(
            update(steps)
            .where(*owned, exists().where(runs.c.run_id == run_id, runs.c.status == RunStatus.STARTED))
            .values(status=StepStatus.RUNNING, worker=worker, started_at=now, heartbeat_at=now, ended_at=None)
            .returning(*steps.c)
        ).one_or_none()
        if row is None:
            return None
        step = from_row(StepRecord, row)
        self._append_events(conn, run_id, step_key, [NewEvent("STEP_STARTED", message, data)], now)
        if run is None:
            run = from_row(RunRecord, conn.execute(select(runs).where(runs.c.run_id == run_id)).one())
        return ClaimedStep(run, step)

    @staticmethod
    def _claim_params(run_id: str, step_key: str, attempt: int, worker: str, delivery: str | None) -> dict[str, Any]:
        """The parameters of ``_claim_statement`` (PostgreSQL) but ``b_now``."""
        message = f"attempt {attempt} on {worker}" + (f" (continuing task {delivery})" if delivery else "")
        data: dict[str, Any] = {"attempt": attempt, CONTINUED_IN: delivery} if delivery else {"attempt": attempt}
        return {
            "b_run_id": run_id,
            "b_step_key": step_key,
            "b_attempt": attempt,
            "b_worker": worker,
            "b_message": message,
            "b_data": data,
        }

    @staticmethod
    def _claimed(row: Any, run: RunRecord | None) -> ClaimedStep | None:
        """The claim of ``_claim_statement``'s row (None: no claim), with ``run`` or the row's
        ``run_<column>`` values."""
        if row is None:
            return None
        step = from_row(StepRecord, row)
        if run is None:
            run = from_row(RunRecord, SimpleNamespace(**{c.name: getattr(row, f"run_{c.name}") for c in runs.c}))
        return ClaimedStep(run, step)

    def continued_deliveries(self, refs: Sequence[StepRef]) -> dict[tuple[str, str, int], str]:
        """(run id, step key, attempt) -> the broker task it runs inside, for those of ``refs``
        that a worker claimed by continuation (one query): revoking such a step must terminate
        that task, since the step has no broker task of its own."""
        if not refs:
            return {}
        wanted = {(r.run_id, r.step_key, r.attempt) for r in refs}
        query = select(events.c.run_id, events.c.step_key, events.c.data).where(
            events.c.run_id.in_(sorted({r.run_id for r in refs})),
            events.c.step_key.in_(sorted({r.step_key for r in refs})),
            events.c.event_type == "STEP_STARTED",
        )
        found: dict[tuple[str, str, int], str] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                data = row.data or {}
                key = (row.run_id, row.step_key, data.get("attempt"))
                if key in wanted and isinstance(data.get(CONTINUED_IN), str):
                    found[key] = data[CONTINUED_IN]  # type: ignore[index]
        return found

    @retry_transient
    def heartbeat(self, run_id: str, step_key: str, attempt: int) -> bool:
        """Record that this attempt is alive (at the database's time, which the run monitor
        judges by); False if it no longer owns the step. PostgreSQL: one statement with
        ``now()`` in it, outside an explicit transaction (atomic by itself)."""
        if self.dialect == "postgresql":
            with self.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                beat = update(steps).where(
                    *self._attempt(run_id, step_key, attempt), steps.c.status == StepStatus.RUNNING
                )
                return conn.execute(beat.values(heartbeat_at=func.now())).rowcount == 1
        with self.engine.begin() as conn:
            now = database_now(conn)
            return (
                conn.execute(
                    update(steps)
                    .where(*self._attempt(run_id, step_key, attempt), steps.c.status == StepStatus.RUNNING)
                    .values(heartbeat_at=now)
                ).rowcount
                == 1
            )

    @retry_transient
    def complete_step(
        self,
        run_id: str,
        step_key: str,
        attempt: int,
        *,
        asset_key: str,
        metadata: Mapping[str, Any] | None,
        events_: Sequence[NewEvent] = (),
        partition_keys: Sequence[str] = (),
        materializations_: Sequence[NewMaterialization] = (),
        planned: Sequence[StepPlan] = (),
        more_upstream: Mapping[str, int] | None = None,
        skip: Sequence[str] = (),
        skip_reason: str = "",
        downstream: Sequence[str] | None = None,
    ) -> list[StepRef] | None:
        """Record success, in one transaction: see ``complete_step_and_claim``, which this is
        without claiming a child. Returns the children to publish, or None if this attempt no
        longer owned the step (nothing is written)."""
        done = self._complete_step(
            run_id,
            step_key,
            attempt,
            asset_key=asset_key,
            metadata=metadata,
            events_=events_,
            partition_keys=partition_keys,
            materializations_=materializations_,
            planned=planned,
            more_upstream=more_upstream,
            skip=skip,
            skip_reason=skip_reason,
            downstream=downstream,
        )
        return None if done is None else done[0]

    @retry_transient
    def complete_step_and_claim(
        self,
        run_id: str,
        step_key: str,
        attempt: int,
        *,
        continuation: Continuation,
        delivery: str | None = None,
        **outcome: Any,
    ) -> tuple[list[StepRef], ClaimedStep | None] | None:
        """``complete_step`` (``outcome`` its keyword arguments) that also claims, in the same
        transaction, one child it made READY on ``continuation.queue`` (one this worker
        serves) with no timeout, for ``continuation.worker`` to run next in-process instead of
        publishing it: the same compare-and-set as ``claim_step``, so the child runs once.
        A child in a full pool is WAITING, never READY, so it is not claimed.

        ``delivery``: the id of the broker task this runs inside, recorded with the child's
        claim (its STEP_STARTED event) so that a revoke of the child terminates that task.

        Returns the children still to publish and the claimed child (None if none fits), or
        None if this attempt no longer owned the step."""
        return self._complete_step(run_id, step_key, attempt, continuation=continuation, delivery=delivery, **outcome)

    def _complete_step(
        self,
        run_id: str,
        step_key: str,
        attempt: int,
        *,
        continuation: Continuation | None = None,
        delivery: str | None = None,
        asset_key: str,
        metadata: Mapping[str, Any] | None,
        events_: Sequence[NewEvent] = (),
        partition_keys: Sequence[str] = (),
        materializations_: Sequence[NewMaterialization] = (),
        planned: Sequence[StepPlan] = (),
        more_upstream: Mapping[str, int] | None = None,
        skip: Sequence[str] = (),
        skip_reason: str = "",
        downstream: Sequence[str] | None = None,
    ) -> tuple[list[StepRef], ClaimedStep | None] | None:
        """Record success, in one transaction: the materialization (unless ``metadata`` is
        None; one per partition of ``partition_keys``) and the partitions' status, those the
        asset reported itself (``materializations_``), the events,
        RUNNING -> SUCCEEDED, each child's pending-upstream counter minus one (children reaching
        0 become READY) and, for the last step, the run's end.

        Op steps also plan, in the same transaction, the steps of a dynamic output
        (``planned``: inserted, those with no upstream left READY at once), raise the counters
        of the steps that collect them (``more_upstream``: step key -> how many more to wait
        for) and skip the consumers of optional outputs not emitted (``skip``, with their
        descendants).

        Returns the children to publish, or None if this attempt no longer owned the step
        (its outcome was already recorded, or it was given up as dead): nothing is written.
        The run row is locked first (the module's lock order).

        PostgreSQL through psycopg, for an asset step (nothing planned or skipped, no reported
        materializations) with no pool: one round trip, the same writes
        (``_complete_asset_step_pg``). ``downstream``: the step's children as its claim read
        them (its row's ``downstream``, which never changes), if the caller has them: with one
        child, that child is found by its key in the steps' unique index, whatever the
        planner's statistics say (see ``_success_statement``); the row's own list still decides.
        """
        if (
            self._pipelined
            and not planned
            and not more_upstream
            and not skip
            and not materializations_
            and len(events_) <= _FAST_EVENTS
            and len(partition_keys) <= _FAST_PARTITIONS
        ):
            try:
                return self._complete_asset_step_pg(
                    run_id,
                    step_key,
                    attempt,
                    continuation=continuation,
                    delivery=delivery,
                    asset_key=asset_key,
                    metadata=metadata,
                    events_=events_,
                    partition_keys=partition_keys,
                    downstream=downstream,
                )
            except _NotOwned:
                return None  # nothing written
            except _Pooled:
                pass  # nothing written: the general path below hands pool slots over
        with self.engine.begin() as conn:
            now = self._lock_run_now(conn, run_id)
            done = conn.execute(
                update(steps)
                .where(*self._attempt(run_id, step_key, attempt), steps.c.status == StepStatus.RUNNING)
                .values(status=StepStatus.SUCCEEDED, ended_at=now, error=None)
                .returning(steps.c.downstream, steps.c.pool)
            ).one_or_none()
            if done is None:
                return None
            new_events = list(events_)
            if metadata is not None:
                conn.execute(
                    insert(materializations),
                    [
                        dict(
                            asset_key=asset_key,
                            partition_key=key,
                            run_id=run_id,
                            step_key=step_key,
                            metadata=dict(metadata),
                            timestamp=now,
                        )
                        for key in (list[str | None](partition_keys) or [None])
                    ],
                )
                self._set_partition_status(conn, asset_key, partition_keys, PartitionStatus.MATERIALIZED, run_id, now)
                new_events.append(NewEvent("ASSET_MATERIALIZATION", asset_key, {"metadata": dict(metadata)}))
            new_events += self._insert_reported_materializations(conn, run_id, step_key, materializations_, now)
            new_events.append(NewEvent("STEP_SUCCESS", None, {"attempt": attempt}))
            self._append_events(conn, run_id, step_key, new_events, now)
            ready = self._plan_more(conn, run_id, planned, more_upstream or {}, now)
            skipped = self._skip(conn, run_id, skip, skip_reason, now, include_start=True) if skip else 0
            ready += self._release_children(conn, run_id, list(done.downstream or ()), now)
            if done.pool is not None:
                ready += self._fill_pools(conn, {done.pool}, now)  # hand the slot over
            self._finish_steps(conn, run_id, 1 + skipped, now)
            claimed = None
            if continuation is not None:
                claimed, ready = self._claim_child(conn, continuation, ready, now, delivery)
        return ready, claimed

    def _complete_asset_step_pg(
        self,
        run_id: str,
        step_key: str,
        attempt: int,
        *,
        continuation: Continuation | None,
        delivery: str | None,
        asset_key: str,
        metadata: Mapping[str, Any] | None,
        events_: Sequence[NewEvent],
        partition_keys: Sequence[str],
        downstream: Sequence[str] | None = None,
    ) -> tuple[list[StepRef], ClaimedStep | None]:
        """``_complete_step`` of an asset step on PostgreSQL: one transaction of three
        statements sent together in one round trip (``run_pipelined``: one pipeline, one
        implicit transaction; each built once per shape and bound per call,
        ``_success_statement``):

        1. lock the run's row (the module's lock order: the run before its steps);
        2. RUNNING -> SUCCEEDED (the compare-and-set) and, through data-modifying CTEs that
           act only if it matched: the run's counter minus one, the materializations, the
           partitions' status, the events, each child's counter minus one (those reaching 0
           READY) and, for a continuation of a STARTED run, one child that becomes READY with
           no pool, no timeout, on the continuation's queue made RUNNING for its worker at
           once, with its STEP_STARTED event;
        3. the run's end, if the counter reached 0 (it reads what 2 wrote).

        The run's row is locked from the first statement to the transaction's commit with no
        client round trip in between, so completions of one run queue there for one
        transaction's time.

        A step that holds a pool slot, or has a child in a pool, needs pools handed over
        (``_fill_pools``, reading and deciding in Python): the compare-and-set does not match
        it, and this raises ``_Pooled`` (nothing written) for the general path. Raises
        ``_NotOwned`` (nothing written) if this attempt no longer owned the step."""
        new_events = list(events_)
        if metadata is not None:
            new_events.append(NewEvent("ASSET_MATERIALIZATION", asset_key, {"metadata": dict(metadata)}))
        new_events.append(NewEvent("STEP_SUCCESS", None, {"attempt": attempt}))
        made = (list[str | None](partition_keys) or [None]) if metadata is not None else []
        runs_next = continuation is not None and continuation.run.run_id == run_id
        params: dict[str, Any] = {
            "b_run_id": run_id,
            "b_step_key": step_key,
            "b_attempt": attempt,
            "b_asset_key": asset_key,
            "b_metadata": dict(metadata) if metadata is not None else None,
        }
        for i, key in enumerate(made):
            params[f"b_partition_{i}"] = key
        for i, key in enumerate(partition_keys):
            params[f"b_status_partition_{i}"] = key
        for i, e in enumerate(new_events):
            params[f"b_type_{i}"] = e.event_type
            params[f"b_message_{i}"] = e.message
            params[f"b_data_{i}"] = dict(e.data) if e.data is not None else None
        if runs_next:
            assert continuation is not None
            params["b_queue"] = continuation.queue
            params["b_worker"] = continuation.worker
            params["b_started_message"] = f"attempt 1 on {continuation.worker}" + (
                f" (continuing task {delivery})" if delivery else ""
            )
            params["b_started_data"] = {"attempt": 1, CONTINUED_IN: delivery} if delivery else {"attempt": 1}
        only_child = downstream is not None and len(downstream) == 1
        if only_child:
            params["b_only_child"] = next(iter(downstream or ()))
        dialect = self.engine.dialect
        statement = _success_statement(len(made), len(new_events), runs_next, len(partition_keys), only_child, dialect)
        by_run = {"b_run_id": run_id}
        _, rows, _ = self._run_pipelined(
            [(_lock_run_statement(dialect), by_run), (statement, params), (_close_statement(dialect), by_run)]
        )
        outcome = rows[0]
        if not outcome.owned:
            raise _Pooled if outcome.was_status == StepStatus.RUNNING else _NotOwned
        mine = [r for r in rows if r.step_key is not None]
        ready = [_ref(r) for r in mine if r.status == StepStatus.READY]
        running = [from_row(StepRecord, r) for r in mine if r.status == StepStatus.RUNNING]
        claimed = ClaimedStep(continuation.run, running[0]) if continuation is not None and running else None
        return ready, claimed

    def _claim_child(
        self,
        conn: Connection,
        continuation: Continuation,
        ready: list[StepRef],
        now: datetime,
        delivery: str | None = None,
    ) -> tuple[ClaimedStep | None, list[StepRef]]:
        """Claim the first of ``ready`` that ``continuation`` may run (its run and queue, no
        timeout); returns it and the others."""
        for i, ref in enumerate(ready):
            run = continuation.run
            if ref.run_id != run.run_id or ref.queue != continuation.queue or ref.timeout is not None:
                continue  # another run's step (a pool slot handed over), another queue, a time limit
            claimed = self._claim(conn, ref.run_id, ref.step_key, ref.attempt, continuation.worker, now, run, delivery)
            if claimed is not None:
                return claimed, ready[:i] + ready[i + 1 :]
        return None, ready

    def _plan_more(
        self,
        conn: Connection,
        run_id: str,
        planned: Sequence[StepPlan],
        more_upstream: Mapping[str, int],
        now: datetime,
    ) -> list[StepRef]:
        """Insert steps planned while the run goes (a dynamic output's mapped steps) and count
        them in the run; raise collecting steps' counters. Returns the new steps made READY."""
        for key, count in sorted(more_upstream.items()):
            if count:
                conn.execute(
                    update(steps)
                    .where(steps.c.run_id == run_id, steps.c.step_key == key, steps.c.status == StepStatus.PLANNED)
                    .values(pending_upstream=steps.c.pending_upstream + count)
                )
        if not planned:
            return []
        self._insert_steps(conn, run_id, planned)
        conn.execute(
            update(runs).where(runs.c.run_id == run_id).values(steps_remaining=runs.c.steps_remaining + len(planned))
        )
        roots = [p.step_key for p in planned if not p.upstream]
        if not roots:
            return []
        rows = conn.execute(
            update(steps)
            .where(steps.c.run_id == run_id, steps.c.step_key.in_(roots), steps.c.status == StepStatus.PLANNED)
            .values(status=_READY_OR_WAITING, ready_at=now)
            .returning(*_REF, steps.c.status, steps.c.pool)
        ).all()
        return self._ready_refs(conn, rows, now)

    @retry_transient
    def fail_step(
        self,
        run_id: str,
        step_key: str,
        attempt: int,
        *,
        error: str,
        retry_delay: float | None,
        events_: Sequence[NewEvent] = (),
        asset_key: str | None = None,
        partition_keys: Sequence[str] | None = None,
    ) -> list[StepRef] | None:
        """Record a failed attempt, in one transaction (a final failure of a partitioned step
        also marks its ``partition_keys`` of ``asset_key`` FAILED; None: the run's partition).

        With ``retry_delay`` (seconds): the step becomes READY again as attempt + 1, due that
        long after now by the database's clock; returned for publishing now if already due.
        Without: RUNNING -> FAILED, every PLANNED descendant -> SKIPPED, and the run ends if
        nothing else is left. The run row is locked first (the module's lock order).
        Returns None if this attempt no longer owned the step.
        """
        with self.engine.begin() as conn:
            now = self._lock_run_now(conn, run_id)
            owned = self._attempt(run_id, step_key, attempt)
            if retry_delay is not None:
                retry_at = now + timedelta(seconds=retry_delay)
                row = conn.execute(
                    update(steps)
                    .where(*owned, steps.c.status == StepStatus.RUNNING)
                    .values(
                        status=StepStatus.READY,
                        attempt=attempt + 1,
                        ready_at=retry_at,
                        error=error,
                        worker=None,
                        ended_at=now,
                    )
                    .returning(*_REF)
                ).one_or_none()
                if row is None:
                    return None
                retry_event = NewEvent(
                    "STEP_UP_FOR_RETRY",
                    error.strip().splitlines()[-1] if error.strip() else None,
                    {"attempt": attempt, "retry_at": retry_at.isoformat(), "error": error},
                )
                self._append_events(conn, run_id, step_key, [*events_, retry_event], now)
                due = retry_at <= now
                return [_ref(row)] if due else []
            row = conn.execute(
                update(steps)
                .where(*owned, steps.c.status == StepStatus.RUNNING)
                .values(status=StepStatus.FAILED, ended_at=now, error=error)
                .returning(steps.c.pool)
            ).one_or_none()
            if row is None:
                return None
            failure = NewEvent(
                "STEP_FAILURE", error.strip().splitlines()[-1] if error.strip() else None, {"error": error}
            )
            self._append_events(conn, run_id, step_key, [*events_, failure], now)
            if partition_keys is None:  # e.g. failed by the run monitor: the run's own partition, if any
                tags = conn.execute(select(runs.c.tags).where(runs.c.run_id == run_id)).scalar() or {}
                partition_keys = [tags[PARTITION_TAG]] if PARTITION_TAG in tags else []
            if partition_keys:
                asset_key = asset_key or conn.execute(select(steps.c.asset_key).where(*owned).limit(1)).scalar_one()
                self._set_partition_status(conn, asset_key, partition_keys, PartitionStatus.FAILED, run_id, now)
            skipped = self._skip_descendants(conn, run_id, step_key, now)
            handed_over = self._fill_pools(conn, {row.pool}, now) if row.pool is not None else []
            self._finish_steps(conn, run_id, 1 + skipped, now)
        return handed_over

    # -- external assets -------------------------------------------------------------------

    @retry_transient
    def report_materialization(
        self, asset_key: str, *, partition_key: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> MaterializationRecord:
        """Record a materialization made outside tidegate (an external asset's producer), in one
        transaction: the materialization, the partition's status and an ASSET_MATERIALIZATION
        event, all with the empty run id (Dagster's runless events), so asset sensors, event-log
        cursors and `tidegate assets list` see it like one a step recorded. ``metadata`` may
        hold MetadataValue objects (stored tagged, see tidegate.definitions.metadata)."""
        stored = json.loads(json.dumps(dict(metadata or {}), default=metadata_json_default))  # MetadataValue: tagged
        with self.engine.begin() as conn:
            now = database_now(conn)
            row = conn.execute(
                insert(materializations)
                .values(
                    asset_key=asset_key,
                    partition_key=partition_key,
                    run_id=RUNLESS_RUN_ID,
                    step_key="",
                    metadata=stored,
                    timestamp=now,
                )
                .returning(*materializations.c)
            ).one()
            partitions = [partition_key] if partition_key is not None else []
            self._set_partition_status(conn, asset_key, partitions, PartitionStatus.MATERIALIZED, RUNLESS_RUN_ID, now)
            data = {"metadata": stored, "partition_key": partition_key, "reported": True}
            self._append_events(conn, RUNLESS_RUN_ID, None, [NewEvent("ASSET_MATERIALIZATION", asset_key, data)], now)
        return from_row(MaterializationRecord, row)

    # -- reading ---------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)).one_or_none()
        if row is None:
            raise RunNotFoundError(f"run '{run_id}': not found")
        return from_row(RunRecord, row)

    def find_run_id(self, prefix: str) -> str:
        """Resolve a run id or a unique prefix of one (as printed by the CLI)."""
        with self.engine.connect() as conn:
            found = list(conn.execute(select(runs.c.run_id).where(runs.c.run_id.startswith(prefix)).limit(2)).scalars())
        if len(found) != 1:
            raise RunNotFoundError(f"run '{prefix}': {'not found' if not found else 'ambiguous prefix'}")
        return str(found[0])

    def list_runs(self, *, status: str | None = None, limit: int = 50) -> list[RunRecord]:
        query = select(runs).order_by(runs.c.created_at.desc(), runs.c.run_id).limit(limit)
        if status:
            query = query.where(runs.c.status == status)
        with self.engine.connect() as conn:
            return [from_row(RunRecord, r) for r in conn.execute(query)]

    def get_steps(self, run_id: str) -> list[StepRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(steps).where(steps.c.run_id == run_id).order_by(steps.c.id)).all()
        return [from_row(StepRecord, r) for r in rows]

    def step_events(self, run_ids: Sequence[str], step_key: str, event_type: str) -> list[EventRecord]:
        """Events of one type of ``step_key`` in any of ``run_ids`` (a run and its parents), oldest first."""
        query = (
            select(events)
            .where(events.c.run_id.in_(list(run_ids)), events.c.step_key == step_key, events.c.event_type == event_type)
            .order_by(events.c.id)
        )
        with self.engine.connect() as conn:
            return [from_row(EventRecord, r) for r in conn.execute(query)]

    def get_events(
        self, run_id: str, *, after_id: int = 0, limit: int | None = None, step_key: str | None = None
    ) -> list[EventRecord]:
        """A run's events in id order (of one step with ``step_key``), after ``after_id``."""
        query = select(events).where(events.c.run_id == run_id, events.c.id > after_id).order_by(events.c.id)
        if step_key is not None:
            query = query.where(events.c.step_key == step_key)
        query = query.limit(limit)
        with self.engine.connect() as conn:
            return [from_row(EventRecord, r) for r in conn.execute(query)]

    def get_materializations(
        self, asset_key: str | None = None, *, after_id: int = 0, limit: int | None = None
    ) -> list[MaterializationRecord]:
        """Materializations in id order; ``after_id`` makes the id usable as a cursor."""
        query = select(materializations).where(materializations.c.id > after_id).order_by(materializations.c.id)
        if asset_key is not None:
            query = query.where(materializations.c.asset_key == asset_key)
        with self.engine.connect() as conn:
            return [from_row(MaterializationRecord, r) for r in conn.execute(query.limit(limit))]

    def latest_materializations(self) -> dict[str, MaterializationRecord]:
        """The newest materialization of every asset key."""
        newest = select(func.max(materializations.c.id).label("id")).group_by(materializations.c.asset_key).subquery()
        query = select(materializations).join(newest, materializations.c.id == newest.c.id)
        with self.engine.connect() as conn:
            return {r.asset_key: from_row(MaterializationRecord, r) for r in conn.execute(query)}

    def partition_status_counts(self) -> dict[str, dict[str, int]]:
        """asset key -> {MATERIALIZED: n, FAILED: m}: each partition counted by its latest outcome."""
        query = select(asset_partitions.c.asset_key, asset_partitions.c.status, func.count()).group_by(
            asset_partitions.c.asset_key, asset_partitions.c.status
        )
        counts: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for asset_key, status, count in conn.execute(query):
                counts.setdefault(asset_key, {})[status] = count
        return counts

    def partitions_with_status(self, asset_key: str, status: str = PartitionStatus.MATERIALIZED) -> set[str]:
        """The partitions of ``asset_key`` whose latest outcome is ``status``, in one query."""
        query = select(asset_partitions.c.partition_key).where(
            asset_partitions.c.asset_key == asset_key, asset_partitions.c.status == status
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def partition_statuses(self, asset_key: str) -> dict[str, tuple[str, datetime, str]]:
        """partition key -> (MATERIALIZED | FAILED, when, run id) of its latest outcome."""
        query = select(
            asset_partitions.c.partition_key,
            asset_partitions.c.status,
            asset_partitions.c.updated_at,
            asset_partitions.c.run_id,
        ).where(asset_partitions.c.asset_key == asset_key)
        with self.engine.connect() as conn:
            return {
                row.partition_key: (
                    row.status,
                    row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC),
                    row.run_id,
                )
                for row in conn.execute(query)
            }

    # -- internals -------------------------------------------------------------------------

    def _set_partition_status(
        self, conn: Connection, asset_key: str, keys: Sequence[str], status: str, run_id: str, now: datetime
    ) -> None:
        if not keys:
            return
        statement = dialect_insert(self.dialect)(asset_partitions)
        statement = statement.on_conflict_do_update(
            index_elements=["asset_key", "partition_key"],
            set_={"status": statement.excluded.status, "run_id": statement.excluded.run_id, "updated_at": now},
        )
        rows = [dict(asset_key=asset_key, partition_key=k, status=status, run_id=run_id, updated_at=now) for k in keys]
        conn.execute(statement, rows)

    def _insert_reported_materializations(
        self, conn: Connection, run_id: str, step_key: str, reported: Sequence[NewMaterialization], now: datetime
    ) -> list[NewEvent]:
        """Insert materializations an asset reported itself; returns their events to append."""
        new_events = []
        for m in reported:
            conn.execute(
                insert(materializations).values(
                    asset_key=m.asset_key,
                    partition_key=m.partition_key,
                    run_id=run_id,
                    step_key=step_key,
                    metadata=dict(m.metadata),
                    timestamp=now,
                )
            )
            if m.partition_key is not None:
                self._set_partition_status(
                    conn, m.asset_key, [m.partition_key], PartitionStatus.MATERIALIZED, run_id, now
                )
            data = {"metadata": dict(m.metadata), "partition": m.partition_key, "description": m.description}
            new_events.append(NewEvent("ASSET_MATERIALIZATION", m.asset_key, data))
        return new_events

    @staticmethod
    def _creation_time(conn: Connection) -> datetime:
        """The database's time, but later than every run created before: runs submitted
        within one clock tick (SQLite's clock counts milliseconds; PostgreSQL's ``now()`` is
        one instant per transaction, e.g. a sensor tick requesting several runs) keep their
        submission order, which the run queue's "oldest first" follows."""
        now = database_now(conn)
        latest: datetime | None = conn.execute(select(func.max(runs.c.created_at))).scalar()  # an index lookup
        if latest is not None:
            latest = latest if latest.tzinfo else latest.replace(tzinfo=UTC)
            if latest >= now:
                return latest + timedelta(microseconds=1)
        return now

    def _lock_run_now(self, conn: Connection, run_id: str) -> datetime:
        """``_lock_run`` that also reads the transaction's ``database_now`` with the run's row."""
        row = conn.execute(
            select(runs.c.run_id, now_column(self.dialect)).where(runs.c.run_id == run_id).with_for_update()
        ).first()
        return database_now(conn) if row is None else as_database_now(row[1])

    @staticmethod
    def _lock_run(conn: Connection, run_id: str) -> None:
        """Lock the run's row before any of its steps (PostgreSQL ``FOR UPDATE``; SQLite's
        write lock is held already), so no transaction holds a step and waits for the run
        while another holds the run and waits for that step."""
        conn.execute(select(runs.c.run_id).where(runs.c.run_id == run_id).with_for_update())

    @staticmethod
    def _attempt(run_id: str, step_key: str, attempt: int) -> tuple[Any, ...]:
        return (steps.c.run_id == run_id, steps.c.step_key == step_key, steps.c.attempt == attempt)

    def _release_children(self, conn: Connection, run_id: str, children: list[str], now: datetime) -> list[StepRef]:
        if not children:
            return []
        becomes_ready = and_(steps.c.pending_upstream == 1, steps.c.status == StepStatus.PLANNED)
        rows = conn.execute(
            update(steps)
            .where(steps.c.run_id == run_id, steps.c.step_key.in_(children))
            .values(
                pending_upstream=steps.c.pending_upstream - 1,
                status=case((becomes_ready, _READY_OR_WAITING), else_=steps.c.status),
                ready_at=case((becomes_ready, now), else_=steps.c.ready_at),
            )
            .returning(*_REF, steps.c.status, steps.c.pool)
        ).all()
        # A child can only be READY or WAITING here if this update made it so.
        return self._ready_refs(conn, rows, now)

    def _ready_refs(self, conn: Connection, rows: Sequence[Any], now: datetime) -> list[StepRef]:
        """Refs of the rows that became READY, plus those of pools that got a free slot."""
        ready = [_ref(r) for r in rows if r.status == StepStatus.READY]
        waiting_pools = {r.pool for r in rows if r.status == StepStatus.WAITING}
        return ready + self._fill_pools(conn, waiting_pools, now) if waiting_pools else ready

    def _fill_pools(self, conn: Connection, names: set[str], now: datetime) -> list[StepRef]:
        """WAITING -> READY, oldest first, while each pool has free slots.

        The pool's row is locked first (PostgreSQL ``FOR UPDATE``; SQLite's write lock is
        already held), so two transactions cannot both see the last slot free. A pool with no
        configured limit has no limit.
        """
        promoted: list[StepRef] = []
        for name in sorted(names):
            slots_query = select(pools.c.slots).where(pools.c.name == name)
            if self.dialect == "postgresql":
                slots_query = slots_query.with_for_update()
            slots = conn.execute(slots_query).scalar()
            waiting = select(steps.c.id).where(steps.c.pool == name, steps.c.status == StepStatus.WAITING)
            if slots is not None:
                active = conn.execute(
                    select(func.count()).where(steps.c.pool == name, steps.c.status.in_(_HOLDS_SLOT))
                ).scalar_one()
                free = slots - active
                if free <= 0:
                    continue
                waiting = waiting.order_by(steps.c.ready_at, steps.c.id).limit(free)
            ids = list(conn.execute(waiting).scalars())
            if ids:
                rows = conn.execute(
                    update(steps)
                    .where(steps.c.id.in_(ids), steps.c.status == StepStatus.WAITING)
                    .values(status=StepStatus.READY, ready_at=now)
                    .returning(*_REF)
                ).all()
                promoted += [_ref(r) for r in rows]
        return promoted

    def _skip_descendants(self, conn: Connection, run_id: str, step_key: str, now: datetime) -> int:
        return self._skip(conn, run_id, [step_key], f"upstream '{step_key}' failed", now, include_start=False)

    def _skip(
        self, conn: Connection, run_id: str, start: Sequence[str], reason: str, now: datetime, *, include_start: bool
    ) -> int:
        """PLANNED descendants of ``start`` (and ``start`` itself if ``include_start``) ->
        SKIPPED, with an event each saying ``reason``; returns how many."""
        rows = conn.execute(select(steps.c.step_key, steps.c.downstream).where(steps.c.run_id == run_id)).all()
        graph = {r.step_key: r.downstream for r in rows}
        found: set[str] = set(start) if include_start else set()
        frontier = [d for key in start for d in graph.get(key) or ()]
        while frontier:
            key = frontier.pop()
            if key not in found:
                found.add(key)
                frontier.extend(graph.get(key) or ())
        if not found:
            return 0
        skipped = (
            conn.execute(
                update(steps)
                .where(
                    steps.c.run_id == run_id, steps.c.step_key.in_(sorted(found)), steps.c.status == StepStatus.PLANNED
                )
                .values(status=StepStatus.SKIPPED, ended_at=now)
                .returning(steps.c.step_key)
            )
            .scalars()
            .all()
        )
        self._append_events(
            conn,
            run_id,
            None,
            [NewEvent("STEP_SKIPPED", reason, {"step_key": k}) for k in skipped],
            now,
        )
        return len(skipped)

    def _finish_steps(self, conn: Connection, run_id: str, count: int, now: datetime) -> None:
        """Count ``count`` steps as terminal; the transaction that reaches 0 closes the run.

        The UPDATE takes the run row's lock, so completions of one run's steps serialize here
        and exactly one of them sees 0, after every other step's outcome has committed.
        """
        remaining = conn.execute(
            update(runs)
            .where(runs.c.run_id == run_id)
            .values(steps_remaining=runs.c.steps_remaining - count)
            .returning(runs.c.steps_remaining)
        ).scalar_one()
        if remaining == 0:
            self._close_run(conn, run_id, now)

    def _close_run(self, conn: Connection, run_id: str, now: datetime) -> None:
        # A step skipped because an optional output was not emitted fails nothing; one skipped
        # because its upstream failed comes with that FAILED step.
        failed = conn.execute(
            select(func.count()).where(
                steps.c.run_id == run_id, steps.c.status.not_in([StepStatus.SUCCEEDED, StepStatus.SKIPPED])
            )
        ).scalar_one()
        status = RunStatus.FAILURE if failed else RunStatus.SUCCESS
        conn.execute(
            update(runs)
            .where(runs.c.run_id == run_id, runs.c.status == RunStatus.STARTED)
            .values(status=status, ended_at=now)
        )
        self._append_events(conn, run_id, None, [NewEvent(f"RUN_{status}")], now)

    @staticmethod
    def _append_events(
        conn: Connection, run_id: str, step_key: str | None, new: Sequence[NewEvent], now: datetime
    ) -> None:
        if not new:
            return
        conn.execute(
            insert(events),
            [
                {
                    "run_id": run_id,
                    "step_key": step_key if step_key is not None else (e.data or {}).get("step_key"),
                    "event_type": e.event_type,
                    "timestamp": now,
                    "message": e.message,
                    "data": dict(e.data) if e.data is not None else None,
                }
                for e in new
            ],
        )


# -- statements built once -------------------------------------------------------------------
# SQLAlchemy builds and keys a statement in Python on every call (for a CTE of many parts that
# is most of a step's CPU in the worker); these are built (and, for ``run_pipelined``, compiled)
# once from bind parameters, so a call only binds values (and psycopg prepares them after a few
# uses).


@functools.lru_cache(maxsize=4)
def _lock_run_statement(dialect: Any) -> DriverStatement:
    """Statement 1 of ``Storage._complete_asset_step_pg``: lock the run's row."""
    return DriverStatement(
        select(runs.c.run_id).where(runs.c.run_id == bindparam("b_run_id", type_=String())).with_for_update(),
        dialect,
    )


@functools.lru_cache(maxsize=4)
def _start_statement(dialect: Any) -> DriverStatement:
    """``Storage.start_run`` in one statement (parameter b_run_id), for a QUEUED run with
    steps and no pooled root (a pooled root needs ``_fill_pools``, a run without steps its
    end): the run QUEUED -> STARTED, its roots PLANNED -> READY and RUN_STARTED, each only if
    the run's compare-and-set matched, all at the transaction's ``now()``. Returns
    ``started`` (1 if it matched), ``was_status`` (the run's status in the statement's
    snapshot: QUEUED with ``started`` 0, it is for the general path) and each READY root's
    ``_REF`` columns."""
    run_id = bindparam("b_run_id", type_=String())
    root = steps.alias("root")
    pooled_root = exists().where(
        root.c.run_id == run_id,
        root.c.status == StepStatus.PLANNED,
        root.c.pending_upstream == 0,
        root.c.pool.is_not(None),
    )
    started = (
        update(runs)
        .where(runs.c.run_id == run_id, runs.c.status == RunStatus.QUEUED, runs.c.steps_remaining > 0, ~pooled_root)
        .values(status=RunStatus.STARTED, started_at=func.now())
        .returning(runs.c.run_id)
        .cte("started")
    )
    readied = (
        update(steps)
        .where(
            steps.c.run_id == run_id,
            steps.c.status == StepStatus.PLANNED,
            steps.c.pending_upstream == 0,
            exists(select(literal(1)).select_from(started)),
        )
        .values(status=StepStatus.READY, ready_at=func.now())
        .returning(*_REF)
        .cte("readied")
    )
    logged = (
        insert(events)
        .from_select(
            ["run_id", "step_key", "event_type", "timestamp", "message", "data"],
            select(started.c.run_id, null(), literal("RUN_STARTED", String()), func.now(), null(), null()),
        )
        .cte("logged")
    )
    was = select(runs.c.status).where(runs.c.run_id == run_id).scalar_subquery()
    outcome = select(func.count().label("started"), was.label("was_status")).select_from(started).subquery("outcome")
    statement = (
        select(outcome.c.started, outcome.c.was_status, *readied.c)
        .select_from(outcome.outerjoin(readied, true()))
        .add_cte(logged)
    )
    return DriverStatement(statement, dialect)


@functools.lru_cache(maxsize=4)
def _close_statement(dialect: Any) -> DriverStatement:
    """Statement 3 of ``Storage._complete_asset_step_pg``: ``Storage._close_run`` in SQL, for
    a STARTED run whose counter is 0 (the statement before made it so; a run whose counter
    reached 0 is ended in that transaction, so no other STARTED run has 0)."""
    run_id = bindparam("b_run_id", type_=String())
    unsuccessful = exists().where(
        steps.c.run_id == run_id,
        steps.c.status != StepStatus.SUCCEEDED,
        steps.c.status != StepStatus.SKIPPED,
    )
    closed = (
        update(runs)
        .where(runs.c.run_id == run_id, runs.c.status == RunStatus.STARTED, runs.c.steps_remaining == 0)
        .values(status=case((unsuccessful, RunStatus.FAILURE), else_=RunStatus.SUCCESS), ended_at=func.now())
        .returning(runs.c.run_id, runs.c.status)
        .cte("closed")
    )
    ended = insert(events).from_select(
        ["run_id", "step_key", "event_type", "timestamp", "message", "data"],
        select(
            closed.c.run_id,
            null(),
            literal("RUN_", String()) + closed.c.status,
            func.now(),
            null(),
            null(),
        ),
    )
    return DriverStatement(ended.add_cte(closed), dialect)


def _keys(query: Any) -> Any:
    """``ARRAY(query)``: compared with ``= ANY``, the keys are the index's lookups, where
    ``IN (query)`` may be planned as a scan of every step of the run, joined."""
    return func.array(query.scalar_subquery(), type_=ARRAY(String()))


@functools.lru_cache(maxsize=512)
def _success_statement(
    materialized: int, logged: int, runs_next: bool, partitioned: int, only_child: bool, dialect: Any
) -> Any:
    """Statement 2 of ``Storage._complete_asset_step_pg`` for ``materialized`` partition rows
    (0: no materialization), ``logged`` events, ``partitioned`` partitions' status and, with
    ``runs_next``, the continuation's claim of one child (if the run is STARTED). Parameters
    (b_ and): run_id, step_key, attempt, asset_key, metadata, partition_<i>,
    status_partition_<i>, type_<i>, message_<i>, data_<i>; with ``runs_next`` queue, worker,
    started_message, started_data; with ``only_child`` only_child. The time is the
    transaction's ``now()``.

    The children are the keys of the step's ``downstream`` (read in SQL, from the row the
    compare-and-set matched), compared with ``= ANY(ARRAY(...))``. PostgreSQL takes such a
    comparison into the (run_id, step_key) index's lookup only when its statistics say that a
    run has many steps; without them (a table never analyzed, as after a TRUNCATE with
    autovacuum off, or lagging behind a fast-growing table) it reads every step of the run
    and filters, per success: quadratic in a fan-out's width (a 400-wide fan-out read 402
    rows, 189 buffers, per step). ``only_child`` (the caller knows the step has exactly one
    child, ``b_only_child``, from its claim; a chain's or a fan-out's middle step) adds
    ``step_key = b_only_child``: an equality on both columns of the unique index, one row
    whatever the statistics; the ``downstream`` comparison stays, so the row's own list still
    decides what is released.

    Returns ``owned`` (1 if the compare-and-set matched), ``was_status`` (the attempt's status
    when the statement began: RUNNING with ``owned`` 0, it has a pool to hand over),
    ``done_pool`` and each released child's row."""
    now: Any = func.now()
    run_id = bindparam("b_run_id", type_=String())
    step_key = bindparam("b_step_key", type_=String())
    attempt = bindparam("b_attempt", type_=Integer())
    only = (bindparam("b_only_child", type_=String()),) if only_child else ()
    child = steps.alias("child")
    pooled_child = exists().where(
        child.c.run_id == run_id,
        *(child.c.step_key == key for key in only),
        child.c.pool.is_not(None),
        child.c.step_key == any_(_keys(select(func.json_array_elements_text(steps.c.downstream)).correlate(steps))),
    )
    done = (
        update(steps)
        .where(
            steps.c.run_id == run_id,
            steps.c.step_key == step_key,
            steps.c.attempt == attempt,
            # Both as ``(...) IS TRUE`` (the same truth: neither side is ever NULL), which
            # no index can answer: without statistics the planner costs every index at about
            # one row, and with a few hundred dead rows it chose the status index (walking
            # its RUNNING entries: every step run since the last vacuum) or the pool index
            # (every unpooled step) over the unique key. Now only the unique key can find it.
            (steps.c.status == StepStatus.RUNNING).is_(true()),
            steps.c.pool.is_(None).is_(true()),
            ~pooled_child,
        )
        .values(status=StepStatus.SUCCEEDED, ended_at=now, error=None)
        .returning(steps.c.downstream, steps.c.pool)
        .cte("done")
    )
    writes: list[Any] = [
        update(runs)
        .where(runs.c.run_id == run_id, exists(select(literal(1)).select_from(done)))
        .values(steps_remaining=runs.c.steps_remaining - 1)
        .returning(runs.c.steps_remaining)
        .cte("counted")
    ]
    if materialized:
        made: list[Any] = [
            select(
                bindparam("b_asset_key", type_=String()),
                bindparam(f"b_partition_{i}", type_=String()),
                run_id,
                step_key,
                bindparam("b_metadata", type_=JSON()),
                now,
            ).select_from(done)
            for i in range(materialized)
        ]
        writes.append(
            insert(materializations)
            .from_select(
                ["asset_key", "partition_key", "run_id", "step_key", "metadata", "timestamp"],
                made[0] if len(made) == 1 else union_all(*made),
            )
            .cte("materialized")
        )
    if partitioned:
        statuses: list[Any] = [
            select(
                bindparam("b_asset_key", type_=String()),
                bindparam(f"b_status_partition_{i}", type_=String()),
                literal(PartitionStatus.MATERIALIZED, String()),
                run_id,
                now,
            ).select_from(done)
            for i in range(partitioned)
        ]
        upsert = postgresql.insert(asset_partitions).from_select(
            ["asset_key", "partition_key", "status", "run_id", "updated_at"],
            statuses[0] if len(statuses) == 1 else union_all(*statuses),
        )
        upsert = upsert.on_conflict_do_update(
            index_elements=["asset_key", "partition_key"],
            set_={"status": upsert.excluded.status, "run_id": upsert.excluded.run_id, "updated_at": now},
        )
        writes.append(upsert.cte("partitioned"))
    events_rows: list[Any] = [
        select(
            run_id,
            step_key,
            bindparam(f"b_type_{i}", type_=String()),
            now,
            bindparam(f"b_message_{i}", type_=Text()),
            bindparam(f"b_data_{i}", type_=JSON()),
        ).select_from(done)
        for i in range(logged)
    ]
    writes.append(
        insert(events)
        .from_select(
            ["run_id", "step_key", "event_type", "timestamp", "message", "data"],
            events_rows[0] if len(events_rows) == 1 else union_all(*events_rows),
        )
        .cte("logged")
    )
    # The children: none unless the compare-and-set matched (they come from its row).
    children = any_(_keys(select(func.json_array_elements_text(done.c.downstream)).select_from(done)))
    becomes_ready = and_(steps.c.pending_upstream == 1, steps.c.status == StepStatus.PLANNED)
    status: Any = case((becomes_ready, _READY_OR_WAITING), else_=steps.c.status)
    values: dict[str, Any] = {
        "pending_upstream": steps.c.pending_upstream - 1,
        "ready_at": case((becomes_ready, now), else_=steps.c.ready_at),
    }
    if runs_next:
        # The one child to run next here, if the run goes on: of those this release readies
        # (read before it, under the run's lock), the first by key with no pool, no timeout,
        # on the queue.
        pick = (
            select(func.min(steps.c.step_key).label("step_key"))
            .where(
                steps.c.run_id == run_id,
                *(steps.c.step_key == key for key in only),
                steps.c.step_key == children,
                becomes_ready,
                steps.c.attempt == 1,
                steps.c.pool.is_(None),
                steps.c.timeout.is_(None),
                steps.c.queue == bindparam("b_queue", type_=String()),
                exists().where(runs.c.run_id == run_id, runs.c.status == RunStatus.STARTED),
            )
            .cte("pick")
        )
        runs_here = and_(becomes_ready, steps.c.step_key == select(pick.c.step_key).scalar_subquery())
        status = case((runs_here, StepStatus.RUNNING), else_=status)
        values.update(
            worker=case((runs_here, bindparam("b_worker", type_=String())), else_=steps.c.worker),
            started_at=case((runs_here, now), else_=steps.c.started_at),
            heartbeat_at=case((runs_here, now), else_=steps.c.heartbeat_at),
        )
    released = (
        update(steps)
        .where(steps.c.run_id == run_id, *(steps.c.step_key == key for key in only), steps.c.step_key == children)
        .values(status=status, **values)
        .returning(*steps.c)
        .cte("released")
    )
    if runs_next:
        writes.append(
            insert(events)
            .from_select(
                ["run_id", "step_key", "event_type", "timestamp", "message", "data"],
                select(
                    released.c.run_id,
                    released.c.step_key,
                    literal("STEP_STARTED", String()),
                    now,
                    bindparam("b_started_message", type_=Text()),
                    bindparam("b_started_data", type_=JSON()),
                ).where(released.c.status == StepStatus.RUNNING),
            )
            .cte("started_event")
        )
    # The attempt's status in the statement's snapshot, before ``done`` wrote (no status in
    # the condition: the step's unique index finds it, not the status index's RUNNING entries).
    was = (
        select(steps.c.status)
        .where(steps.c.run_id == run_id, steps.c.step_key == step_key, steps.c.attempt == attempt)
        .scalar_subquery()
    )
    outcome = select(
        func.count().label("owned"), func.max(done.c.pool).label("done_pool"), was.label("was_status")
    ).subquery("outcome")
    statement = (
        select(outcome.c.owned, outcome.c.was_status, outcome.c.done_pool, *released.c)
        .select_from(outcome.outerjoin(released, true()))
        .add_cte(*writes)
    )
    return DriverStatement(statement, dialect)


@functools.lru_cache(maxsize=4)
def _claim_driver_statement(dialect: Any) -> DriverStatement:
    return DriverStatement(_claim_statement(False), dialect)


@functools.cache
def _claim_statement(with_now: bool) -> Any:
    """``Storage._claim``'s one statement on PostgreSQL: the compare-and-set joined with the
    STARTED run (its row returned, labelled ``run_<column>``) and the STEP_STARTED event
    inserted from what it returns. Parameters (b_ and): run_id, step_key, attempt, worker,
    message, data, and with ``with_now`` now (else the transaction's ``now()``)."""
    stamp: Any = bindparam("b_now", type_=DateTime(timezone=True)) if with_now else func.now()
    claimed = (
        update(steps)
        .where(
            steps.c.run_id == bindparam("b_run_id", type_=String()),
            steps.c.step_key == bindparam("b_step_key", type_=String()),
            steps.c.attempt == bindparam("b_attempt"),
            # Two comparisons, not IN (...): an IN list is an expanding parameter, which
            # SQLAlchemy renders into the SQL again on every call.
            (steps.c.status == StepStatus.READY) | (steps.c.status == StepStatus.ENQUEUED),
            runs.c.run_id == steps.c.run_id,
            runs.c.status == RunStatus.STARTED,
        )
        .values(
            status=StepStatus.RUNNING,
            worker=bindparam("b_worker", type_=String()),
            started_at=stamp,
            heartbeat_at=stamp,
            ended_at=None,
        )
        .returning(*steps.c, *(c.label(f"run_{c.name}") for c in runs.c))
        .cte("claimed")
    )
    event = (
        insert(events)
        .from_select(
            ["run_id", "step_key", "event_type", "timestamp", "message", "data"],
            select(
                claimed.c.run_id,
                claimed.c.step_key,
                literal("STEP_STARTED", String()),
                claimed.c.started_at,
                bindparam("b_message", type_=Text()),
                bindparam("b_data", type_=JSON()),
            ),
        )
        .cte("started_event")
    )
    return select(claimed).add_cte(event)
