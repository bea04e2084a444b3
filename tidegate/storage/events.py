"""Reading the event log after a cursor without ever skipping an event.

Event sensors keep a storage id as their cursor and read ``cursor < id <= upper``. The ids come
from a sequence (PostgreSQL) or ``max(id) + 1`` (SQLite), and that is only safe when no event
with an id at or below ``upper`` can still appear:

* SQLite has one writer at a time, and a writer's ids are drawn inside its write lock: once a
  reader sees id N, every smaller id is committed or was rolled back. ``upper`` = ``max(id)``.
* PostgreSQL draws ids when rows are inserted, not when they commit: a transaction holding id
  9 may commit after one holding id 10 is visible. A reader that moved its cursor to 10 would
  skip 9 for ever. So ``upper`` is the *horizon*: the last id drawn (the sequence's
  ``last_value``, read first), once every transaction of this database that was running just
  after it was read (``pg_stat_activity.backend_xid``, read second) has ended. Migration 0007
  makes the id default give the transaction its id before drawing from the sequence, so a
  transaction that drew an id at or below ``last_value`` is in that set unless it has ended.
  With no write transaction running, that is at once; otherwise a reader waits a few
  milliseconds (tidegate's transactions are short) or uses the newest earlier observation that
  has become final. Only this database's transactions count (``pg_snapshot_xmin`` would wait
  for every database of the server). Nobody is blocked: writers take no extra lock, and a
  long transaction only holds the horizon back (events wait, none is lost).

Chosen over the alternatives: an advisory lock serializing event inserts would make every
step completion wait for every other and invert the runs -> steps -> pools lock order;
remembering gaps in the cursor needs a time bound after which a gap is given up, and a
transaction slower than that bound loses its event.

Each function here is one read (one connection, no transaction held across calls).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, Select, and_, func, or_, select, text

from tidegate.definitions.instance import (
    AssetMaterialization,
    DagsterEvent,
    EventLogEntry,
    EventLogRecord,
    EventRecordsFilter,
    EventSpecificData,
    RecordedMetadataValue,
    SerializableErrorInfo,
)
from tidegate.definitions.key import AssetKey
from tidegate.errors import InvalidInvocationError
from tidegate.names import EventType
from tidegate.storage.schema import events, materializations, runs

SOURCES = {"materializations": materializations, "events": events}
HORIZON_WAIT_SECONDS = 0.05  # how long a reader waits for running transactions to end


class _Horizon:
    """The horizon of one table of one database, remembered between calls by this process:
    observations (last id drawn, transactions running after it) not yet final, and the best
    final one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.final = 0
        self.pending: list[tuple[int, frozenset[int]]] = []


_horizons: weakref.WeakKeyDictionary[Engine, dict[str, _Horizon]] = weakref.WeakKeyDictionary()
_horizons_lock = threading.Lock()


def _state(engine: Engine, source: str) -> _Horizon:
    with _horizons_lock:
        return _horizons.setdefault(engine, {}).setdefault(source, _Horizon())


def horizon(engine: Engine, source: str, *, wait_seconds: float = HORIZON_WAIT_SECONDS) -> int:
    """The highest id of ``source`` ("materializations" or "events") below which every event
    has committed or never will (0: none). See the module docstring."""
    table = SOURCES.get(source)
    if table is None:
        raise InvalidInvocationError(f"event log: unknown source {source!r} (one of {', '.join(SOURCES)})")
    with engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            return int(conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one())
        last_value, is_called = conn.execute(text(f"SELECT last_value, is_called FROM {source}_id_seq")).one()
        conn.rollback()
        drawn = int(last_value) if is_called else int(last_value) - 1
        running = _running(conn)  # after reading the sequence: see the module docstring
        state = _state(engine, source)
        with state.lock:
            if state.final > drawn:  # the sequence was reset (a test database truncated)
                state.final, state.pending = 0, []
            state.pending.append((drawn, running))
            deadline = time.monotonic() + wait_seconds
            while True:
                final = [d for d, seen in state.pending if not seen & running]
                if final:
                    state.final = max(state.final, *final)
                state.pending = [(d, seen) for d, seen in state.pending if d > state.final][-32:]
                if state.final >= drawn or time.monotonic() >= deadline:
                    return state.final
                time.sleep(0.002)
                running = _running(conn)


_RUNNING = text(
    "SELECT backend_xid::text::bigint FROM pg_stat_activity "
    "WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend' "
    "UNION ALL SELECT transaction::text::bigint FROM pg_prepared_xacts WHERE database = current_database()"
)


def _running(conn: Connection) -> frozenset[int]:
    """The ids of this database's client write transactions running now (autovacuum's, which
    write no event, are left out; a new transaction per call: pg_stat_activity is read once per
    transaction)."""
    found = frozenset(int(x) for x in conn.execute(_RUNNING).scalars())
    conn.rollback()
    return found


# -- reading -----------------------------------------------------------------------------------


def materialization_query(records_filter: EventRecordsFilter) -> Select[Any]:
    """Materializations matching ``records_filter`` (with the run's job name)."""
    m = materializations
    query = select(m, runs.c.job_name).outerjoin(runs, runs.c.run_id == m.c.run_id)
    if records_filter.asset_key is not None:
        assert isinstance(records_filter.asset_key, AssetKey)
        query = query.where(m.c.asset_key == records_filter.asset_key.to_user_string())
    if records_filter.asset_partitions is not None:
        query = query.where(m.c.partition_key.in_(list(records_filter.asset_partitions)))
    return _bounds(query, m, records_filter)


def event_query(records_filter: EventRecordsFilter) -> Select[Any]:
    """Events of one type (not materializations) matching ``records_filter``."""
    e = events
    query = select(e, runs.c.job_name).outerjoin(runs, runs.c.run_id == e.c.run_id)
    query = query.where(e.c.event_type == str(records_filter.event_type))
    return _bounds(query, e, records_filter)


def _bounds(query: Select[Any], table: Any, f: EventRecordsFilter) -> Select[Any]:
    if f.after_cursor is not None:
        query = query.where(table.c.id > f.after_cursor)
    if f.before_cursor is not None:
        query = query.where(table.c.id < f.before_cursor)
    if f.storage_ids is not None:
        query = query.where(table.c.id.in_(list(f.storage_ids)))
    if f.after_timestamp is not None:
        query = query.where(table.c.timestamp > datetime.fromtimestamp(f.after_timestamp, UTC))
    if f.before_timestamp is not None:
        query = query.where(table.c.timestamp < datetime.fromtimestamp(f.before_timestamp, UTC))
    return query


def read_records(
    conn: Connection, records_filter: EventRecordsFilter, limit: int | None, ascending: bool
) -> list[EventLogRecord]:
    """One query: the records of ``records_filter`` in storage id order."""
    if records_filter.event_type == EventType.ASSET_MATERIALIZATION:
        query = materialization_query(records_filter)
        order = materializations.c.id
        build = materialization_record
    else:
        query = event_query(records_filter)
        order = events.c.id
        build = event_record
    query = query.order_by(order.asc() if ascending else order.desc()).limit(limit)
    return [build(row) for row in conn.execute(query)]


def count_records(conn: Connection, records_filter: EventRecordsFilter) -> tuple[int, float | None]:
    """(how many records match, the oldest one's POSIX timestamp), in one query."""
    if records_filter.event_type == EventType.ASSET_MATERIALIZATION:
        query = materialization_query(records_filter)
    else:
        query = event_query(records_filter)
    inner = query.subquery()
    count, oldest = conn.execute(select(func.count(), func.min(inner.c.timestamp))).one()
    return int(count), _aware(oldest).timestamp() if oldest is not None else None


def _per_asset(after: Mapping[AssetKey, int | None], up_to: int | None) -> Any:
    m = materializations
    terms = [
        and_(m.c.asset_key == key.to_user_string(), m.c.id > cursor)
        if cursor
        else m.c.asset_key == key.to_user_string()
        for key, cursor in after.items()
    ]
    return and_(or_(*terms), m.c.id <= up_to) if up_to is not None else or_(*terms)


def count_per_asset(conn: Connection, after: Mapping[AssetKey, int | None]) -> tuple[int, float | None]:
    """One query: how many materializations of several assets are after their own cursors, and
    the oldest one's POSIX timestamp."""
    if not after:
        return 0, None
    m = materializations
    count, oldest = conn.execute(select(func.count(), func.min(m.c.timestamp)).where(_per_asset(after, None))).one()
    return int(count), _aware(oldest).timestamp() if oldest is not None else None


def latest_per_asset(
    conn: Connection, after: Mapping[AssetKey, int | None], up_to: int
) -> dict[AssetKey, EventLogRecord]:
    """One query: per asset, its newest materialization after its own cursor, up to ``up_to``."""
    if not after:
        return {}
    m = materializations
    newest = select(func.max(m.c.id).label("id")).where(_per_asset(after, up_to)).group_by(m.c.asset_key).subquery()
    query = select(m, runs.c.job_name).join(newest, m.c.id == newest.c.id).outerjoin(runs, runs.c.run_id == m.c.run_id)
    found = [materialization_record(row) for row in conn.execute(query)]
    return {r.asset_key: r for r in found if r.asset_key is not None}


def records_per_asset(
    conn: Connection, after: Mapping[AssetKey, int | None], up_to: int, limit: int | None
) -> list[EventLogRecord]:
    """One query: the materializations of several assets, each after its own cursor, by id."""
    if not after:
        return []
    m = materializations
    query = (
        select(m, runs.c.job_name)
        .outerjoin(runs, runs.c.run_id == m.c.run_id)
        .where(_per_asset(after, up_to))
        .order_by(m.c.id)
        .limit(limit)
    )
    return [materialization_record(row) for row in conn.execute(query)]


# -- rows -> records ---------------------------------------------------------------------------


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def materialization_record(row: Any) -> EventLogRecord:
    entry = EventLogEntry(
        run_id=row.run_id,
        timestamp=_aware(row.timestamp).timestamp(),
        step_key=row.step_key or None,
        job_name=row.job_name,
        storage_id=row.id,
        asset_materialization=AssetMaterialization(
            asset_key=AssetKey.from_user_string(row.asset_key),
            partition=row.partition_key,
            metadata={k: RecordedMetadataValue(v) for k, v in (row.metadata or {}).items()},
        ),
    )
    return EventLogRecord(storage_id=row.id, event_log_entry=entry)


def event_record(row: Any) -> EventLogRecord:
    data = row.data or {}
    error = SerializableErrorInfo.from_traceback(data.get("error")) if isinstance(data.get("error"), str) else None
    event = DagsterEvent(
        event_type_value=row.event_type,
        job_name=row.job_name,
        step_key=row.step_key,
        asset_key=None,
        partition=None,
        message=row.message,
        event_specific_data=EventSpecificData(error=error) if error is not None else None,
        run_id=row.run_id,
    )
    entry = EventLogEntry(
        run_id=row.run_id,
        timestamp=_aware(row.timestamp).timestamp(),
        step_key=row.step_key,
        job_name=row.job_name,
        storage_id=row.id,
        event=event,
        user_message=row.message or "",
    )
    return EventLogRecord(storage_id=row.id, event_log_entry=entry)


def records_for_runs(conn: Connection, run_ids: Sequence[str], of_type: str) -> dict[str, list[EventLogRecord]]:
    """One query: the events of type ``of_type`` of several runs, per run, by id."""
    e = events
    query = (
        select(e, runs.c.job_name)
        .outerjoin(runs, runs.c.run_id == e.c.run_id)
        .where(e.c.run_id.in_(list(run_ids)), e.c.event_type == of_type)
        .order_by(e.c.id)
    )
    found: dict[str, list[EventLogRecord]] = {run_id: [] for run_id in run_ids}
    for row in conn.execute(query):
        found[row.run_id].append(event_record(row))
    return found


def records_for_run(
    conn: Connection, run_id: str, after: int | None, of_type: Sequence[str] | None, limit: int | None, ascending: bool
) -> list[EventLogRecord]:
    """One query: a run's events (``of_type``: only these types), by id."""
    e = events
    query = select(e, runs.c.job_name).outerjoin(runs, runs.c.run_id == e.c.run_id).where(e.c.run_id == run_id)
    if after is not None:
        query = query.where(e.c.id > after if ascending else e.c.id < after)
    if of_type:
        query = query.where(e.c.event_type.in_(list(of_type)))
    query = query.order_by(e.c.id.asc() if ascending else e.c.id.desc()).limit(limit)
    return [event_record(row) for row in conn.execute(query)]
