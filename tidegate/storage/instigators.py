"""Storage of schedule and sensor state, tick history and the beat's leader lease.

Mixed into :class:`tidegate.storage.api.Storage`; every method says what it does in one
transaction.

Two clocks meet here. Schedule time (``now`` and ``tick_time`` arguments: ``running_since``,
``last_tick_at``, ``next_tick_at``, tick times) is the beat's clock, which tests step. What
other processes compare is the database's clock: ``updated_at`` (the beat reloads rows changed
since its last look, e.g. a schedule stopped from the CLI on another host) and lease expiry.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, case, delete, select, update

from tidegate.definitions.job import RunPlan
from tidegate.names import InstigatorStatus, TickStatus
from tidegate.storage.control import pending_from_row, pending_select
from tidegate.storage.engine import database_now, dialect_insert
from tidegate.storage.schema import instigators, leases, ticks

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tidegate.storage.automation import CursorEntriesWrite, EvaluationWrite
    from tidegate.storage.control import PendingWork
    from tidegate.storage.records import SubmitResult

# A tick records the cursor it set as is up to this many characters; a longer one is stored once,
# on the instigator row, and the tick keeps a preview with its length and hash (see tick_cursor).
TICK_CURSOR_CHARACTERS = 1024
_PREVIEW_CHARACTERS = 200
# Between two batches of a large tick on SQLite: its other writers (the beat's other ticks, the run
# queue) poll for the write lock with sleeps of up to 100 ms; without a pause the committing
# thread would take the lock back at once and starve them.
BATCH_PAUSE_SECONDS = 0.1


@dataclass(frozen=True)
class InstigatorState:
    name: str
    kind: str
    status: str | None  # None: the definition's default_status applies
    cursor: str | None
    version: int
    cron: str | None
    running_since: datetime | None
    last_tick_at: datetime | None
    next_tick_at: datetime | None
    last_run_key: str | None
    updated_at: datetime


@dataclass(frozen=True)
class TickRecord:
    id: int
    instigator: str
    kind: str
    tick_time: datetime
    status: str
    run_ids: tuple[str, ...]
    new_run_keys: tuple[str, ...]
    skipped_run_keys: tuple[str, ...]
    skip_reason: str | None
    error: str | None
    cursor: str | None  # the cursor this tick set, as tick_cursor() records it (a preview if long)
    started_at: datetime
    ended_at: datetime


@dataclass(frozen=True)
class PlannedRun:
    """One run a tick requests, already planned against the definitions."""

    plan: RunPlan
    run_key: str | None
    tags: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0


@dataclass(frozen=True)
class TickOutcome:
    """What a tick decided; committed as a whole by ``commit_tick``."""

    status: str
    runs: Sequence[PlannedRun] = ()
    skip_reason: str | None = None
    error: str | None = None
    cursor_set: bool = False
    cursor: str | None = None
    dynamic_partitions_requests: Sequence[Any] = ()  # applied before the runs, in the same transaction
    automation: AutomationWrites | None = None  # an automation tick's backfills and evaluation records


@dataclass(frozen=True)
class PlannedBackfill:
    """A backfill an automation tick requests (many partitions of one asset)."""

    job_name: str
    partition_keys: Sequence[str]
    tags: Mapping[str, str]


@dataclass(frozen=True)
class AutomationWrites:
    """What an automation tick writes besides its runs, in the same transaction: backfills and
    the evaluation records (which name the runs and backfills of their asset)."""

    sensor: str
    evaluated_at: datetime
    backfills: Sequence[PlannedBackfill] = ()
    evaluations: Sequence[EvaluationWrite] = ()
    cursor_entries: CursorEntriesWrite | None = None  # the cursor's per-asset entries that changed
    # digest -> template JSON: the templates the records name that may not be stored yet
    templates: Mapping[str, str] = field(default_factory=dict)


class _TickTaken(Exception):
    """This tick time was committed already: roll the whole transaction back."""


@dataclass
class _Submitted:
    """What the runs of one tick did so far, across its batches."""

    run_ids: list[str] = field(default_factory=list)
    every_run: list[str] = field(default_factory=list)  # per planned run, created or not: its run id
    new_keys: list[str] = field(default_factory=list)
    skipped_keys: list[str] = field(default_factory=list)


def tick_cursor(cursor: str) -> str:
    """What a tick records of the cursor it set: the cursor itself if short, else a preview
    with its length and SHA-256, so that a tick row stays small however large the cursor (the
    cursor itself lives once, on the instigator row)."""
    if len(cursor) <= TICK_CURSOR_CHARACTERS:
        return cursor
    digest = hashlib.sha256(cursor.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{cursor[:_PREVIEW_CHARACTERS]}... [{len(cursor):,} characters, sha256 {digest}]"


class InstigatorStorage:
    if TYPE_CHECKING:  # provided by Storage, which mixes this class in
        engine: Engine
        dialect: str

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
        ) -> SubmitResult: ...

        def add_dynamic_partitions_in(self, conn: Connection, name: str, keys: Sequence[str]) -> list[str]: ...

        def pending_work_in(
            self, conn: Connection, *, failed_since: datetime | None = None, lease: str | None = None
        ) -> PendingWork: ...

        def delete_dynamic_partitions_in(self, conn: Connection, name: str, keys: Sequence[str]) -> int: ...

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
        ) -> str: ...

        def insert_automation_evaluations_in(
            self,
            conn: Connection,
            *,
            sensor: str,
            tick_id: int,
            evaluated_at: datetime,
            writes: Sequence[EvaluationWrite],
            run_ids: Sequence[str],
            backfill_ids: Sequence[str],
        ) -> None: ...

        def write_automation_cursor_in(self, conn: Connection, sensor: str, write: CursorEntriesWrite) -> None: ...

        def insert_automation_templates_in(self, conn: Connection, templates: Mapping[str, str]) -> None: ...

    """The instigator half of the storage API (a mixin of Storage)."""

    def get_instigator(self, name: str) -> InstigatorState | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(instigators).where(instigators.c.name == name)).one_or_none()
        return _state(row) if row is not None else None

    def instigator_states(self, *, changed_after: datetime | None = None) -> dict[str, InstigatorState]:
        """All states, or only those changed after ``changed_after`` (the beat's cheap refresh;
        a time of the database's clock, e.g. ``db_now()`` read before the previous refresh)."""
        query = select(instigators)
        if changed_after is not None:
            query = query.where(instigators.c.updated_at > changed_after)
        with self.engine.connect() as conn:
            return {r.name: _state(r) for r in conn.execute(query)}

    def _ensure_instigator(self, conn: Connection, name: str, kind: str, changed_at: datetime) -> None:
        conn.execute(
            dialect_insert(self.dialect)(instigators)
            .values(name=name, kind=kind, version=0, updated_at=changed_at)
            .on_conflict_do_nothing(index_elements=["name"])
        )

    def set_instigator_status(self, name: str, kind: str, status: str, now: datetime) -> None:
        """Start or stop a schedule or sensor, in one transaction. Starting sets
        ``running_since`` (``now``, schedule time) so no tick from before the start is ever
        run; ``updated_at`` is the database's time, so every beat sees the change."""
        with self.engine.begin() as conn:
            changed_at = database_now(conn)
            self._ensure_instigator(conn, name, kind, changed_at)
            values: dict[str, Any] = {"status": status, "updated_at": changed_at, "version": instigators.c.version + 1}
            if status == InstigatorStatus.RUNNING:
                current = conn.execute(select(instigators.c.status).where(instigators.c.name == name)).scalar()
                if current != InstigatorStatus.RUNNING:
                    values.update(running_since=now, next_tick_at=None)
                    if kind == "schedule":
                        values["last_tick_at"] = now  # no tick from before the start
            conn.execute(update(instigators).where(instigators.c.name == name).values(**values))

    def initialize_instigator(self, name: str, kind: str, now: datetime) -> InstigatorState:
        """Create the row of an instigator running by default (first seen by a beat at ``now``)."""
        with self.engine.begin() as conn:
            changed_at = database_now(conn)
            self._ensure_instigator(conn, name, kind, changed_at)
            values: dict[str, Any] = {"running_since": now, "updated_at": changed_at}
            if kind == "schedule":
                values["last_tick_at"] = now  # no tick from before the first start
            conn.execute(
                update(instigators)
                .where(instigators.c.name == name, instigators.c.running_since.is_(None))
                .values(**values)
            )
            row = conn.execute(select(instigators).where(instigators.c.name == name)).one()
        return _state(row)

    def initialize_instigators(self, items: Sequence[tuple[str, str]], now: datetime) -> dict[str, InstigatorState]:
        """``initialize_instigator`` for many (name, kind) pairs in ONE transaction (a beat's
        first tick on a database that has never seen its schedules)."""
        if not items:
            return {}
        with self.engine.begin() as conn:
            changed_at = database_now(conn)
            for name, kind in items:
                self._ensure_instigator(conn, name, kind, changed_at)
            for kind in ("schedule", "sensor"):
                names = [n for n, k in items if k == kind]
                if not names:
                    continue
                values: dict[str, Any] = {"running_since": now, "updated_at": changed_at}
                if kind == "schedule":
                    values["last_tick_at"] = now
                conn.execute(
                    update(instigators)
                    .where(instigators.c.name.in_(names), instigators.c.running_since.is_(None))
                    .values(**values)
                )
            rows = conn.execute(select(instigators).where(instigators.c.name.in_([n for n, _ in items]))).all()
        return {r.name: _state(r) for r in rows}

    def set_cursor(self, name: str, kind: str, cursor: str | None) -> None:
        """Replace a sensor's cursor (operator action), in one transaction; bumps the version
        so a tick evaluated against the old cursor cannot commit."""
        with self.engine.begin() as conn:
            changed_at = database_now(conn)
            self._ensure_instigator(conn, name, kind, changed_at)
            conn.execute(
                update(instigators)
                .where(instigators.c.name == name)
                .values(cursor=cursor, version=instigators.c.version + 1, updated_at=changed_at)
            )

    def commit_tick(
        self,
        name: str,
        kind: str,
        *,
        expected_version: int,
        tick_time: datetime,
        started_at: datetime,
        outcome: TickOutcome,
        origin: str,
        next_tick_at: datetime | None,
        cron: str | None = None,
        batch_size: int | None = None,
    ) -> TickRecord | None:
        """Commit a tick in ONE transaction: the instigator's new cursor and times
        (compare-and-set on ``expected_version``), the tick record and every requested run.

        Returns None, committing nothing, when the version moved (another beat committed
        this tick, or an operator reset the cursor) or the tick time was recorded already.
        A run key already used by this instigator creates no run; it is listed as skipped.

        With ``batch_size``, a tick of more runs than that, every one with a run key, commits
        in batches so that no transaction holds the database for long: each batch but the last
        is ONE transaction of its runs (and, in the first, the dynamic partitions requests),
        checked against ``expected_version`` without moving it; the last batch is ONE
        transaction with the cursor, the tick record (listing the runs of every batch) and its
        runs. The cursor thus moves only once every run exists: a crash (or a cursor reset)
        between batches leaves the cursor where it was, the sensor is evaluated again from it,
        and the run keys already committed create nothing (UNIQUE(origin, run_key)), so no run
        is lost or created twice. Runs without a run key could not be matched that way: a tick
        with any such run commits in one transaction, whatever its size.
        """
        runs = list(outcome.runs)
        done = _Submitted()
        partitions_applied = False
        batched = outcome.automation is None  # an automation tick is ONE transaction, whatever its size
        if batched and batch_size is not None and len(runs) > batch_size and all(r.run_key is not None for r in runs):
            *early, last = [runs[i : i + batch_size] for i in range(0, len(runs), batch_size)]
            pause = BATCH_PAUSE_SECONDS if self.dialect == "sqlite" else 0.0  # PostgreSQL locks rows only
            for number, batch in enumerate(early):
                if number:
                    time.sleep(pause)
                if not self._commit_batch(name, expected_version, origin, batch, done, outcome, first=number == 0):
                    return None
            partitions_applied = True
            time.sleep(pause)
            runs = last
        try:
            return self._commit_tick(
                name,
                kind,
                expected_version,
                tick_time,
                started_at,
                outcome,
                origin,
                next_tick_at,
                cron,
                runs=runs,
                done=done,
                apply_partitions=not partitions_applied,
            )
        except _TickTaken:
            return None

    def _commit_batch(
        self,
        name: str,
        expected_version: int,
        origin: str,
        batch: Sequence[PlannedRun],
        done: _Submitted,
        outcome: TickOutcome,
        *,
        first: bool,
    ) -> bool:
        """One batch of a large tick's runs in ONE transaction, if the instigator's version is
        still ``expected_version`` (the row is locked on PostgreSQL, so no cursor reset
        interleaves); False, committing nothing, if it moved."""
        with self.engine.begin() as conn:
            held = conn.execute(
                update(instigators)
                .where(instigators.c.name == name, instigators.c.version == expected_version)
                .values(version=instigators.c.version)
            ).rowcount
            if held != 1:
                return False
            if first:
                self._apply_partitions(conn, outcome)
            added = _Submitted()
            self._submit_runs(conn, origin, batch, added)
        done.run_ids += added.run_ids  # only once committed
        done.new_keys += added.new_keys
        done.skipped_keys += added.skipped_keys
        return True

    def _apply_partitions(self, conn: Connection, outcome: TickOutcome) -> None:
        for request in outcome.dynamic_partitions_requests:
            keys = list(request.partition_keys)
            if type(request).__name__ == "AddDynamicPartitionsRequest":
                self.add_dynamic_partitions_in(conn, request.partitions_def_name, keys)
            else:
                self.delete_dynamic_partitions_in(conn, request.partitions_def_name, keys)

    def _submit_runs(self, conn: Connection, origin: str, batch: Sequence[PlannedRun], done: _Submitted) -> None:
        for run in batch:
            result = self.submit_in(
                conn, run.plan, origin=origin, run_key=run.run_key, tags=run.tags, priority=run.priority
            )
            done.every_run.append(result.run_id)
            if result.created:
                done.run_ids.append(result.run_id)
                if run.run_key is not None:
                    done.new_keys.append(run.run_key)
            elif run.run_key is not None:
                done.skipped_keys.append(run.run_key)

    def _commit_tick(
        self,
        name: str,
        kind: str,
        expected_version: int,
        tick_time: datetime,
        started_at: datetime,
        outcome: TickOutcome,
        origin: str,
        next_tick_at: datetime | None,
        cron: str | None,
        *,
        runs: Sequence[PlannedRun],
        done: _Submitted,
        apply_partitions: bool,
    ) -> TickRecord | None:
        with self.engine.begin() as conn:
            values: dict[str, Any] = {
                "version": expected_version + 1,
                "last_tick_at": tick_time,
                "next_tick_at": next_tick_at,
                "updated_at": database_now(conn),
            }
            if cron is not None:
                values["cron"] = cron
            if outcome.cursor_set:
                # Written only when it changed: an unchanged large cursor is not stored again.
                values["cursor"] = case(
                    (instigators.c.cursor.is_not_distinct_from(outcome.cursor), instigators.c.cursor),
                    else_=outcome.cursor,
                )
            moved = conn.execute(
                update(instigators)
                .where(instigators.c.name == name, instigators.c.version == expected_version)
                .values(**values)
            ).rowcount
            if moved != 1:
                return None
            tick_id = conn.execute(
                dialect_insert(self.dialect)(ticks)
                .values(
                    instigator=name,
                    kind=kind,
                    tick_time=tick_time,
                    status=outcome.status,
                    run_ids=[],
                    new_run_keys=[],
                    skipped_run_keys=[],
                    started_at=started_at,
                    ended_at=started_at,
                )
                .on_conflict_do_nothing(index_elements=["instigator", "tick_time"])
                .returning(ticks.c.id)
            ).scalar()
            if tick_id is None:
                raise _TickTaken
            if apply_partitions:
                self._apply_partitions(conn, outcome)
            last = _Submitted()
            self._submit_runs(conn, origin, runs, last)
            if outcome.automation is not None:
                self._commit_automation(conn, tick_id, outcome.automation, [*done.every_run, *last.every_run])
            run_ids = [*done.run_ids, *last.run_ids]
            new_keys = [*done.new_keys, *last.new_keys]
            skipped_keys = [*done.skipped_keys, *last.skipped_keys]
            status = outcome.status
            launched = bool(outcome.automation is not None and outcome.automation.backfills)
            if (
                status == TickStatus.SUCCESS
                and not run_ids
                and not outcome.dynamic_partitions_requests
                and not launched
            ):
                status = TickStatus.SKIPPED
            skip_reason = outcome.skip_reason
            if status == TickStatus.SKIPPED and skip_reason is None and skipped_keys:
                skip_reason = f"every run key was used before ({len(skipped_keys)})"
            conn.execute(
                update(ticks)
                .where(ticks.c.id == tick_id)
                .values(
                    status=status,
                    run_ids=run_ids,
                    new_run_keys=new_keys,
                    skipped_run_keys=skipped_keys,
                    skip_reason=skip_reason,
                    error=outcome.error,
                    cursor=tick_cursor(outcome.cursor) if outcome.cursor_set and outcome.cursor is not None else None,
                    ended_at=datetime.now(UTC),
                )
            )
            if new_keys:
                conn.execute(update(instigators).where(instigators.c.name == name).values(last_run_key=new_keys[-1]))
            row = conn.execute(select(ticks).where(ticks.c.id == tick_id)).one()
        return _tick(row)

    def _commit_automation(self, conn: Connection, tick_id: int, writes: AutomationWrites, run_ids: list[str]) -> None:
        """An automation tick's backfills and evaluation records, in the tick's transaction."""
        backfill_ids = [
            self.create_backfill_in(conn, b.job_name, b.partition_keys, tags=b.tags) for b in writes.backfills
        ]
        self.insert_automation_templates_in(conn, writes.templates)
        self.insert_automation_evaluations_in(
            conn,
            sensor=writes.sensor,
            tick_id=tick_id,
            evaluated_at=writes.evaluated_at,
            writes=writes.evaluations,
            run_ids=run_ids,
            backfill_ids=backfill_ids,
        )
        if writes.cursor_entries is not None:
            self.write_automation_cursor_in(conn, writes.sensor, writes.cursor_entries)

    def get_ticks(
        self, name: str, *, limit: int = 20, status: str | None = None, before_id: int | None = None
    ) -> list[TickRecord]:
        """Newest first; ``before_id`` (a tick's id) continues a listing after that tick."""
        query = select(ticks).where(ticks.c.instigator == name).order_by(ticks.c.id.desc()).limit(limit)
        if status:
            query = query.where(ticks.c.status == status)
        if before_id is not None:
            query = query.where(ticks.c.id < before_id)
        with self.engine.connect() as conn:
            return [_tick(r) for r in conn.execute(query)]

    def purge_ticks(self, *, status: str, before: datetime) -> int:
        """Delete ticks of ``status`` that started before ``before`` (retention of SKIPPED
        ticks), in one transaction. ``started_at`` is the beat's clock, as is ``before``."""
        with self.engine.begin() as conn:
            return conn.execute(delete(ticks).where(ticks.c.status == status, ticks.c.started_at < before)).rowcount

    def acquire_lease(self, name: str, holder: str, *, ttl_seconds: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` unless another holder's lease is
        still valid; one statement, so two contenders cannot both win. Expiry is set and
        judged by the database's clock, so two beats whose hosts disagree on the time still
        agree on who leads."""
        with self.engine.begin() as conn:
            return self._take_lease(conn, name, holder, database_now(conn), ttl_seconds)

    def beat_round(
        self,
        lease: str,
        holder: str,
        *,
        ttl_seconds: float,
        changed_after: datetime | None,
        failed_since: datetime | None = None,
        renew_after: datetime | None = None,
    ) -> BeatRound:
        """The beat's look at the start of each round, on one connection in one transaction:
        the :class:`PendingWork` flags (with the database's time), the lease, and, if this
        holder leads, the instigator rows changed after ``changed_after`` (all if None).

        The lease is taken or renewed (as ``acquire_lease``) unless the flags' statement read
        that ``holder`` holds it and the database's time is before ``renew_after``: a time the
        caller derived from the expiry of its own last renewal, so the lease is still valid
        without writing. An idle round of the leader is then one statement, the flags joined
        with the changed rows, and no write (no commit to flush).

        On PostgreSQL each statement commits on its own (autocommit: no BEGIN and COMMIT round
        trips); the lease's upsert is one statement either way, and the instigator rows are read
        after the time, so a change committed meanwhile is read again at the next round."""
        with self._round_connection() as conn:
            changed: dict[str, InstigatorState] | None = None
            if renew_after is not None and changed_after is not None:
                # the leader, as at most rounds: the flags and the changed rows in one statement
                flags = pending_select(self.dialect, failed_since, lease).subquery("flags")
                rows = conn.execute(
                    select(flags, instigators).select_from(
                        flags.outerjoin(instigators, instigators.c.updated_at > changed_after)
                    )
                ).all()
                work = pending_from_row(rows[0])
                changed = {r.name: _state(r) for r in rows if r.name is not None}
                if work.lease_holder == holder and work.now < renew_after:
                    return BeatRound(True, work.now, changed, work)
            else:
                work = self.pending_work_in(conn, failed_since=failed_since, lease=lease)
            now = work.now
            if not self._take_lease(conn, lease, holder, now, ttl_seconds):
                return BeatRound(False, now)
            expires = now + timedelta(seconds=ttl_seconds)
            if changed is None:
                query = select(instigators)
                if changed_after is not None:
                    query = query.where(instigators.c.updated_at > changed_after)  # ix_instigators_updated_at
                changed = {r.name: _state(r) for r in conn.execute(query)}
        return BeatRound(True, now, changed, work, expires)

    def _round_connection(self) -> Any:
        """A context manager giving the connection of one beat round: autocommit on PostgreSQL,
        a transaction on SQLite (whose engine begins each with BEGIN IMMEDIATE itself)."""
        if self.dialect == "postgresql":
            return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self.engine.begin()

    def _take_lease(self, conn: Connection, name: str, holder: str, now: datetime, ttl_seconds: float) -> bool:
        """One upsert that only takes or renews a lease that is ``holder``'s or expired: a row
        comes back exactly when ``holder`` holds it now (so two contenders cannot both win)."""
        expires = now + timedelta(seconds=ttl_seconds)
        statement = dialect_insert(self.dialect)(leases).values(name=name, holder=holder, expires_at=expires)
        statement = statement.on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": holder, "expires_at": expires},
            where=(leases.c.holder == holder) | (leases.c.expires_at <= now),
        )
        return conn.execute(statement.returning(leases.c.holder)).first() is not None

    def release_lease(self, name: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))


@dataclass(frozen=True)
class BeatRound:
    """What ``beat_round`` read: whether this beat leads, the database's time, the changed
    instigator rows and the pending work."""

    leader: bool
    now: datetime  # the database's time, read before the rows
    changed: dict[str, InstigatorState] = field(default_factory=dict)
    pending: PendingWork | None = None
    lease_expires: datetime | None = None  # when this round renewed the lease: its new expiry


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _state(row: Any) -> InstigatorState:
    return InstigatorState(
        name=row.name,
        kind=row.kind,
        status=row.status,
        cursor=row.cursor,
        version=row.version,
        cron=row.cron,
        running_since=_aware(row.running_since),
        last_tick_at=_aware(row.last_tick_at),
        next_tick_at=_aware(row.next_tick_at),
        last_run_key=row.last_run_key,
        updated_at=_aware(row.updated_at),  # type: ignore[arg-type]
    )


def _tick(row: Any) -> TickRecord:
    return TickRecord(
        id=row.id,
        instigator=row.instigator,
        kind=row.kind,
        tick_time=_aware(row.tick_time),  # type: ignore[arg-type]
        status=row.status,
        run_ids=tuple(row.run_ids or ()),
        new_run_keys=tuple(row.new_run_keys or ()),
        skipped_run_keys=tuple(row.skipped_run_keys or ()),
        skip_reason=row.skip_reason,
        error=row.error,
        cursor=row.cursor,
        started_at=_aware(row.started_at),  # type: ignore[arg-type]
        ended_at=_aware(row.ended_at),  # type: ignore[arg-type]
    )
