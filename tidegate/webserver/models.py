"""The request and response bodies of the REST API (pydantic; they make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tidegate.definitions.automation_records import EvaluationRecord
from tidegate.storage.automation import EvaluationRow
from tidegate.storage.backfills import BackfillProgress, BackfillRecord
from tidegate.storage.instigators import TickRecord
from tidegate.storage.records import EventRecord, MaterializationRecord, RunRecord, StepRecord


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- runs -------------------------------------------------------------------------------------


class LaunchRequest(_Strict):
    """Launch a job (``job``) or materialize an asset selection (``asset_selection``, e.g.
    ``"raw_orders+"``): exactly one of the two."""

    job: str | None = Field(None, description="The job to launch.")
    asset_selection: str | None = Field(None, description="Assets to materialize, in the selection syntax.")
    partition: str | None = Field(None, description="The partition key, for a partitioned job or selection.")
    tags: dict[str, str] = Field(default_factory=dict)
    run_key: str | None = Field(None, description="Idempotency key: a second launch with it answers 409.")
    priority: int | None = Field(None, description="Run priority (default: the tidegate/priority tag, else 0).")
    run_config: dict[str, Any] | None = Field(
        None,
        description=(
            'The run\'s config in RunConfig\'s dict form: {"ops": {NAME: {"config": {...}}}, '
            '"resources": {KEY: {"config": {...}}}}; an environment variable as {"env": "NAME"}. '
            "Default: the job's default config. Checked against the job before any run exists."
        ),
    )


class ReexecuteRequest(_Strict):
    from_failure: bool = Field(False, description="Only the steps that did not succeed.")


class Run(BaseModel):
    run_id: str
    job_name: str
    status: str
    origin: str
    run_key: str | None
    priority: int
    tags: dict[str, str]
    asset_selection: list[str] | None
    parent_run_id: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None

    @classmethod
    def of(cls, r: RunRecord) -> Run:
        return cls(
            run_id=r.run_id,
            job_name=r.job_name,
            status=r.status,
            origin=r.origin,
            run_key=r.run_key,
            priority=r.priority,
            tags=dict(r.tags),
            asset_selection=list(r.asset_selection) if r.asset_selection is not None else None,
            parent_run_id=r.parent_run_id,
            created_at=r.created_at,
            started_at=r.started_at,
            ended_at=r.ended_at,
            duration_seconds=_duration(r.started_at, r.ended_at),
        )


class Step(BaseModel):
    step_key: str
    asset_key: str
    status: str
    attempt: int
    queue: str
    pool: str | None
    worker: str | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    error: str | None

    @classmethod
    def of(cls, s: StepRecord) -> Step:
        return cls(
            step_key=s.step_key,
            asset_key=s.asset_key,
            status=s.status,
            attempt=s.attempt,
            queue=s.queue,
            pool=s.pool,
            worker=s.worker,
            started_at=s.started_at,
            ended_at=s.ended_at,
            duration_seconds=s.duration,
            error=s.error,
        )


class RunDetail(Run):
    run_config: dict[str, Any] | None = Field(
        description="The run's config as stored; each EnvVar shown as '<redacted> (EnvVar NAME)'."
    )
    steps: list[Step]


class RunPage(BaseModel):
    runs: list[Run]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class Event(BaseModel):
    id: int
    run_id: str
    step_key: str | None
    event_type: str
    timestamp: datetime
    message: str | None
    data: dict[str, Any] | None

    @classmethod
    def of(cls, e: EventRecord) -> Event:
        return cls(
            id=e.id,
            run_id=e.run_id,
            step_key=e.step_key,
            event_type=e.event_type,
            timestamp=e.timestamp,
            message=e.message,
            data=dict(e.data) if e.data is not None else None,
        )


class EventPage(BaseModel):
    events: list[Event]
    next_cursor: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class StepLogs(BaseModel):
    run_id: str
    step_key: str
    status: str
    attempt: int
    error: str | None
    logs: list[Event] = Field(description="What the step logged (context.log) and its step events, in order.")


# -- assets -----------------------------------------------------------------------------------


class PartitionCounts(BaseModel):
    materialized: int
    failed: int
    missing: int
    total: int


class Materialization(BaseModel):
    id: int
    asset_key: str
    partition_key: str | None
    run_id: str
    step_key: str
    metadata: dict[str, Any]
    timestamp: datetime

    @classmethod
    def of(cls, m: MaterializationRecord) -> Materialization:
        return cls(
            id=m.id,
            asset_key=m.asset_key,
            partition_key=m.partition_key,
            run_id=m.run_id,
            step_key=m.step_key,
            metadata=dict(m.metadata),
            timestamp=m.timestamp,
        )


class Asset(BaseModel):
    asset_key: str
    group_name: str | None
    description: str | None
    last_materialization: Materialization | None
    partitions: PartitionCounts | None


class AutomationEvaluation(BaseModel):
    """An asset's automation evaluation by one tick of an automation sensor: "why / why not"."""

    asset_key: str
    condition: str | None = Field(description="The asset's automation condition (its label, else its expression).")
    tick_id: int
    sensor: str
    evaluated_at: datetime
    requested: list[str | None] = Field(description="Partition keys requested (null: the unpartitioned asset).")
    run_ids: list[str]
    backfill_ids: list[str]
    explanation: list[str] = Field(
        description="The condition tree as `tidegate automation explain` prints it: one line a node, "
        "indented by depth, `✓`/`✗` (true/false), the reason and [true/candidates]."
    )
    evaluation: dict[str, Any] = Field(
        description="The stored tree: each node's label, why, true and candidate counts."
    )

    @classmethod
    def of(cls, row: EvaluationRow, condition: str | None) -> AutomationEvaluation:
        record = EvaluationRecord.from_dict(row.record)
        return cls(
            asset_key=row.asset_key,
            condition=condition,
            tick_id=row.tick_id,
            sensor=row.sensor,
            evaluated_at=row.evaluated_at,
            requested=list(record.requested),
            run_ids=list(row.run_ids),
            backfill_ids=list(row.backfill_ids),
            explanation=record.explain_lines(),
            evaluation=record.explained_dict(),
        )


class MaterializationPage(BaseModel):
    materializations: list[Materialization]
    next_cursor: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class PartitionState(BaseModel):
    partition_key: str
    status: str
    updated_at: datetime | None
    run_id: str | None


class ReportMaterialization(_Strict):
    """A materialization that happened outside tidegate (typically of an external asset)."""

    partition: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


# -- schedules and sensors --------------------------------------------------------------------


class SensorLag(BaseModel):
    events_waiting: int
    oldest_age_seconds: float | None


class Schedule(BaseModel):
    name: str
    cron_schedule: str
    execution_timezone: str
    status: str
    default_status: str
    last_tick_at: datetime | None
    next_tick_at: datetime | None
    target: str


class Sensor(BaseModel):
    name: str
    minimum_interval_seconds: float
    status: str
    default_status: str
    last_tick_at: datetime | None
    next_tick_at: datetime | None
    cursor: str | None
    lag: SensorLag | None = Field(description="Asset and run-status sensors: events waiting after the cursor.")
    target: str


class StartRequest(_Strict):
    from_beginning: bool = Field(False, description="Asset and run-status sensors: handle every event kept.")


class CursorRequest(_Strict):
    cursor: str


class Tick(BaseModel):
    id: int
    tick_time: datetime
    status: str
    run_ids: list[str]
    new_run_keys: list[str]
    skipped_run_keys: list[str]
    skip_reason: str | None
    error: str | None
    cursor: str | None
    started_at: datetime
    ended_at: datetime

    @classmethod
    def of(cls, t: TickRecord) -> Tick:
        return cls(
            id=t.id,
            tick_time=t.tick_time,
            status=t.status,
            run_ids=list(t.run_ids),
            new_run_keys=list(t.new_run_keys),
            skipped_run_keys=list(t.skipped_run_keys),
            skip_reason=t.skip_reason,
            error=t.error,
            cursor=t.cursor,
            started_at=t.started_at,
            ended_at=t.ended_at,
        )


class TickPage(BaseModel):
    ticks: list[Tick]
    next_cursor: int | None = Field(description="Pass as `before` for the next (older) page; null on the last.")


class RequestedRun(BaseModel):
    run_key: str | None
    job_name: str | None
    partition_key: str | None
    tags: dict[str, str]


class PreviewTick(BaseModel):
    tick_time: datetime | None
    run_requests: list[RequestedRun]
    skip_reason: str | None
    error: str | None
    cursor: str | None = None
    cursor_set: bool = False


class PreviewRequest(_Strict):
    cursor: str | None = Field(None, description="Evaluate from this cursor instead of the stored one.")


# -- backfills, queue, pools ------------------------------------------------------------------


class BackfillRequest(_Strict):
    """Exactly one of a range (``from_key``/``to_key``), ``partitions``, ``all`` or ``missing``."""

    job: str
    from_key: str | None = None
    to_key: str | None = None
    partitions: list[str] | None = None
    all: bool = False
    missing: bool = False
    max_concurrent: int | None = Field(None, ge=1)
    run_config: dict[str, Any] | None = Field(
        default=None, description="Each run's config (RunConfig's dict form; default: the job's), checked first."
    )


class Backfill(BaseModel):
    backfill_id: str
    job_name: str
    status: str
    partitions: int
    partitions_done: int
    partitions_by_run_status: dict[str, int]
    first_partition: str | None
    last_partition: str | None
    max_concurrent: int | None
    created_at: datetime
    ended_at: datetime | None

    @classmethod
    def of(cls, b: BackfillRecord, progress: BackfillProgress) -> Backfill:
        keys = list(b.partition_keys)
        return cls(
            backfill_id=b.backfill_id,
            job_name=b.job_name,
            status=b.status,
            partitions=progress.total,
            partitions_done=progress.done,
            partitions_by_run_status=dict(progress.by_status),
            first_partition=keys[0] if keys else None,
            last_partition=keys[-1] if keys else None,
            max_concurrent=b.max_concurrent,
            created_at=b.created_at,
            ended_at=b.ended_at,
        )


class QueuedRun(BaseModel):
    run_id: str
    job_name: str
    priority: int
    created_at: datetime
    starts: bool = Field(description="Starts at the run queue's next pass.")
    waits_for: str | None = Field(description="Why it waits (a limit it is held by), if it does.")


class Queue(BaseModel):
    max_concurrent_runs: int | None
    in_progress: int
    queued: list[QueuedRun]


class Pool(BaseModel):
    name: str
    slots: int | None
    active: int
    waiting: int


class PoolLimit(_Strict):
    slots: int = Field(ge=0)


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None
