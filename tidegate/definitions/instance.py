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
from tidegate.names import RunStatus

DagsterRunStatus = RunStatus
"""Dagster's name for run statuses. tidegate runs are QUEUED, STARTED, SUCCESS, FAILURE or
CANCELED; Dagster's transitional NOT_STARTED, STARTING and CANCELING do not occur."""

ASSET_MATERIALIZATION = "ASSET_MATERIALIZATION"


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
class DagsterEvent:
    """The structured part of an event log entry (``entry.dagster_event.asset_key``)."""

    event_type_value: str
    job_name: str | None
    step_key: str | None
    asset_key: AssetKey | None
    partition: str | None


@dataclass(frozen=True)
class EventLogEntry:
    """One event of the log; ``timestamp`` is POSIX seconds, as in Dagster."""

    run_id: str
    timestamp: float
    step_key: str | None
    job_name: str | None
    storage_id: int
    asset_materialization: AssetMaterialization | None = None

    @property
    def dagster_event(self) -> DagsterEvent | None:
        m = self.asset_materialization
        if m is None:
            return None
        return DagsterEvent(ASSET_MATERIALIZATION, self.job_name, self.step_key, m.asset_key, m.partition)

    @property
    def is_dagster_event(self) -> bool:
        return self.asset_materialization is not None


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

    def get_dynamic_partitions(self, partitions_def_name: str) -> Sequence[str]: ...

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool: ...
