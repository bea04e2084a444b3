"""Mutations that change what runs: terminating runs, starting and stopping schedules and
sensors, setting a sensor's cursor, reloading the code location. Each checks the caller's role
first (launcher terminates; admin changes instigators, cursors and the workspace)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import strawberry

from tidegate.definitions.event_sensor import EventSensorDefinition
from tidegate.definitions.limits import check_cursor
from tidegate.definitions.schedule import ScheduleDefinition
from tidegate.definitions.sensor import SensorDefinition
from tidegate.errors import RunNotFoundError as RunNotFound
from tidegate.errors import TidegateError
from tidegate.names import InstigatorStatus, Role
from tidegate.webserver.graphql.context import REPOSITORY_NAME, GraphQLContext, instigator_id
from tidegate.webserver.graphql.errors import (
    PythonError,
    ReloadNotSupported,
    RepositoryLocationNotFound,
    RunNotFoundError,
    ScheduleNotFoundError,
    SensorNotFoundError,
    UnauthorizedError,
    log_unexpected,
)
from tidegate.webserver.graphql.inputs import ScheduleSelector, SensorSelector
from tidegate.webserver.graphql.launch import unauthorized
from tidegate.webserver.graphql.types import (
    RepositoryLocation,
    RepositoryLocationLoadStatus,
    Run,
    ScheduleStateResult,
    Sensor,
    StopSensorMutationResult,
    TerminateRunFailure,
    TerminateRunSuccess,
    schedule_of,
    sensor_of,
)

T = TypeVar("T")

TerminateRunResult = Annotated[
    TerminateRunSuccess | TerminateRunFailure | RunNotFoundError | UnauthorizedError | PythonError,
    strawberry.union("TerminateRunResult"),
]


@strawberry.type
class TerminateRunsResult:
    terminate_run_results: list[TerminateRunResult]


TerminateRunsResultOrError = Annotated[
    TerminateRunsResult | PythonError, strawberry.union("TerminateRunsResultOrError")
]
SensorOrError = Annotated[
    Sensor | SensorNotFoundError | UnauthorizedError | PythonError, strawberry.union("SensorOrError")
]
StopSensorMutationResultOrError = Annotated[
    StopSensorMutationResult | UnauthorizedError | PythonError, strawberry.union("StopSensorMutationResultOrError")
]
ScheduleMutationResult = Annotated[
    PythonError | UnauthorizedError | ScheduleStateResult | ScheduleNotFoundError,
    strawberry.union("ScheduleMutationResult"),
]
RepositoryLocationOrLoadError = Annotated[
    RepositoryLocation | PythonError, strawberry.union("RepositoryLocationOrLoadError")
]


@strawberry.type
class WorkspaceLocationEntry:
    id: strawberry.ID
    name: str
    location_or_load_error: RepositoryLocationOrLoadError | None
    load_status: RepositoryLocationLoadStatus
    updated_timestamp: float


@strawberry.type
class ShutdownRepositoryLocationSuccess:
    repository_location_name: str


ReloadRepositoryLocationMutationResult = Annotated[
    WorkspaceLocationEntry | ReloadNotSupported | RepositoryLocationNotFound | UnauthorizedError | PythonError,
    strawberry.union("ReloadRepositoryLocationMutationResult"),
]
ShutdownRepositoryLocationMutationResult = Annotated[
    ShutdownRepositoryLocationSuccess | RepositoryLocationNotFound | UnauthorizedError | PythonError,
    strawberry.union("ShutdownRepositoryLocationMutationResult"),
]


def guarded(action: str, fn: Callable[[], T]) -> T | PythonError:
    """Run ``fn``; a typed error becomes a PythonError with its message, anything else a
    PythonError naming only its class (the details go to the server's log)."""
    try:
        return fn()
    except TidegateError as exc:
        return PythonError.of(exc)
    except Exception as exc:
        log_unexpected(action, exc)
        return PythonError.of(exc)


def location_entry(context: GraphQLContext, loaded: RepositoryLocation | PythonError) -> WorkspaceLocationEntry:
    name = context.workspace.name
    return WorkspaceLocationEntry(
        id=strawberry.ID(name),
        name=name,
        location_or_load_error=loaded,
        load_status=RepositoryLocationLoadStatus.LOADED,
        updated_timestamp=datetime.now(UTC).timestamp(),
    )


# -- runs --------------------------------------------------------------------------------------


def terminate_run(context: GraphQLContext, run_id: str) -> TerminateRunResult:
    if not context.allows(Role.LAUNCHER):
        return unauthorized(context, Role.LAUNCHER, "terminating a run")
    return guarded("terminating a run", lambda: _terminate(context, run_id))


def terminate_runs(context: GraphQLContext, run_ids: list[str]) -> TerminateRunsResultOrError:
    return TerminateRunsResult(terminate_run_results=[terminate_run(context, run_id) for run_id in run_ids])


def _terminate(context: GraphQLContext, run_id: str) -> TerminateRunResult:
    storage = context.storage
    try:
        storage.get_run(run_id)
    except RunNotFound as exc:
        return RunNotFoundError(run_id=run_id, message=str(exc))
    result = storage.cancel_run(run_id)
    if not result.canceled:
        run = storage.get_run(run_id)
        return TerminateRunFailure(
            run=Run(record=run), message=f"run '{run_id}': already {run.status}; nothing to cancel"
        )
    if result.running or result.released:
        publisher = context.publisher()
        publisher.revoke(result.running)
        publisher(result.released)  # pool slots it freed went to other runs' waiting steps
    return TerminateRunSuccess(run=Run(record=storage.get_run(run_id)))


# -- schedules and sensors ---------------------------------------------------------------------


def find_sensor(context: GraphQLContext, selector: SensorSelector) -> SensorDefinition | SensorNotFoundError:
    found = context.workspace.defs.sensors.get(selector.sensor_name)
    if found is None or not is_here(context, selector.repository_location_name, selector.repository_name):
        return SensorNotFoundError(
            message=f"sensor '{selector.sensor_name}': not found in code location "
            f"'{selector.repository_location_name}'",
            sensor_name=selector.sensor_name,
        )
    return found


def find_schedule(context: GraphQLContext, selector: ScheduleSelector) -> ScheduleDefinition | ScheduleNotFoundError:
    found = context.workspace.defs.schedules.get(selector.schedule_name)
    if found is None or not is_here(context, selector.repository_location_name, selector.repository_name):
        return ScheduleNotFoundError(
            message=f"schedule '{selector.schedule_name}': not found in code location "
            f"'{selector.repository_location_name}'",
            schedule_name=selector.schedule_name,
        )
    return found


def is_here(context: GraphQLContext, location: str, repository: str) -> bool:
    return location == context.workspace.name and repository == REPOSITORY_NAME


def _by_id(context: GraphQLContext, kind: str, ids: tuple[str | None, ...]) -> str | None:
    """The name of the schedule or sensor whose id is among ``ids`` (Dagster's stop mutations
    take the id, origin id or selector id: all three are the same id here)."""
    defs = context.workspace.defs
    names = defs.sensors if kind == "sensor" else defs.schedules
    wanted = {i for i in ids if i}
    return next((n for n in names if instigator_id(context.workspace, n) in wanted), None)


def start_sensor(context: GraphQLContext, selector: SensorSelector) -> SensorOrError:
    if not context.allows(Role.ADMIN):
        return unauthorized(context, Role.ADMIN, "starting a sensor")
    found = find_sensor(context, selector)
    if isinstance(found, SensorNotFoundError):
        return found
    return guarded("starting a sensor", lambda: _set_status(context, found, InstigatorStatus.RUNNING))


def _set_status(context: GraphQLContext, definition: SensorDefinition, status: InstigatorStatus) -> Sensor:
    context.storage.set_instigator_status(definition.name, "sensor", status, datetime.now(UTC))
    return sensor_of(context, definition)


def stop_sensor(context: GraphQLContext, ids: tuple[str | None, ...]) -> StopSensorMutationResultOrError:
    if not context.allows(Role.ADMIN):
        return unauthorized(context, Role.ADMIN, "stopping a sensor")
    name = _by_id(context, "sensor", ids)
    if name is None:
        return PythonError(message=f"sensor with id {next((i for i in ids if i), '')!r}: not found", class_name=None)
    definition = context.workspace.defs.sensors[name]

    def stop() -> StopSensorMutationResult:
        return StopSensorMutationResult(
            instigation_state=_set_status(context, definition, InstigatorStatus.STOPPED).sensor_state
        )

    return guarded("stopping a sensor", stop)


def set_sensor_cursor(context: GraphQLContext, selector: SensorSelector, cursor: str | None) -> SensorOrError:
    if not context.allows(Role.ADMIN):
        return unauthorized(context, Role.ADMIN, "setting a sensor's cursor")
    found = find_sensor(context, selector)
    if isinstance(found, SensorNotFoundError):
        return found

    def store() -> Sensor:
        if cursor is not None and isinstance(found, EventSensorDefinition):
            found.check_cursor(cursor)  # a storage id (JSON per asset for a multi-asset sensor), or refused
        context.storage.set_cursor(found.name, "sensor", check_cursor(f"sensor '{found.name}'", cursor))
        return sensor_of(context, found)

    return guarded("setting a sensor's cursor", store)


def start_schedule(context: GraphQLContext, selector: ScheduleSelector) -> ScheduleMutationResult:
    if not context.allows(Role.ADMIN):
        return unauthorized(context, Role.ADMIN, "starting a schedule")
    found = find_schedule(context, selector)
    if isinstance(found, ScheduleNotFoundError):
        return found
    return guarded("starting a schedule", lambda: _set_schedule(context, found, InstigatorStatus.RUNNING))


def stop_schedule(context: GraphQLContext, ids: tuple[str | None, ...]) -> ScheduleMutationResult:
    if not context.allows(Role.ADMIN):
        return unauthorized(context, Role.ADMIN, "stopping a schedule")
    name = _by_id(context, "schedule", ids)
    if name is None:
        shown = next((i for i in ids if i), "")
        return ScheduleNotFoundError(message=f"schedule with id {shown!r}: not found", schedule_name="")
    definition = context.workspace.defs.schedules[name]
    return guarded("stopping a schedule", lambda: _set_schedule(context, definition, InstigatorStatus.STOPPED))


def _set_schedule(
    context: GraphQLContext, definition: ScheduleDefinition, status: InstigatorStatus
) -> ScheduleStateResult:
    context.storage.set_instigator_status(definition.name, "schedule", status, datetime.now(UTC))
    return ScheduleStateResult(schedule_state=schedule_of(context, definition).schedule_state)


# -- the code location -------------------------------------------------------------------------


def reload_location(context: GraphQLContext, name: str) -> ReloadRepositoryLocationMutationResult:
    if not context.allows(Role.ADMIN):
        return unauthorized(context, Role.ADMIN, "reloading a code location")
    workspace = context.workspace
    if name != workspace.name:
        return RepositoryLocationNotFound(
            message=f"code location '{name}': not served here (this webserver serves '{workspace.name}')"
        )
    if not workspace.reload_supported:
        return ReloadNotSupported(message=f"code location '{name}': given as a Definitions object; cannot reload")
    loaded = guarded("reloading the code location", lambda: (workspace.reload(), RepositoryLocation())[1])
    return location_entry(context, loaded)


def shutdown_location(context: GraphQLContext, name: str) -> ShutdownRepositoryLocationMutationResult:
    if not context.allows(Role.ADMIN):
        return unauthorized(context, Role.ADMIN, "shutting down a code location")
    if name != context.workspace.name:
        return RepositoryLocationNotFound(
            message=f"code location '{name}': not served here (this webserver serves '{context.workspace.name}')"
        )
    return PythonError(
        message=f"code location '{name}': runs inside the webserver, not in a code server that could be shut down; "
        "use reloadRepositoryLocation to load new code",
        class_name="ShutdownNotSupported",
    )
