"""``context.instance`` in schedules and sensors: read-only views of runs, materializations and
dynamic partitions under Dagster's names (``get_runs``, ``get_run_records``,
``get_latest_materialization_event``, ``get_dynamic_partitions``, ...).

Definitions import no storage: this module holds the protocol and the records it returns;
:mod:`tidegate.storage.instance` implements it on the database and the beat passes it in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from tidegate.definitions.key import AssetKey, CoercibleToAssetKey
from tidegate.errors import InvalidInvocationError
from tidegate.names import EventType, RunStatus

DagsterRunStatus = RunStatus
"""Dagster's name for run statuses. tidegate runs are QUEUED, STARTED, SUCCESS, FAILURE or
CANCELED; Dagster's transitional NOT_STARTED, STARTING and CANCELING do not occur."""

ASSET_MATERIALIZATION = EventType.ASSET_MATERIALIZATION
DagsterEventType = EventType
"""Dagster's name for event types (``DagsterEventType.ASSET_MATERIALIZATION``, ``RUN_FAILURE``, ...)."""


@dataclass(frozen=True)
class RunsFilter:
    """Which runs ``get_runs`` / ``get_run_records`` return; every given field must match.
    A tag value may be a list: any of its values matches. Naive datetimes are taken as UTC."""

    run_ids: Sequence[str] | None = None
    job_name: str | None = None
    statuses: Sequence[RunStatus | str] | None = None
    tags: Mapping[str, str | Sequence[str]] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def __post_init__(self) -> None:
        if isinstance(self.run_ids, str):
            raise InvalidInvocationError(f"RunsFilter: run_ids must be a list of run ids, got {self.run_ids!r}")
        known = {s.value for s in RunStatus}
        for status in self.statuses or ():
            if str(status) not in known:
                raise InvalidInvocationError(
                    f"RunsFilter: unknown run status {status!r} (tidegate runs are {', '.join(sorted(known))})"
                )
        for key, value in (self.tags or {}).items():
            values = [value] if isinstance(value, str) else list(value)
            if not isinstance(key, str) or not values or not all(isinstance(v, str) for v in values):
                raise InvalidInvocationError(f"RunsFilter: tags must map str to str or a list of str, got {key!r}")
        for name in ("created_after", "created_before"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, datetime):
                raise InvalidInvocationError(f"RunsFilter: {name} must be a datetime, got {value!r}")


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class DagsterRun:
    """One run, as a schedule or sensor sees it."""

    run_id: str
    job_name: str
    status: RunStatus
    tags: Mapping[str, str] = field(default_factory=dict)
    asset_selection: frozenset[AssetKey] | None = None
    parent_run_id: str | None = None

    @property
    def is_finished(self) -> bool:
        return self.status in RunStatus.TERMINAL

    @property
    def is_success(self) -> bool:
        return self.status == RunStatus.SUCCESS

    @property
    def is_failure(self) -> bool:
        return self.status == RunStatus.FAILURE

    @property
    def is_failure_or_canceled(self) -> bool:
        return self.status in (RunStatus.FAILURE, RunStatus.CANCELED)


@dataclass(frozen=True)
class RunRecord:
    """A run with its timestamps (``start_time``/``end_time`` are POSIX seconds, as in Dagster)."""

    dagster_run: DagsterRun
    create_timestamp: datetime
    update_timestamp: datetime  # the latest of created, started and ended
    start_time: float | None
    end_time: float | None


@dataclass(frozen=True)
class RecordedMetadataValue:
    """One metadata value read back from the log; ``.value`` is what the asset gave (as in
    Dagster's ``metadata["rows"].value``)."""

    value: Any


@dataclass(frozen=True)
class AssetMaterialization:
    """A recorded materialization: its key, partition and metadata."""

    asset_key: AssetKey
    partition: str | None = None
    metadata: Mapping[str, RecordedMetadataValue] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True)
class SerializableErrorInfo:
    """An error recorded on a step: ``message`` is its last line, ``stack`` the traceback's lines."""

    message: str
    stack: Sequence[str] = ()
    cls_name: str | None = None

    @classmethod
    def from_traceback(cls, text: str | None) -> SerializableErrorInfo | None:
        lines = (text or "").strip().splitlines()
        if not lines:
            return None
        last = lines[-1]
        name = last.split(":", 1)[0] if ":" in last and " " not in last.split(":", 1)[0] else None
        return cls(message=last, stack=tuple(lines[:-1]), cls_name=name)

    def to_string(self) -> str:
        return "\n".join([*self.stack, self.message])


@dataclass(frozen=True)
class EventSpecificData:
    """``dagster_event.event_specific_data``: the materialization of an ASSET_MATERIALIZATION
    event, the error of a STEP_FAILURE or RUN_FAILURE event."""

    materialization: AssetMaterialization | None = None
    error: SerializableErrorInfo | None = None


@dataclass(frozen=True)
class DagsterEvent:
    """The structured part of an event log entry (``entry.dagster_event.asset_key``)."""

    event_type_value: str
    job_name: str | None
    step_key: str | None
    asset_key: AssetKey | None
    partition: str | None
    message: str | None = None
    event_specific_data: EventSpecificData | None = None
    run_id: str | None = None

    @property
    def event_type(self) -> EventType | str:
        try:
            return EventType(self.event_type_value)
        except ValueError:
            return self.event_type_value

    @property
    def is_step_failure(self) -> bool:
        return self.event_type_value == EventType.STEP_FAILURE

    @property
    def is_run_failure(self) -> bool:
        return self.event_type_value == EventType.RUN_FAILURE

    @property
    def is_asset_materialization(self) -> bool:
        return self.event_type_value == EventType.ASSET_MATERIALIZATION


@dataclass(frozen=True)
class EventLogEntry:
    """One event of the log; ``timestamp`` is POSIX seconds, as in Dagster."""

    run_id: str
    timestamp: float
    step_key: str | None
    job_name: str | None
    storage_id: int
    asset_materialization: AssetMaterialization | None = None
    event: DagsterEvent | None = None  # a run or step event (not a materialization)
    user_message: str = ""

    @property
    def dagster_event(self) -> DagsterEvent | None:
        if self.event is not None:
            return self.event
        m = self.asset_materialization
        if m is None:
            return None
        return DagsterEvent(
            ASSET_MATERIALIZATION,
            self.job_name,
            self.step_key,
            m.asset_key,
            m.partition,
            event_specific_data=EventSpecificData(materialization=m),
            run_id=self.run_id,
        )

    @property
    def is_dagster_event(self) -> bool:
        return self.dagster_event is not None

    @property
    def dagster_event_type(self) -> EventType | str | None:
        event = self.dagster_event
        return event.event_type if event is not None else None


@dataclass(frozen=True)
class EventLogRecord:
    """An event with its ``storage_id``: its place in the log, what cursors hold."""

    storage_id: int
    event_log_entry: EventLogEntry

    @property
    def run_id(self) -> str:
        return self.event_log_entry.run_id

    @property
    def timestamp(self) -> float:
        return self.event_log_entry.timestamp

    @property
    def asset_materialization(self) -> AssetMaterialization | None:
        return self.event_log_entry.asset_materialization

    @property
    def asset_key(self) -> AssetKey | None:
        m = self.event_log_entry.asset_materialization
        return m.asset_key if m is not None else None

    @property
    def partition_key(self) -> str | None:
        m = self.event_log_entry.asset_materialization
        return m.partition if m is not None else None


@dataclass(frozen=True)
class EventRecordsFilter:
    """Which events ``get_event_records`` returns, as in Dagster: ``event_type`` (required),
    and optionally an ``asset_key`` and its ``asset_partitions`` (materializations), storage id
    bounds (``after_cursor`` < id < ``before_cursor``), times and ``storage_ids``.

    A read with ``after_cursor`` (and no ``before_cursor``) stops below any event whose
    transaction may still commit (see tidegate.storage.events), so a cursor kept from the
    records it returns never skips an event."""

    event_type: EventType | str
    asset_key: CoercibleToAssetKey | None = None
    asset_partitions: Sequence[str] | None = None
    after_cursor: int | None = None
    before_cursor: int | None = None
    after_timestamp: float | None = None
    before_timestamp: float | None = None
    storage_ids: Sequence[int] | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "event_type", EventType(str(self.event_type)))
        except ValueError:
            raise InvalidInvocationError(
                f"EventRecordsFilter: unknown event_type {self.event_type!r} "
                f"(one of {', '.join(sorted(e.value for e in EventType))})"
            ) from None
        for name in ("after_cursor", "before_cursor"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InvalidInvocationError(f"EventRecordsFilter: {name} must be a storage id (int), got {value!r}")
        if self.asset_key is not None:
            object.__setattr__(self, "asset_key", AssetKey.from_coercible(self.asset_key))
        if isinstance(self.asset_partitions, str):
            raise InvalidInvocationError("EventRecordsFilter: asset_partitions must be a list of partition keys")


@dataclass(frozen=True)
class AssetRecordsFilter:
    """``fetch_materializations``' filter: one asset, optionally some partitions and bounds."""

    asset_key: CoercibleToAssetKey
    asset_partitions: Sequence[str] | None = None
    after_storage_id: int | None = None
    before_storage_id: int | None = None
    after_timestamp: float | None = None
    before_timestamp: float | None = None


@dataclass(frozen=True)
class EventRecordsResult:
    """A page of records; ``cursor`` continues after its last record, ``has_more`` says whether
    another page is there."""

    records: Sequence[EventLogRecord]
    cursor: str
    has_more: bool


EventLogConnection = EventRecordsResult


class Instance(Protocol):
    """What ``context.instance`` offers a schedule or sensor (reads only; a tick's writes go
    through what it returns: runs, cursor, dynamic partitions requests)."""

    def get_runs(
        self, filters: RunsFilter | None = None, cursor: str | None = None, limit: int | None = None
    ) -> Sequence[DagsterRun]: ...

    def get_run_records(
        self,
        filters: RunsFilter | None = None,
        limit: int | None = None,
        order_by: str | None = None,
        ascending: bool = False,
        cursor: str | None = None,
    ) -> Sequence[RunRecord]: ...

    def get_runs_count(self, filters: RunsFilter | None = None) -> int: ...

    def get_run_by_id(self, run_id: str) -> DagsterRun | None: ...

    def get_run_record_by_id(self, run_id: str) -> RunRecord | None: ...

    def get_latest_materialization_event(self, asset_key: CoercibleToAssetKey) -> EventLogEntry | None: ...

    def get_latest_materialization_events(
        self, asset_keys: Sequence[CoercibleToAssetKey]
    ) -> Mapping[AssetKey, EventLogEntry | None]: ...

    def get_event_records(
        self, event_records_filter: EventRecordsFilter, limit: int | None = None, ascending: bool = False
    ) -> Sequence[EventLogRecord]: ...

    def fetch_materializations(
        self,
        records_filter: CoercibleToAssetKey | AssetRecordsFilter,
        limit: int,
        cursor: str | None = None,
        ascending: bool = False,
    ) -> EventRecordsResult: ...

    def get_records_for_run(
        self,
        run_id: str,
        cursor: str | None = None,
        of_type: EventType | str | None = None,
        limit: int | None = None,
        ascending: bool = True,
    ) -> EventRecordsResult: ...

    def records_for_runs(
        self, run_ids: Sequence[str], of_type: EventType | str
    ) -> Mapping[str, Sequence[EventLogRecord]]:
        """The events of type ``of_type`` of each of ``run_ids`` (one query for a batch)."""
        ...

    def event_log_horizon(self, source: str) -> int:
        """The highest storage id of ``source`` ("materializations" or "events") below which
        every event has committed or never will: what a tick reads up to."""
        ...

    def latest_materialization_records(
        self, after: Mapping[AssetKey, int | None], up_to: int
    ) -> Mapping[AssetKey, EventLogRecord]:
        """Per asset, its newest materialization with ``after[key]`` < id <= ``up_to``."""
        ...

    def materialization_records(
        self, after: Mapping[AssetKey, int | None], up_to: int, limit: int | None = None
    ) -> Sequence[EventLogRecord]:
        """The materializations of the assets of ``after``, each after its own cursor, in id order."""
        ...

    def count_event_records(self, event_records_filter: EventRecordsFilter) -> tuple[int, float | None]:
        """(how many events match, the oldest one's POSIX timestamp): a sensor's lag."""
        ...

    def count_materialization_records(self, after: Mapping[AssetKey, int | None]) -> tuple[int, float | None]:
        """``count_event_records`` for several assets, each after its own cursor."""
        ...

    def get_dynamic_partitions(self, partitions_def_name: str) -> Sequence[str]: ...

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool: ...
