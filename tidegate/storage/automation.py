"""Storage of declarative automation: what a tick reads of the event log, and the evaluation
records it writes. Mixed into :class:`tidegate.storage.api.Storage`.

A tick's reads are a fixed number of queries however large the graph (see
:meth:`AutomationStorage.automation_changes`); only a beat that starts (or finds its cursor
moved by someone else) reads the history once (:meth:`AutomationStorage.automation_history`).
The evaluation records are written by ``commit_tick``, in the tick's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Connection,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
)

from tidegate.definitions.automation_records import expand_stored, stored_template
from tidegate.names import ASSET_SELECTION_TAG, BackfillStatus, EventType, RunStatus, StepStatus
from tidegate.storage.engine import dialect_insert
from tidegate.storage.events import horizon
from tidegate.storage.schema import (
    automation_cursor_entries,
    automation_evaluations,
    automation_templates,
    backfills,
    events,
    materializations,
    runs,
    steps,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

# Run statuses whose steps count as in progress (a queued run's steps are planned already).
_ACTIVE_RUNS = (RunStatus.QUEUED, RunStatus.STARTED)
_DONE_STEPS = tuple(StepStatus.TERMINAL)


@dataclass(frozen=True)
class PartitionEvent:
    """An (asset, partition) materialized or failed at ``timestamp``; a failure names its run's
    tags (its partition or partition range) instead of a partition."""

    asset_key: str
    partition_key: str | None
    timestamp: datetime
    tags: Mapping[str, str] | None = None  # failures only


@dataclass(frozen=True)
class ActiveStep:
    """A step not yet done of a queued or started run: its asset is in progress."""

    asset_key: str
    run_id: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class PendingBackfill:
    """A requested backfill of some assets (an automation tick's): in progress for its
    partitions even before its runs are submitted."""

    asset_keys: tuple[str, ...]
    partition_keys: tuple[str, ...]


@dataclass(frozen=True)
class AutomationChanges:
    """What changed in the event log in (the cursor's ids, these upper ids], and what is in
    progress now."""

    materializations_upper: int
    events_upper: int
    materialized: list[PartitionEvent]
    failed: list[PartitionEvent]
    active: list[ActiveStep]
    backfills: list[PendingBackfill]
    # Outcomes committed above the upper ids (the horizon lags while other transactions run):
    # their steps are done, but this snapshot does not show them yet; they count as in progress.
    settling: list[PartitionEvent]


@dataclass(frozen=True)
class EvaluationRow:
    """One stored evaluation of one asset by one automation tick."""

    id: int
    sensor: str
    tick_id: int
    asset_key: str
    evaluated_at: datetime
    requested: int
    record: Any
    run_ids: tuple[str, ...]
    backfill_ids: tuple[str, ...]


@dataclass(frozen=True)
class EvaluationWrite:
    """An evaluation record to store with its tick; ``runs``/``backfills`` index the tick's
    planned runs and backfills that include the asset."""

    asset_key: str
    requested: int
    record: Any  # JSON-able, or its JSON text
    runs: tuple[int, ...] = ()
    backfills: tuple[int, ...] = ()


@dataclass(frozen=True)
class CursorEntriesWrite:
    """An automation cursor's per-asset entries to store with its tick: ``entries`` (asset ->
    its AssetCursor JSON) are those that changed, written at the head's sequence number
    ``seq``; ``removed`` assets are no longer targeted; ``replace`` drops every other entry of
    the sensor first (a first tick, or a cursor stored whole by an earlier version)."""

    seq: int
    entries: Mapping[str, str]
    removed: tuple[str, ...] = ()
    replace: bool = False


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class AutomationStorage:
    if TYPE_CHECKING:  # provided by Storage, which mixes this class in
        engine: Engine
        dialect: str

    def automation_changes(self, after_materialization: int, after_event: int) -> AutomationChanges:
        """One tick's reads, a fixed number of queries whatever the size of the graph: the
        steps in progress and the requested backfills, the upper ids (the log's horizons), the
        materializations and the step failures after the cursor's ids up to them, and those
        above them (``settling``; read by the same two queries, one per table). No transaction
        is held across the queries.

        The steps in progress are read FIRST, the outcomes above the upper ids LAST: a step
        seen neither in progress nor settling ended before the first read and committed its
        outcome at or below the upper ids (or is seen settling), so every step's asset is in
        progress, settling, or updated/failed in this snapshot: never none of them (which would
        make an eager asset whose dependency was just updated in the same run look due)."""
        step_state = select(steps.c.asset_key, runs.c.run_id, runs.c.tags).join(runs, runs.c.run_id == steps.c.run_id)
        step_state = step_state.where(runs.c.status.in_(_ACTIVE_RUNS), steps.c.status.not_in(_DONE_STEPS))
        pending = select(backfills.c.tags, backfills.c.partition_keys).where(
            backfills.c.status == BackfillStatus.REQUESTED
        )
        m = materializations
        with self.engine.connect() as conn:  # one connection for the tick's reads (the horizons take their own)
            active = [ActiveStep(r.asset_key, r.run_id, dict(r.tags or {})) for r in conn.execute(step_state)]
            requested = [
                PendingBackfill(tuple(json.loads(r.tags[ASSET_SELECTION_TAG])), tuple(r.partition_keys or ()))
                for r in conn.execute(pending)
                if ASSET_SELECTION_TAG in (r.tags or {})
            ]
            conn.rollback()  # no snapshot kept across the horizons (SQLite would keep one)
            mat_upper = max(after_materialization, horizon(self.engine, "materializations"))
            event_upper = max(after_event, horizon(self.engine, "events"))
            # After the horizons: every row after the cursor, up to the upper ids (the tick's
            # updates and failures) and above them (settling), one query per table. Bounded
            # above by the id sequence (no row visible to the statement has a larger id), so
            # that even a generic plan of ``id > $1`` (a third of the table, estimated) is an
            # index range scan, not a scan of the whole log.
            materialized: list[PartitionEvent] = []
            failed: list[PartitionEvent] = []
            settling: list[PartitionEvent] = []
            for r in conn.execute(
                select(m.c.id, m.c.asset_key, m.c.partition_key, m.c.timestamp)
                .where(m.c.id > after_materialization, m.c.id <= self._id_ceiling("materializations"))
                .order_by(m.c.id)
            ):
                into = materialized if r.id <= mat_upper else settling
                into.append(PartitionEvent(r.asset_key, r.partition_key, _aware(r.timestamp)))
            for r in conn.execute(
                select(events.c.id, steps.c.asset_key, events.c.timestamp, runs.c.tags)
                .join(steps, and_(steps.c.run_id == events.c.run_id, steps.c.step_key == events.c.step_key))
                .join(runs, runs.c.run_id == events.c.run_id)
                .where(
                    events.c.event_type == EventType.STEP_FAILURE,
                    events.c.id > after_event,
                    events.c.id <= self._id_ceiling("events"),
                )
                .order_by(events.c.id)
            ):
                into = failed if r.id <= event_upper else settling
                into.append(PartitionEvent(r.asset_key, None, _aware(r.timestamp), dict(r.tags or {})))
        return AutomationChanges(mat_upper, event_upper, materialized, failed, active, requested, settling)

    def _id_ceiling(self, source: str) -> ColumnElement[int]:
        """An upper bound of the ids of ``source`` that a statement can see: the sequence's
        last value on PostgreSQL (read within the statement, after its snapshot), the largest
        id elsewhere."""
        table = materializations if source == "materializations" else events
        if self.dialect == "postgresql":
            return literal_column(f"(SELECT last_value FROM {source}_id_seq)", BigInteger)
        return select(func.coalesce(func.max(table.c.id), 0)).scalar_subquery()

    def event_log_horizons(self) -> tuple[int, int]:
        """The upper ids of the materializations and of the events (where a new automation
        sensor starts: what happened before is history, not an update)."""
        return horizon(self.engine, "materializations"), horizon(self.engine, "events")

    def automation_history(
        self, materializations_upper: int
    ) -> tuple[list[tuple[str, str | None, datetime]], list[PartitionEvent]]:
        """What a beat reads once when it starts (two queries, each on a connection of its own
        and fetched whole before Python touches the rows): every (asset, partition)
        materialized at or below ``materializations_upper`` with its latest time, and every
        failed step with its time and run tags (a failure later than the latest
        materialization of its partition counts as that partition's outcome)."""
        m = materializations
        latest = (
            select(m.c.asset_key, m.c.partition_key, func.max(m.c.timestamp))
            .where(m.c.id <= materializations_upper)
            .group_by(m.c.asset_key, m.c.partition_key)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(latest).all()
        failures = (
            select(steps.c.asset_key, steps.c.ended_at, runs.c.tags)
            .join(runs, runs.c.run_id == steps.c.run_id)
            .where(steps.c.status == StepStatus.FAILED, steps.c.ended_at.is_not(None))
        )
        with self.engine.connect() as conn:
            failed_rows = conn.execute(failures).all()
        materialized = [(key, partition, _aware(when)) for key, partition, when in rows]
        failed = [PartitionEvent(r.asset_key, None, _aware(r.ended_at), dict(r.tags or {})) for r in failed_rows]
        return materialized, failed

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
    ) -> None:
        """Store a tick's evaluation records within its transaction (one statement). A record
        given as JSON text (what the beat serialized once) is stored as is, not encoded again."""
        if not writes:
            return
        if conn.dialect.driver == "psycopg":
            # COPY, in the tick's transaction: the records of a 1%-updated tick (4,418 of them,
            # 20 MB) cost the beat 0.5 s of CPU through an executemany (each row's parameters
            # processed); COPY 0.03 s of CPU and less time than the executemany on the server
            # (a JSON document of the rows: three times as long, PostgreSQL parsing it twice).
            driver: Any = conn.connection.driver_connection
            columns = "sensor, tick_id, asset_key, evaluated_at, requested, record, run_ids, backfill_ids"
            # the runs' and backfills' id lists, once per distinct tuple of indices (most rows
            # share a few: the tick's runs are few)
            run_lists: dict[tuple[int, ...], str] = {}
            backfill_lists: dict[tuple[int, ...], str] = {}
            with driver.cursor() as cursor, cursor.copy(f"COPY automation_evaluations ({columns}) FROM STDIN") as copy:
                for w in writes:
                    run_list = run_lists.get(w.runs)
                    if run_list is None:
                        run_list = run_lists[w.runs] = json.dumps(sorted({run_ids[i] for i in w.runs}))
                    backfill_list = backfill_lists.get(w.backfills)
                    if backfill_list is None:
                        backfill_list = backfill_lists[w.backfills] = json.dumps(
                            sorted({backfill_ids[i] for i in w.backfills})
                        )
                    copy.write_row(
                        (
                            sensor,
                            tick_id,
                            w.asset_key,
                            evaluated_at,
                            w.requested,
                            w.record if isinstance(w.record, str) else json.dumps(w.record, default=str),
                            run_list,
                            backfill_list,
                        )
                    )
            return
        record: ColumnElement[Any] = bindparam("record_text", type_=Text)
        if self.dialect == "postgresql":
            record = cast(record, JSON)
        conn.execute(
            insert(automation_evaluations).values(record=record),
            [
                dict(
                    sensor=sensor,
                    tick_id=tick_id,
                    asset_key=w.asset_key,
                    evaluated_at=evaluated_at,
                    requested=w.requested,
                    record_text=w.record if isinstance(w.record, str) else json.dumps(w.record, default=str),
                    run_ids=sorted({run_ids[i] for i in w.runs}),
                    backfill_ids=sorted({backfill_ids[i] for i in w.backfills}),
                )
                for w in writes
            ],
        )

    def write_automation_cursor_in(self, conn: Connection, sensor: str, write: CursorEntriesWrite) -> None:
        """Store an automation cursor's changed entries within its tick's transaction (one
        statement, and one more to delete what ``replace``/``removed`` drop)."""
        t = automation_cursor_entries
        if write.replace:
            conn.execute(delete(t).where(t.c.sensor == sensor))
        elif write.removed:
            conn.execute(delete(t).where(t.c.sensor == sensor, t.c.asset_key.in_(write.removed)))
        if not write.entries:
            return
        if self.dialect == "postgresql":  # one statement, the rows as one JSON document (as above)
            conn.execute(
                text(
                    "INSERT INTO automation_cursor_entries (sensor, asset_key, seq, entry) "
                    "SELECT :sensor, e->>0, :seq, e->>1 FROM json_array_elements(CAST(:rows AS json)) AS e "
                    "ON CONFLICT (sensor, asset_key) DO UPDATE SET seq = excluded.seq, entry = excluded.entry"
                ),
                dict(sensor=sensor, seq=write.seq, rows=json.dumps(list(write.entries.items()))),
            )
            return
        rows = [dict(sensor=sensor, asset_key=k, seq=write.seq, entry=v) for k, v in write.entries.items()]
        if write.replace:
            conn.execute(insert(t), rows)
            return
        upsert = dialect_insert(self.dialect)(t)
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[t.c.sensor, t.c.asset_key],
                set_={"seq": upsert.excluded.seq, "entry": upsert.excluded.entry},
            ),
            rows,
        )

    def insert_automation_templates_in(self, conn: Connection, templates: Mapping[str, str]) -> None:
        """Store condition templates (digest -> template JSON) that evaluation records name,
        within the tick's transaction (one statement); one stored already is left as it is."""
        if not templates:
            return
        t = automation_templates
        conn.execute(
            dialect_insert(self.dialect)(t).on_conflict_do_nothing(index_elements=[t.c.digest]),
            [dict(digest=d, template=template) for d, template in templates.items()],
        )

    def automation_cursor_entries(self, sensor: str) -> list[tuple[str, int, str]]:
        """Every stored cursor entry of ``sensor``: (asset, seq, AssetCursor JSON)."""
        t = automation_cursor_entries
        with self.engine.connect() as conn:
            return [
                (r.asset_key, r.seq, r.entry)
                for r in conn.execute(select(t.c.asset_key, t.c.seq, t.c.entry).where(t.c.sensor == sensor))
            ]

    def automation_evaluations(
        self, asset_key: str, *, tick_id: int | None = None, limit: int = 20, requested_only: bool = False
    ) -> list[EvaluationRow]:
        """The stored evaluations of ``asset_key``, newest first (with ``tick_id``: those of that
        tick and before). A tick stores an asset's evaluation only when it differs from the
        asset's previous one or requested runs, so the newest at or before a tick is the
        evaluation that tick made."""
        e = automation_evaluations
        query = select(e).where(e.c.asset_key == asset_key)
        if tick_id is not None:
            query = query.where(e.c.tick_id <= tick_id)
        if requested_only:
            query = query.where(e.c.requested > 0)
        query = query.order_by(e.c.tick_id.desc(), e.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            found = conn.execute(query).all()
            # the templates the records name by digest, in one query, put back in their place
            digests = {d for r in found if (d := stored_template(r.record)) is not None}
            templates: dict[str, str] = {}
            if digests:
                t = automation_templates
                templates = dict(conn.execute(select(t.c.digest, t.c.template).where(t.c.digest.in_(digests))).all())
            return [
                EvaluationRow(
                    id=r.id,
                    sensor=r.sensor,
                    tick_id=r.tick_id,
                    asset_key=r.asset_key,
                    evaluated_at=_aware(r.evaluated_at),
                    requested=r.requested,
                    record=expand_stored(r.record, templates),
                    run_ids=tuple(r.run_ids or ()),
                    backfill_ids=tuple(r.backfill_ids or ()),
                )
                for r in found
            ]

    def prune_automation_evaluations(self, *, before: datetime) -> int:
        """Delete evaluations made before ``before`` (the beat's clock), in one transaction,
        except each asset's newest of each sensor (what explain shows while nothing changes)."""
        e = automation_evaluations
        newest = select(func.max(e.c.id)).group_by(e.c.sensor, e.c.asset_key).scalar_subquery()
        with self.engine.begin() as conn:
            return conn.execute(delete(e).where(e.c.evaluated_at < before, e.c.id.not_in(newest))).rowcount
