"""Plain records returned by the storage API (never live ORM rows)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

R = TypeVar("R")


def from_row(cls: type[R], row: Any) -> R:
    """Build a record dataclass from a result row of the same column names: datetimes come
    back timezone-aware (SQLite returns naive UTC), JSON lists become tuples."""
    values = {}
    for f in fields(cls):  # type: ignore[arg-type]
        value = getattr(row, f.name)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


@dataclass(frozen=True)
class StepRef:
    """Enough to publish one attempt of one step."""

    run_id: str
    step_key: str
    attempt: int
    queue: str
    display_name: str
    timeout: float | None = None  # seconds, passed to Celery as a soft time limit


@dataclass(frozen=True)
class SubmitResult:
    run_id: str
    created: bool  # False when (origin, run_key) already named a run


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    job_name: str
    status: str
    origin: str
    run_key: str | None
    priority: int
    tags: Mapping[str, str]
    asset_selection: tuple[str, ...] | None
    parent_run_id: str | None
    steps_remaining: int
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    # as stored: {"ops": ..., "resources": ...}, an EnvVar as {"env": NAME}; None: no config
    run_config: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class StepRecord:
    run_id: str
    step_key: str
    asset_key: str
    display_name: str
    status: str
    attempt: int
    queue: str
    downstream: tuple[str, ...]
    pending_upstream: int
    worker: str | None
    ready_at: datetime | None
    enqueued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    heartbeat_at: datetime | None
    error: str | None
    pool: str | None
    timeout: float | None

    @property
    def duration(self) -> float | None:
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None


@dataclass(frozen=True)
class EventRecord:
    id: int
    run_id: str
    step_key: str | None
    event_type: str
    timestamp: datetime
    message: str | None
    data: Mapping[str, Any] | None


@dataclass(frozen=True)
class MaterializationRecord:
    id: int  # monotonically increasing: usable as a cursor
    asset_key: str
    partition_key: str | None
    run_id: str
    step_key: str
    metadata: Mapping[str, Any]
    timestamp: datetime


@dataclass(frozen=True)
class ClaimedStep:
    run: RunRecord
    step: StepRecord


@dataclass(frozen=True)
class Continuation:
    """Who may run next, in-process, a child that a completing step makes READY: the worker
    (its name is recorded as the claim's), the queue of the delivery it is running (so one it
    serves) and the completing step's run (only a child of the same run is claimed)."""

    worker: str
    queue: str
    run: RunRecord


@dataclass(frozen=True)
class NewEvent:
    """An event to append in the same transaction as a step's outcome."""

    event_type: str
    message: str | None = None
    data: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class NewMaterialization:
    """A materialization an asset reported itself (a yielded ``AssetMaterialization``), recorded
    in its step's success transaction besides the step's own."""

    asset_key: str
    partition_key: str | None
    metadata: Mapping[str, Any]
    description: str | None = None
