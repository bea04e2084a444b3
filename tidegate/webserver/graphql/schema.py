"""The ``/graphql`` schema: the subset of Dagster's GraphQL API that ``DagsterGraphQLClient``
(``submit_job_execution``, ``get_run_status``, ``reload_repository_location``,
``shutdown_repository_location``) and common trigger scripts use, so they work against tidegate
by changing the host. Read docs/graphql.md for what each field does here.

Reads need any valid token (viewer); launching and terminating need launcher; starting and
stopping schedules and sensors, setting cursors and reloading the code location need admin.
A caller whose role is too low gets Dagster's ``UnauthorizedError`` result.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from tidegate.errors import RunNotFoundError as RunNotFound
from tidegate.errors import TidegateError
from tidegate.storage.run_search import RunFilter
from tidegate.webserver.graphql import control, launch
from tidegate.webserver.graphql.context import GraphQLContext
from tidegate.webserver.graphql.errors import (
    FieldNotDefinedConfigError,
    InvalidPipelineRunsFilterError,
    PythonError,
    RepositoryNotFoundError,
    RunNotFoundError,
    RuntimeMismatchConfigError,
    ScheduleNotFoundError,
    SensorNotFoundError,
    log_unexpected,
)
from tidegate.webserver.graphql.inputs import (
    RUN_CONFIG_SCALAR,
    ExecutionParams,
    LaunchBackfillParams,
    RepositorySelector,
    RunConfigData,
    RunsFilter,
    ScheduleSelector,
    SensorSelector,
    TerminateRunPolicy,
    tag_dict,
)
from tidegate.webserver.graphql.types import Repository, RepositoryLocation, Run, Runs, Schedule, schedule_of, sensor_of

MAX_RUNS_PAGE = 1000  # runsOrError returns at most this many runs per call (Dagster: unbounded)

Info = strawberry.Info[GraphQLContext, None]

RunOrError = Annotated[Run | RunNotFoundError | PythonError, strawberry.union("RunOrError")]
RunsOrError = Annotated[Runs | InvalidPipelineRunsFilterError | PythonError, strawberry.union("RunsOrError")]
ScheduleOrError = Annotated[Schedule | ScheduleNotFoundError | PythonError, strawberry.union("ScheduleOrError")]


@strawberry.type
class RepositoryConnection:
    nodes: list[Repository]


@strawberry.type
class Workspace:
    id: str
    location_entries: list[control.WorkspaceLocationEntry]


RepositoriesOrError = Annotated[
    RepositoryConnection | RepositoryNotFoundError | PythonError, strawberry.union("RepositoriesOrError")
]
WorkspaceOrError = Annotated[Workspace | PythonError, strawberry.union("WorkspaceOrError")]


def _run_or_error(context: GraphQLContext, run_id: str) -> RunOrError:
    try:
        return Run(record=context.storage.get_run(run_id))
    except RunNotFound as exc:
        return RunNotFoundError(run_id=run_id, message=str(exc))


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _runs(context: GraphQLContext, given: RunsFilter | None, cursor: str | None, limit: int | None) -> RunsOrError:
    given = given or RunsFilter()
    if given.updated_after is not None or given.updated_before is not None:
        return InvalidPipelineRunsFilterError(message="runsFilter: updatedAfter/updatedBefore are not supported")
    if limit is not None and limit < 0:
        return InvalidPipelineRunsFilterError(message=f"runsOrError: limit must be >= 0, got {limit}")
    run_filter = RunFilter(
        run_ids=[i for i in given.run_ids if i] if given.run_ids is not None else None,
        job_name=given.pipeline_name,
        statuses=[s.value for s in given.statuses] if given.statuses else None,
        tags=tag_dict(given.tags),
        created_after=_time(given.created_after),
        created_before=_time(given.created_before),
    )
    page = min(limit if limit is not None else MAX_RUNS_PAGE, MAX_RUNS_PAGE)
    try:
        found = context.storage.search_runs(run_filter, after=cursor, limit=page)
    except TidegateError as exc:
        return InvalidPipelineRunsFilterError(message=str(exc))
    return Runs(results=[Run(record=r) for r in found])


@strawberry.type
class Query:
    @strawberry.field
    def version(self) -> str:
        from importlib.metadata import version

        return version("tidegate")

    @strawberry.field
    def run_or_error(self, info: Info, run_id: strawberry.ID) -> RunOrError:
        return _run_or_error(info.context, str(run_id))

    @strawberry.field  # Dagster's older name of runOrError (what DagsterGraphQLClient.get_run_status reads)
    def pipeline_run_or_error(self, info: Info, run_id: strawberry.ID) -> RunOrError:
        return _run_or_error(info.context, str(run_id))

    @strawberry.field  # newest first; cursor: the last run id of the previous page; at most MAX_RUNS_PAGE runs
    def runs_or_error(
        self, info: Info, filter: RunsFilter | None = None, cursor: str | None = None, limit: int | None = None
    ) -> RunsOrError:
        return _runs(info.context, filter, cursor, limit)

    @strawberry.field
    def repositories_or_error(
        self, info: Info, repository_selector: RepositorySelector | None = None
    ) -> RepositoriesOrError:
        if repository_selector is not None and not control.is_here(
            info.context, repository_selector.repository_location_name, repository_selector.repository_name
        ):
            return RepositoryNotFoundError(
                message=f"repository '{repository_selector.repository_name}' in code location "
                f"'{repository_selector.repository_location_name}': not found",
                repository_name=repository_selector.repository_name,
                repository_location_name=repository_selector.repository_location_name,
            )
        return RepositoryConnection(nodes=[Repository()])

    @strawberry.field
    def workspace_or_error(self, info: Info) -> WorkspaceOrError:
        entry = control.location_entry(info.context, RepositoryLocation())
        return Workspace(id="workspace", location_entries=[entry])

    @strawberry.field
    def sensor_or_error(self, info: Info, sensor_selector: SensorSelector) -> control.SensorOrError:
        found = control.find_sensor(info.context, sensor_selector)
        return found if isinstance(found, SensorNotFoundError) else sensor_of(info.context, found)

    @strawberry.field
    def schedule_or_error(self, info: Info, schedule_selector: ScheduleSelector) -> ScheduleOrError:
        found = control.find_schedule(info.context, schedule_selector)
        return found if isinstance(found, ScheduleNotFoundError) else schedule_of(info.context, found)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def launch_run(self, info: Info, execution_params: ExecutionParams) -> launch.LaunchRunResult:
        return launch.launch_run(info.context, execution_params)

    @strawberry.mutation  # Dagster's older name of launchRun (what DagsterGraphQLClient sends)
    def launch_pipeline_execution(self, info: Info, execution_params: ExecutionParams) -> launch.LaunchRunResult:
        return launch.launch_run(info.context, execution_params)

    @strawberry.mutation
    def launch_partition_backfill(
        self, info: Info, backfill_params: LaunchBackfillParams
    ) -> launch.LaunchBackfillResult:
        return launch.launch_backfill(info.context, backfill_params)

    @strawberry.mutation
    def terminate_run(
        self, info: Info, run_id: str, terminate_policy: TerminateRunPolicy | None = None
    ) -> control.TerminateRunResult:
        return control.terminate_run(info.context, run_id)

    @strawberry.mutation
    def terminate_runs(
        self, info: Info, run_ids: list[str], terminate_policy: TerminateRunPolicy | None = None
    ) -> control.TerminateRunsResultOrError:
        return control.terminate_runs(info.context, run_ids)

    @strawberry.mutation
    def start_sensor(self, info: Info, sensor_selector: SensorSelector) -> control.SensorOrError:
        return control.start_sensor(info.context, sensor_selector)

    @strawberry.mutation
    def stop_sensor(
        self, info: Info, id: str | None = None, job_origin_id: str | None = None, job_selector_id: str | None = None
    ) -> control.StopSensorMutationResultOrError:
        return control.stop_sensor(info.context, (id, job_origin_id, job_selector_id))

    @strawberry.mutation
    def set_sensor_cursor(
        self, info: Info, sensor_selector: SensorSelector, cursor: str | None = None
    ) -> control.SensorOrError:
        return control.set_sensor_cursor(info.context, sensor_selector, cursor)

    @strawberry.mutation
    def start_schedule(self, info: Info, schedule_selector: ScheduleSelector) -> control.ScheduleMutationResult:
        return control.start_schedule(info.context, schedule_selector)

    @strawberry.mutation
    def stop_running_schedule(
        self,
        info: Info,
        id: str | None = None,
        schedule_origin_id: str | None = None,
        schedule_selector_id: str | None = None,
    ) -> control.ScheduleMutationResult:
        return control.stop_schedule(info.context, (id, schedule_origin_id, schedule_selector_id))

    @strawberry.mutation
    def reload_repository_location(
        self, info: Info, repository_location_name: str
    ) -> control.ReloadRepositoryLocationMutationResult:
        return control.reload_location(info.context, repository_location_name)

    @strawberry.mutation
    def shutdown_repository_location(
        self, info: Info, repository_location_name: str
    ) -> control.ShutdownRepositoryLocationMutationResult:
        return control.shutdown_location(info.context, repository_location_name)


def _should_mask(error: GraphQLError) -> bool:
    """Hide what an unexpected exception says (it may quote SQL or a path): the response says
    "Unexpected error." and the server logs it. GraphQL's own errors (a syntax or validation
    error names the field) and tidegate's typed errors are shown."""
    original = error.original_error
    if original is None or isinstance(original, TidegateError | GraphQLError):
        return False
    log_unexpected("resolving " + ".".join(str(p) for p in error.path or ()), original)
    return True


class _Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Strawberry logs every error with its traceback, which quotes what an exception says
        (a driver's message may show a database address): unexpected errors are logged by
        _should_mask instead, and a client's own mistakes are not the server's to log."""


schema = _Schema(
    query=Query,
    mutation=Mutation,
    types=[FieldNotDefinedConfigError, RuntimeMismatchConfigError],  # only reached through an interface
    extensions=[lambda: MaskErrors(should_mask_error=_should_mask)],
    config=StrawberryConfig(scalar_map={RunConfigData: RUN_CONFIG_SCALAR}),
)
