"""``DagsterInstance``: the :class:`tidegate.definitions.instance.Instance` protocol read from
the storage, passed by the beat as ``context.instance``; ``DagsterInstance.ephemeral()`` and
``instance_for_test()`` give users' unit tests one on a throw-away SQLite database.

Every method is one read (one connection, no transaction held across calls).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select, tuple_

from tidegate.definitions.instance import (
    AssetMaterialization,
    AssetRecordsFilter,
    DagsterRun,
    EventLogEntry,
    EventLogRecord,
    EventRecordsFilter,
    EventRecordsResult,
    RecordedMetadataValue,
    RunRecord,
    RunsFilter,
    as_utc,
)
from tidegate.definitions.key import AssetKey, CoercibleToAssetKey
from tidegate.errors import InvalidInvocationError
from tidegate.names import EventType, RunStatus
from tidegate.storage import events as event_log
from tidegate.storage.api import Storage
from tidegate.storage.records import RunRecord as StoredRunRecord
from tidegate.storage.records import from_row
from tidegate.storage.schema import dynamic_partitions, materializations, runs

# get_run_records(order_by=...): Dagster's field names -> columns
_ORDER_BY: dict[str, Any] = {
    "create_timestamp": runs.c.created_at,
    "update_timestamp": func.coalesce(runs.c.ended_at, runs.c.started_at, runs.c.created_at),
    "start_time": runs.c.started_at,
    "end_time": runs.c.ended_at,
}


class DagsterInstance:
    """Runs, materializations and dynamic partitions of one tidegate database, under Dagster's
    method names. Read-only: a tick's writes are what it returns (runs, cursor, requests)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @classmethod
    def ephemeral(cls) -> DagsterInstance:
        """An instance on a new SQLite database in a temporary directory, removed when the
        instance is garbage-collected (``instance_for_test()`` removes it at once)."""
        workdir = tempfile.mkdtemp(prefix="tidegate-instance-")
        storage = Storage.open(f"sqlite:///{workdir}/tidegate.db", upgrade=True)
        instance = cls(storage)
        weakref.finalize(instance, _remove, storage, workdir)
        return instance

    @classmethod
    def get(cls) -> DagsterInstance:
        """The instance of ``TIDEGATE_DATABASE_URL`` (as the CLI opens it)."""
        from tidegate.config import Settings

        return cls(Storage.open(Settings.load().database_url))

    # -- runs ------------------------------------------------------------------------------

    def get_runs(
        self, filters: RunsFilter | None = None, cursor: str | None = None, limit: int | None = None
    ) -> Sequence[DagsterRun]:
        """Runs matching ``filters``, newest first; ``cursor`` (a run id) continues after that run."""
        return [r.dagster_run for r in self.get_run_records(filters, limit, cursor=cursor)]

    def get_run_records(
        self,
        filters: RunsFilter | None = None,
        limit: int | None = None,
        order_by: str | None = None,
        ascending: bool = False,
        cursor: str | None = None,
    ) -> Sequence[RunRecord]:
        """Run records matching ``filters``, newest first (``ascending=True``: oldest first),
        or by ``order_by`` ("create_timestamp", "update_timestamp", "start_time" or "end_time";
        runs without that time come last)."""
        if order_by is not None and order_by not in _ORDER_BY:
            raise InvalidInvocationError(
                f"get_run_records: cannot order by {order_by!r} (one of {', '.join(sorted(_ORDER_BY))})"
            )
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise InvalidInvocationError(f"get_run_records: limit must be an integer >= 0, got {limit!r}")
        return [_run_record(r) for r in self._run_rows(filters, limit, order_by, ascending, cursor)]

    def run_rows(
        self, filters: RunsFilter | None = None, limit: int | None = None, cursor: str | None = None
    ) -> list[StoredRunRecord]:
        """As :meth:`get_run_records`, newest first, but tidegate's own run records (what the
        webserver lists)."""
        return [from_row(StoredRunRecord, r) for r in self._run_rows(filters, limit, None, False, cursor)]

    def _run_rows(
        self, filters: RunsFilter | None, limit: int | None, order_by: str | None, ascending: bool, cursor: str | None
    ) -> list[Any]:
        column = _ORDER_BY[order_by or "create_timestamp"]
        query = _filtered(select(runs), filters)
        with self.storage.engine.connect() as conn:
            if cursor is not None:
                anchor = conn.execute(select(column, runs.c.created_at).where(runs.c.run_id == cursor)).first()
                if anchor is None:
                    raise InvalidInvocationError(f"get_run_records: cursor run '{cursor}' not found")
                query = query.where(_after(column, anchor[0], anchor[1], cursor, ascending))
            # ties (and runs without that time, which come last) newest first, or oldest when ascending
            keys: tuple[Any, ...] = (column, runs.c.created_at, runs.c.run_id)
            if column is runs.c.created_at:  # never NULL: in the order of its index, no sort of the table
                keys = (runs.c.created_at, runs.c.run_id)
            order = [k.asc() if ascending else k.desc() for k in keys]
            if column is not runs.c.created_at:
                order[0] = order[0].nulls_last()  # the same on SQLite and PostgreSQL
            return list(conn.execute(query.order_by(*order).limit(limit)).all())

    def get_runs_count(self, filters: RunsFilter | None = None) -> int:
        query = _filtered(select(func.count()).select_from(runs), filters)
        with self.storage.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def get_run_by_id(self, run_id: str) -> DagsterRun | None:
        record = self.get_run_record_by_id(run_id)
        return record.dagster_run if record else None

    def get_run_record_by_id(self, run_id: str) -> RunRecord | None:
        with self.storage.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)).first()
        return _run_record(row) if row is not None else None

    # -- materializations ------------------------------------------------------------------

    def get_latest_materialization_event(self, asset_key: CoercibleToAssetKey) -> EventLogEntry | None:
        """The newest materialization of ``asset_key`` (any partition), or None."""
        return self.get_latest_materialization_events([asset_key])[AssetKey.from_coercible(asset_key)]

    def get_latest_materialization_events(
        self, asset_keys: Sequence[CoercibleToAssetKey]
    ) -> Mapping[AssetKey, EventLogEntry | None]:
        keys = [AssetKey.from_coercible(k) for k in asset_keys]
        names = [k.to_user_string() for k in keys]
        newest = (
            select(func.max(materializations.c.id).label("id"))
            .where(materializations.c.asset_key.in_(names))
            .group_by(materializations.c.asset_key)
            .subquery()
        )
        query = (
            select(materializations, runs.c.job_name)
            .join(newest, materializations.c.id == newest.c.id)
            .outerjoin(runs, runs.c.run_id == materializations.c.run_id)
        )
        with self.storage.engine.connect() as conn:
            found = {row.asset_key: _materialization_entry(row) for row in conn.execute(query)}
        return {k: found.get(k.to_user_string()) for k in keys}

    # -- the event log ---------------------------------------------------------------------

    def get_event_records(
        self, event_records_filter: EventRecordsFilter, limit: int | None = None, ascending: bool = False
    ) -> Sequence[EventLogRecord]:
        """Events of ``event_records_filter.event_type`` in storage id order (newest first unless
        ``ascending``). Materializations' storage ids are those of the materializations table
        (one per partition), other events' those of the event log.

        With ``after_cursor`` and no ``before_cursor``, records stop at the event log's horizon
        (:func:`tidegate.storage.events.horizon`): an event whose transaction may still commit
        with a smaller id than one returned is never stepped over by a cursor kept from them."""
        if not isinstance(event_records_filter, EventRecordsFilter):
            raise InvalidInvocationError(
                f"get_event_records: expected an EventRecordsFilter, got {event_records_filter!r}"
            )
        _check_limit("get_event_records", limit)
        records_filter = event_records_filter
        if records_filter.after_cursor is not None and records_filter.before_cursor is None:
            upper = self.event_log_horizon(_source(records_filter.event_type))
            records_filter = replace(records_filter, before_cursor=upper + 1)
        with self.storage.engine.connect() as conn:
            return event_log.read_records(conn, records_filter, limit, ascending)

    def fetch_materializations(
        self,
        records_filter: CoercibleToAssetKey | AssetRecordsFilter,
        limit: int,
        cursor: str | None = None,
        ascending: bool = False,
    ) -> EventRecordsResult:
        """A page of an asset's materializations; ``cursor`` (from the previous page's result)
        continues after its last record."""
        if not isinstance(records_filter, AssetRecordsFilter):
            records_filter = AssetRecordsFilter(asset_key=records_filter)
        _check_limit("fetch_materializations", limit)
        after, before = records_filter.after_storage_id, records_filter.before_storage_id
        if cursor is not None:
            position = _cursor_id("fetch_materializations", cursor)
            if ascending:
                after = max(after or 0, position)
            else:
                before = min(before, position) if before is not None else position
        query = EventRecordsFilter(
            event_type=EventType.ASSET_MATERIALIZATION,
            asset_key=records_filter.asset_key,
            asset_partitions=records_filter.asset_partitions,
            after_cursor=after,
            before_cursor=before,
            after_timestamp=records_filter.after_timestamp,
            before_timestamp=records_filter.before_timestamp,
        )
        records = self.get_event_records(query, limit=limit + 1, ascending=ascending)
        page = list(records[:limit])
        last = page[-1].storage_id if page else (cursor and _cursor_id("fetch_materializations", cursor)) or 0
        return EventRecordsResult(records=page, cursor=str(last), has_more=len(records) > limit)

    def get_records_for_run(
        self,
        run_id: str,
        cursor: str | None = None,
        of_type: EventType | str | None = None,
        limit: int | None = None,
        ascending: bool = True,
    ) -> EventRecordsResult:
        """A run's events (materializations excluded: read them with fetch_materializations),
        ``of_type`` one type or a set of them."""
        _check_limit("get_records_for_run", limit)
        types = None
        if of_type is not None:
            types = [str(EventType(str(t))) for t in (of_type if isinstance(of_type, set | frozenset) else [of_type])]
        after = _cursor_id("get_records_for_run", cursor) if cursor is not None else None
        with self.storage.engine.connect() as conn:
            records = event_log.records_for_run(
                conn, run_id, after, types, limit + 1 if limit is not None else None, ascending
            )
        page = records[:limit] if limit is not None else records
        has_more = limit is not None and len(records) > limit
        last = page[-1].storage_id if page else (after or 0)
        return EventRecordsResult(records=page, cursor=str(last), has_more=has_more)

    def records_for_runs(
        self, run_ids: Sequence[str], of_type: EventType | str
    ) -> Mapping[str, Sequence[EventLogRecord]]:
        """The events of type ``of_type`` of each of ``run_ids``, in one query."""
        with self.storage.engine.connect() as conn:
            return event_log.records_for_runs(conn, run_ids, str(EventType(str(of_type))))

    def event_log_horizon(self, source: str) -> int:
        """See :func:`tidegate.storage.events.horizon`."""
        return event_log.horizon(self.storage.engine, source)

    def latest_materialization_records(
        self, after: Mapping[AssetKey, int | None], up_to: int
    ) -> Mapping[AssetKey, EventLogRecord]:
        with self.storage.engine.connect() as conn:
            return event_log.latest_per_asset(conn, after, up_to)

    def materialization_records(
        self, after: Mapping[AssetKey, int | None], up_to: int, limit: int | None = None
    ) -> Sequence[EventLogRecord]:
        with self.storage.engine.connect() as conn:
            return event_log.records_per_asset(conn, after, up_to, limit)

    def count_event_records(self, event_records_filter: EventRecordsFilter) -> tuple[int, float | None]:
        with self.storage.engine.connect() as conn:
            return event_log.count_records(conn, event_records_filter)

    def count_materialization_records(self, after: Mapping[AssetKey, int | None]) -> tuple[int, float | None]:
        with self.storage.engine.connect() as conn:
            return event_log.count_per_asset(conn, after)

    # -- dynamic partitions ----------------------------------------------------------------

    def get_dynamic_partitions(self, partitions_def_name: str) -> Sequence[str]:
        """The keys of dynamic partitions ``partitions_def_name``, in the order they were added."""
        return self.storage.dynamic_partition_keys(partitions_def_name)

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        query = select(dynamic_partitions.c.id).where(
            dynamic_partitions.c.partitions_def == partitions_def_name,
            dynamic_partitions.c.partition_key == partition_key,
        )
        with self.storage.engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def __repr__(self) -> str:
        return f"DagsterInstance({self.storage.safe_url})"


@contextmanager
def instance_for_test() -> Iterator[DagsterInstance]:
    """An instance on a throw-away SQLite database, removed when the block ends."""
    workdir = tempfile.mkdtemp(prefix="tidegate-instance-")
    storage = Storage.open(f"sqlite:///{workdir}/tidegate.db", upgrade=True)
    try:
        yield DagsterInstance(storage)
    finally:
        _remove(storage, workdir)


def _source(event_type: EventType | str) -> str:
    return "materializations" if event_type == EventType.ASSET_MATERIALIZATION else "events"


def _check_limit(method: str, limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise InvalidInvocationError(f"{method}: limit must be an integer >= 0, got {limit!r}")


def _cursor_id(method: str, cursor: str) -> int:
    try:
        return int(cursor)
    except (TypeError, ValueError):
        raise InvalidInvocationError(f"{method}: cursor {cursor!r} is not a storage id") from None


def _remove(storage: Storage, workdir: str) -> None:
    storage.dispose()
    shutil.rmtree(workdir, ignore_errors=True)


def _filtered(query: Select[Any], filters: RunsFilter | None) -> Select[Any]:
    if filters is None:
        return query
    if not isinstance(filters, RunsFilter):
        raise InvalidInvocationError(f"filters must be a RunsFilter, got {filters!r}")
    if filters.run_ids is not None:
        query = query.where(runs.c.run_id.in_(list(filters.run_ids)))
    if filters.job_name is not None:
        query = query.where(runs.c.job_name == filters.job_name)
    if filters.statuses:
        query = query.where(runs.c.status.in_([str(s) for s in filters.statuses]))
    for key, value in (filters.tags or {}).items():
        values = [value] if isinstance(value, str) else list(value)
        query = query.where(runs.c.tags[key].as_string().in_(values))
    if filters.created_after is not None:
        query = query.where(runs.c.created_at > as_utc(filters.created_after))
    if filters.created_before is not None:
        query = query.where(runs.c.created_at < as_utc(filters.created_before))
    return query


def _after(column: Any, value: Any, created: datetime, run_id: str, ascending: bool) -> ColumnElement[bool]:
    """Rows strictly after the cursor run (``value``, ``created``, ``run_id``) in the listing's
    order: by ``column`` (NULLs last), then creation time, then run id."""

    if column is runs.c.created_at:  # never NULL: one row-value comparison, which the index serves
        pair = tuple_(runs.c.created_at, runs.c.run_id)
        anchor = tuple_(literal(created, runs.c.created_at.type), literal(run_id, runs.c.run_id.type))
        return pair > anchor if ascending else pair < anchor  # type: ignore[no-any-return]

    def beyond(col: Any, anchor: Any) -> ColumnElement[bool]:
        return col > anchor if ascending else col < anchor  # type: ignore[no-any-return]

    tie = or_(
        beyond(runs.c.created_at, created),
        and_(runs.c.created_at == created, beyond(runs.c.run_id, run_id)),
    )
    if value is None:
        return and_(column.is_(None), tie)
    return or_(beyond(column, value), and_(column == value, tie), column.is_(None))


def _aware(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def _run_record(row: Any) -> RunRecord:
    created, started, ended = _aware(row.created_at), _aware(row.started_at), _aware(row.ended_at)
    assert created is not None
    run = DagsterRun(
        run_id=row.run_id,
        job_name=row.job_name,
        status=RunStatus(row.status),
        tags=dict(row.tags or {}),
        asset_selection=frozenset(AssetKey.from_user_string(k) for k in row.asset_selection)
        if row.asset_selection
        else None,
        parent_run_id=row.parent_run_id,
    )
    return RunRecord(
        dagster_run=run,
        create_timestamp=created,
        update_timestamp=max(t for t in (created, started, ended) if t is not None),
        start_time=started.timestamp() if started else None,
        end_time=ended.timestamp() if ended else None,
    )


def _materialization_entry(row: Any) -> EventLogEntry:
    timestamp = _aware(row.timestamp)
    assert timestamp is not None
    return EventLogEntry(
        run_id=row.run_id,
        timestamp=timestamp.timestamp(),
        step_key=row.step_key,
        job_name=row.job_name,
        storage_id=row.id,
        asset_materialization=AssetMaterialization(
            asset_key=AssetKey.from_user_string(row.asset_key),
            partition=row.partition_key,
            metadata={k: RecordedMetadataValue(v) for k, v in (row.metadata or {}).items()},
        ),
    )
