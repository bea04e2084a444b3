"""The object types of the GraphQL schema: runs, the workspace (location, repository, jobs),
schedules and sensors, named and shaped as in Dagster's schema (the subset its client and
common scripts read)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from tidegate.definitions.schedule import ScheduleDefinition
from tidegate.definitions.sensor import SensorDefinition
from tidegate.names import ROOT_RUN_TAG, InstigatorStatus, RunStatus, StepStatus
from tidegate.storage.instigators import InstigatorState
from tidegate.storage.records import RunRecord, StepRecord
from tidegate.webserver.graphql.context import REPOSITORY_NAME, GraphQLContext, Workspace, instigator_id


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


@strawberry.enum(name="RunStatus")
class GraphQLRunStatus(Enum):
    """Dagster's run statuses; tidegate's runs take QUEUED, STARTED, SUCCESS, FAILURE, CANCELED."""

    QUEUED = "QUEUED"
    NOT_STARTED = "NOT_STARTED"
    MANAGED = "MANAGED"
    STARTING = "STARTING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"


@strawberry.enum
class StepEventStatus(Enum):
    SKIPPED = "SKIPPED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    IN_PROGRESS = "IN_PROGRESS"


_STEP_EVENT_STATUS = {
    StepStatus.SUCCEEDED: StepEventStatus.SUCCESS,
    StepStatus.FAILED: StepEventStatus.FAILURE,
    StepStatus.SKIPPED: StepEventStatus.SKIPPED,
    StepStatus.CANCELED: StepEventStatus.SKIPPED,
}


@strawberry.type
class PipelineTag:
    key: str
    value: str


@strawberry.type
class AssetKey:
    path: list[str]


@strawberry.type
class RunStepStats:
    record: strawberry.Private[StepRecord]

    @strawberry.field
    def run_id(self) -> str:
        return self.record.run_id

    @strawberry.field
    def step_key(self) -> str:
        return self.record.step_key

    @strawberry.field
    def status(self) -> StepEventStatus | None:
        """None while the step has not started (Dagster shows no stats for it yet)."""
        if self.record.status in _STEP_EVENT_STATUS:
            return _STEP_EVENT_STATUS[StepStatus(self.record.status)]
        return StepEventStatus.IN_PROGRESS if self.record.started_at is not None else None

    @strawberry.field
    def start_time(self) -> float | None:
        return _timestamp(self.record.started_at)

    @strawberry.field
    def end_time(self) -> float | None:
        return _timestamp(self.record.ended_at)


@strawberry.interface
class PipelineRun:
    """Dagster's older name of a run, kept as an interface its client's queries still name."""

    record: strawberry.Private[RunRecord]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.record.run_id)

    @strawberry.field
    def run_id(self) -> str:
        return self.record.run_id

    @strawberry.field
    def status(self) -> GraphQLRunStatus:
        return GraphQLRunStatus(str(self.record.status))

    @strawberry.field
    def pipeline_name(self) -> str:
        return self.record.job_name

    @strawberry.field
    def job_name(self) -> str:
        return self.record.job_name

    @strawberry.field
    def mode(self) -> str:
        return "default"

    @strawberry.field
    def tags(self) -> list[PipelineTag]:
        return [PipelineTag(key=k, value=v) for k, v in sorted(self.record.tags.items())]

    @strawberry.field
    def root_run_id(self) -> str | None:
        return self.record.tags.get(ROOT_RUN_TAG)

    @strawberry.field
    def parent_run_id(self) -> str | None:
        return self.record.parent_run_id

    @strawberry.field
    def can_terminate(self) -> bool:
        return self.record.status in (RunStatus.QUEUED, RunStatus.STARTED)

    @strawberry.field
    def step_stats(self, info: strawberry.Info[GraphQLContext, None]) -> list[RunStepStats]:
        return [RunStepStats(record=s) for s in info.context.storage.get_steps(self.record.run_id)]


@strawberry.type
class Run(PipelineRun):
    @strawberry.field
    def run_status(self) -> GraphQLRunStatus:
        return GraphQLRunStatus(str(self.record.status))

    @strawberry.field
    def creation_time(self) -> float:
        return self.record.created_at.timestamp()

    @strawberry.field
    def start_time(self) -> float | None:
        return _timestamp(self.record.started_at)

    @strawberry.field
    def end_time(self) -> float | None:
        return _timestamp(self.record.ended_at)

    @strawberry.field
    def update_time(self) -> float | None:
        return _timestamp(self.record.ended_at or self.record.started_at or self.record.created_at)

    @strawberry.field
    def asset_selection(self) -> list[AssetKey] | None:
        if self.record.asset_selection is None:
            return None
        return [AssetKey(path=key.split("/")) for key in self.record.asset_selection]


@strawberry.type
class Runs:
    results: list[Run]

    @strawberry.field
    def count(self) -> int:
        return len(self.results)


@strawberry.interface
class LaunchPipelineRunSuccess:
    run: Run


@strawberry.type
class LaunchRunSuccess(LaunchPipelineRunSuccess):
    pass


@strawberry.type
class TerminateRunSuccess:
    run: Run


@strawberry.type
class TerminateRunFailure:
    run: Run
    message: str


@strawberry.type
class LaunchBackfillSuccess:
    backfill_id: str
    launched_run_ids: list[str | None] | None = None


# -- the workspace: one location holding one repository ------------------------------------


@strawberry.type
class Pipeline:
    """A job (Dagster's ``Pipeline`` and ``Job`` types share these fields)."""

    name: str
    description: str | None = None
    is_job: bool = True


@strawberry.type
class Job(Pipeline):
    pass


@strawberry.enum
class InstigationStatus(Enum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


@strawberry.enum
class InstigationType(Enum):
    SCHEDULE = "SCHEDULE"
    SENSOR = "SENSOR"
    AUTO_MATERIALIZE = "AUTO_MATERIALIZE"


@strawberry.type
class SensorData:
    last_tick_timestamp: float | None
    last_run_key: str | None
    last_cursor: str | None


@strawberry.type
class ScheduleData:
    cron_schedule: str
    start_timestamp: float | None


InstigationTypeSpecificData = Annotated[SensorData | ScheduleData, strawberry.union("InstigationTypeSpecificData")]


@strawberry.type
class InstigationState:
    id: strawberry.ID
    selector_id: str
    name: str
    instigation_type: InstigationType
    status: InstigationStatus
    repository_name: str
    repository_location_name: str
    type_specific_data: InstigationTypeSpecificData | None


class Unread:
    """Marks a state not read yet (None means: nothing is stored)."""


UNREAD = Unread()


def instigation_state(
    workspace: Workspace,
    definition: ScheduleDefinition | SensorDefinition,
    state: InstigatorState | None,
) -> InstigationState:
    """A schedule's or sensor's state: the stored one, else its definition's default status."""
    status = (state.status if state is not None else None) or definition.default_status.value
    ident = instigator_id(workspace, definition.name)
    data: SensorData | ScheduleData
    if isinstance(definition, ScheduleDefinition):
        kind = InstigationType.SCHEDULE
        data = ScheduleData(
            cron_schedule=definition.cron_schedule,
            start_timestamp=_timestamp(state.running_since) if state is not None else None,
        )
    else:
        kind = InstigationType.SENSOR
        data = SensorData(
            last_tick_timestamp=_timestamp(state.last_tick_at) if state is not None else None,
            last_run_key=state.last_run_key if state is not None else None,
            last_cursor=state.cursor if state is not None else None,
        )
    return InstigationState(
        id=strawberry.ID(ident),
        selector_id=ident,
        name=definition.name,
        instigation_type=kind,
        status=InstigationStatus(InstigatorStatus(status).value),
        repository_name=REPOSITORY_NAME,
        repository_location_name=workspace.name,
        type_specific_data=data,
    )


@strawberry.type
class Sensor:
    id: strawberry.ID
    job_origin_id: str
    name: str
    description: str | None
    min_interval_seconds: int
    default_status: InstigationStatus
    sensor_state: InstigationState


@strawberry.type
class Schedule:
    id: strawberry.ID
    name: str
    cron_schedule: str
    pipeline_name: str
    execution_timezone: str | None
    description: str | None
    mode: str
    default_status: InstigationStatus
    schedule_state: InstigationState


def sensor_of(
    context: GraphQLContext, definition: SensorDefinition, stored: InstigatorState | Unread | None = UNREAD
) -> Sensor:
    """The sensor with its state (``stored``: its stored state when the caller read it already)."""
    if isinstance(stored, Unread):
        stored = context.storage.get_instigator(definition.name)
    state = instigation_state(context.workspace, definition, stored)
    return Sensor(
        id=state.id,
        job_origin_id=state.selector_id,
        name=definition.name,
        description=definition.description,
        min_interval_seconds=int(definition.minimum_interval_seconds),
        default_status=InstigationStatus(definition.default_status.value),
        sensor_state=state,
    )


def schedule_of(
    context: GraphQLContext, definition: ScheduleDefinition, stored: InstigatorState | Unread | None = UNREAD
) -> Schedule:
    """The schedule with its state (``stored``: its stored state when the caller read it already)."""
    if isinstance(stored, Unread):
        stored = context.storage.get_instigator(definition.name)
    state = instigation_state(context.workspace, definition, stored)
    return Schedule(
        id=state.id,
        name=definition.name,
        cron_schedule=definition.cron_schedule,
        pipeline_name=definition.target.job_name or "",
        execution_timezone=definition.execution_timezone,
        description=definition.description,
        mode="default",
        default_status=InstigationStatus(definition.default_status.value),
        schedule_state=state,
    )


@strawberry.type
class ScheduleStateResult:
    schedule_state: InstigationState


@strawberry.type
class StopSensorMutationResult:
    instigation_state: InstigationState | None


@strawberry.type
class Repository:
    @strawberry.field
    def id(self, info: strawberry.Info[GraphQLContext, None]) -> strawberry.ID:
        return strawberry.ID(f"{info.context.workspace.name}/{REPOSITORY_NAME}")

    @strawberry.field
    def name(self) -> str:
        return REPOSITORY_NAME

    @strawberry.field
    def location(self) -> RepositoryLocation:
        return RepositoryLocation()

    @strawberry.field
    def pipelines(self, info: strawberry.Info[GraphQLContext, None]) -> list[Pipeline]:
        return list(_jobs(info.context))

    @strawberry.field
    def jobs(self, info: strawberry.Info[GraphQLContext, None]) -> list[Job]:
        return _jobs(info.context)

    @strawberry.field
    def schedules(self, info: strawberry.Info[GraphQLContext, None]) -> list[Schedule]:
        defs, states = info.context.workspace.defs, info.context.storage.instigator_states()
        return [schedule_of(info.context, s, states.get(name)) for name, s in sorted(defs.schedules.items())]

    @strawberry.field
    def sensors(self, info: strawberry.Info[GraphQLContext, None]) -> list[Sensor]:
        defs, states = info.context.workspace.defs, info.context.storage.instigator_states()
        return [sensor_of(info.context, s, states.get(name)) for name, s in sorted(defs.sensors.items())]


def _jobs(context: GraphQLContext) -> list[Job]:
    """Every job, including the implicit asset job (Dagster's ``__ASSET_JOB``)."""
    defs = context.workspace.defs
    return [Job(name=name, description=job.description) for name, job in sorted(defs.jobs.items())]


@strawberry.type
class RepositoryLocation:
    @strawberry.field
    def id(self, info: strawberry.Info[GraphQLContext, None]) -> strawberry.ID:
        return strawberry.ID(info.context.workspace.name)

    @strawberry.field
    def name(self, info: strawberry.Info[GraphQLContext, None]) -> str:
        return info.context.workspace.name

    @strawberry.field
    def is_reload_supported(self, info: strawberry.Info[GraphQLContext, None]) -> bool:
        return info.context.workspace.reload_supported

    @strawberry.field
    def repositories(self) -> list[Repository]:
        return [Repository()]


@strawberry.enum
class RepositoryLocationLoadStatus(Enum):
    LOADING = "LOADING"
    LOADED = "LOADED"
