"""/api/v1/schedules and /api/v1/sensors: state, next tick, cursor and lag; start/stop (admin);
ticks (paginated); set/reset a sensor's cursor (admin); preview (commits nothing)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.requests import HTTPConnection

from tidegate.definitions.context import Resources
from tidegate.definitions.cron import cron_ticks
from tidegate.definitions.defs import Definitions
from tidegate.definitions.event_sensor import EventSensorDefinition
from tidegate.definitions.limits import check_cursor
from tidegate.definitions.run_request import Evaluation
from tidegate.definitions.schedule import ScheduleDefinition, ScheduleEvaluationContext
from tidegate.definitions.sensor import SensorDefinition, SensorEvaluationContext
from tidegate.errors import NotFoundError, TidegateError
from tidegate.names import InstigatorStatus, Role
from tidegate.storage.api import Storage
from tidegate.storage.instance import DagsterInstance
from tidegate.storage.instigators import InstigatorState
from tidegate.webserver.app import web_context
from tidegate.webserver.auth import Principal, require_role
from tidegate.webserver.errors import error_responses
from tidegate.webserver.models import (
    CursorRequest,
    PreviewRequest,
    PreviewTick,
    RequestedRun,
    Schedule,
    Sensor,
    SensorLag,
    StartRequest,
    Tick,
    TickPage,
)

log = logging.getLogger("tidegate.webserver")
router = APIRouter(responses=error_responses())
Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER))]
Launcher = Annotated[Principal, Depends(require_role(Role.LAUNCHER))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]
PREVIEW_LOG = logging.getLogger("tidegate.preview")


def _schedule(defs: Definitions, name: str) -> ScheduleDefinition:
    found = defs.schedules.get(name)
    if found is None:
        raise NotFoundError(f"schedule '{name}': not defined in the loaded code")
    return found


def _sensor(defs: Definitions, name: str) -> SensorDefinition:
    found = defs.sensors.get(name)
    if found is None:
        raise NotFoundError(f"sensor '{name}': not defined in the loaded code")
    return found


def _status(default: str, state: InstigatorState | None) -> str:
    return (state.status if state is not None else None) or default


def _schedule_view(s: ScheduleDefinition, state: InstigatorState | None) -> Schedule:
    status = _status(s.default_status.value, state)
    next_tick = state.next_tick_at if state is not None else None
    if status == InstigatorStatus.RUNNING and next_tick is None:
        next_tick = next(cron_ticks(s.cron_schedule, s.timezone, datetime.now(UTC)))
    return Schedule(
        name=s.name,
        cron_schedule=s.cron_schedule,
        execution_timezone=s.execution_timezone,
        status=status,
        default_status=s.default_status.value,
        last_tick_at=state.last_tick_at if state else None,
        next_tick_at=next_tick if status == InstigatorStatus.RUNNING else None,
        target=s.target.describe,
    )


def _sensor_view(storage: Storage, s: SensorDefinition, state: InstigatorState | None) -> Sensor:
    status = _status(s.default_status.value, state)
    lag = None
    if isinstance(s, EventSensorDefinition):
        found = s.lag(DagsterInstance(storage), state.cursor if state else None, storage.db_now().timestamp())
        lag = SensorLag(events_waiting=found.events_waiting, oldest_age_seconds=found.oldest_age_seconds)
    next_tick = None
    if status == InstigatorStatus.RUNNING:
        last = state.last_tick_at if state else None
        next_tick = last + timedelta(seconds=s.minimum_interval_seconds) if last else datetime.now(UTC)
    return Sensor(
        name=s.name,
        minimum_interval_seconds=s.minimum_interval_seconds,
        status=status,
        default_status=s.default_status.value,
        last_tick_at=state.last_tick_at if state else None,
        next_tick_at=next_tick,
        cursor=state.cursor if state else None,
        lag=lag,
        target=s.target.describe,
    )


def _ticks(storage: Storage, name: str, before: int | None, limit: int) -> TickPage:
    records = storage.get_ticks(name, limit=limit, before_id=before)
    return TickPage(ticks=[Tick.of(t) for t in records], next_cursor=records[-1].id if len(records) == limit else None)


def _requested(evaluation: Evaluation) -> list[RequestedRun]:
    return [
        RequestedRun(run_key=r.run_key, job_name=r.job_name, partition_key=r.partition_key, tags=dict(r.tags))
        for r in evaluation.run_requests
    ]


# -- schedules ----------------------------------------------------------------------------------


@router.get("/schedules", tags=["schedules"], summary="Every schedule with its state and next tick")
def list_schedules(principal: Viewer, connection: HTTPConnection) -> list[Schedule]:
    context = web_context(connection)
    states = context.storage.instigator_states()
    return [_schedule_view(s, states.get(name)) for name, s in sorted(context.defs.schedules.items())]


@router.get("/schedules/{name}", tags=["schedules"], summary="One schedule", responses=error_responses(404))
def get_schedule(name: str, principal: Viewer, connection: HTTPConnection) -> Schedule:
    context = web_context(connection)
    return _schedule_view(_schedule(context.defs, name), context.storage.get_instigator(name))


def _set_status(connection: HTTPConnection, kind: str, name: str, status: InstigatorStatus, who: Principal) -> None:
    web_context(connection).storage.set_instigator_status(name, kind, status, datetime.now(UTC))
    log.info("%s %s set %s by token '%s'", kind, name, status, who.name)


@router.post("/schedules/{name}/start", tags=["schedules"], summary="Start a schedule", responses=error_responses(404))
def start_schedule(name: str, principal: Admin, connection: HTTPConnection) -> Schedule:
    _schedule(web_context(connection).defs, name)
    _set_status(connection, "schedule", name, InstigatorStatus.RUNNING, principal)
    return get_schedule(name, principal, connection)


@router.post("/schedules/{name}/stop", tags=["schedules"], summary="Stop a schedule", responses=error_responses(404))
def stop_schedule(name: str, principal: Admin, connection: HTTPConnection) -> Schedule:
    _schedule(web_context(connection).defs, name)
    _set_status(connection, "schedule", name, InstigatorStatus.STOPPED, principal)
    return get_schedule(name, principal, connection)


@router.get(
    "/schedules/{name}/ticks",
    tags=["schedules"],
    summary="A schedule's ticks, newest first",
    responses=error_responses(404),
)
def schedule_ticks(
    name: str,
    principal: Viewer,
    connection: HTTPConnection,
    before: Annotated[int | None, Query(ge=0, le=2**62, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> TickPage:
    context = web_context(connection)
    _schedule(context.defs, name)
    return _ticks(context.storage, name, before, limit)


@router.get(
    "/schedules/{name}/preview",
    tags=["schedules"],
    summary="The next ticks and what each would request (commits nothing)",
    responses=error_responses(404),
)
def preview_schedule(
    name: str, principal: Launcher, connection: HTTPConnection, ticks: Annotated[int, Query(ge=1, le=20)] = 5
) -> list[PreviewTick]:
    context = web_context(connection)
    s = _schedule(context.defs, name)
    upcoming = cron_ticks(s.cron_schedule, s.timezone, datetime.now(UTC))
    instance = DagsterInstance(context.storage)
    previews = []
    for _ in range(ticks):
        when = next(upcoming).astimezone(s.timezone)
        schedule_context = ScheduleEvaluationContext(
            when, s.name, Resources(context.defs.resources), PREVIEW_LOG, instance=instance
        )
        try:
            evaluation = s.evaluate(schedule_context, context.defs.resources)
        except Exception as exc:
            previews.append(PreviewTick(tick_time=when, run_requests=[], skip_reason=None, error=repr(exc)))
            continue
        previews.append(
            PreviewTick(
                tick_time=when, run_requests=_requested(evaluation), skip_reason=evaluation.skip_reason, error=None
            )
        )
    return previews


# -- sensors ------------------------------------------------------------------------------------


@router.get("/sensors", tags=["sensors"], summary="Every sensor with its state, cursor and lag")
def list_sensors(principal: Viewer, connection: HTTPConnection) -> list[Sensor]:
    context = web_context(connection)
    states = context.storage.instigator_states()
    return [_sensor_view(context.storage, s, states.get(name)) for name, s in sorted(context.defs.sensors.items())]


@router.get("/sensors/{name}", tags=["sensors"], summary="One sensor", responses=error_responses(404))
def get_sensor(name: str, principal: Viewer, connection: HTTPConnection) -> Sensor:
    context = web_context(connection)
    return _sensor_view(context.storage, _sensor(context.defs, name), context.storage.get_instigator(name))


@router.post("/sensors/{name}/start", tags=["sensors"], summary="Start a sensor", responses=error_responses(400, 404))
def start_sensor(name: str, principal: Admin, connection: HTTPConnection, body: StartRequest | None = None) -> Sensor:
    context = web_context(connection)
    found = _sensor(context.defs, name)
    if body is not None and body.from_beginning:
        if not isinstance(found, EventSensorDefinition):
            raise TidegateError(f"sensor '{name}': from_beginning is for asset and run-status sensors")
        context.storage.set_cursor(name, "sensor", found.beginning_cursor())
    _set_status(connection, "sensor", name, InstigatorStatus.RUNNING, principal)
    return get_sensor(name, principal, connection)


@router.post("/sensors/{name}/stop", tags=["sensors"], summary="Stop a sensor", responses=error_responses(404))
def stop_sensor(name: str, principal: Admin, connection: HTTPConnection) -> Sensor:
    _sensor(web_context(connection).defs, name)
    _set_status(connection, "sensor", name, InstigatorStatus.STOPPED, principal)
    return get_sensor(name, principal, connection)


@router.get(
    "/sensors/{name}/ticks", tags=["sensors"], summary="A sensor's ticks, newest first", responses=error_responses(404)
)
def sensor_ticks(
    name: str,
    principal: Viewer,
    connection: HTTPConnection,
    before: Annotated[int | None, Query(ge=0, le=2**62, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> TickPage:
    context = web_context(connection)
    _sensor(context.defs, name)
    return _ticks(context.storage, name, before, limit)


@router.put(
    "/sensors/{name}/cursor", tags=["sensors"], summary="Set a sensor's cursor", responses=error_responses(400, 404)
)
def set_sensor_cursor(name: str, body: CursorRequest, principal: Admin, connection: HTTPConnection) -> Sensor:
    context = web_context(connection)
    found = _sensor(context.defs, name)
    if isinstance(found, EventSensorDefinition):
        found.check_cursor(body.cursor)  # a storage id (JSON per asset for a multi-asset sensor), or refused
    context.storage.set_cursor(name, "sensor", check_cursor(f"sensor '{name}'", body.cursor))
    log.info("sensor %s cursor set by token '%s'", name, principal.name)
    return get_sensor(name, principal, connection)


@router.delete(
    "/sensors/{name}/cursor",
    tags=["sensors"],
    summary="Reset (clear) a sensor's cursor",
    responses=error_responses(404),
)
def reset_sensor_cursor(name: str, principal: Admin, connection: HTTPConnection) -> Sensor:
    context = web_context(connection)
    _sensor(context.defs, name)
    context.storage.set_cursor(name, "sensor", None)
    log.info("sensor %s cursor reset by token '%s'", name, principal.name)
    return get_sensor(name, principal, connection)


@router.post(
    "/sensors/{name}/preview",
    tags=["sensors"],
    summary="Evaluate a sensor once: what it would request and the cursor it would store (commits nothing)",
    responses=error_responses(400, 404),
)
def preview_sensor(
    name: str, principal: Launcher, connection: HTTPConnection, body: PreviewRequest | None = None
) -> PreviewTick:
    context = web_context(connection)
    s = _sensor(context.defs, name)
    state = context.storage.get_instigator(name)
    cursor = body.cursor if body is not None and body.cursor is not None else (state.cursor if state else None)
    sensor_context = SensorEvaluationContext(
        sensor_name=name,
        cursor=cursor,
        last_tick_completion_time=state.last_tick_at if state else None,
        last_run_key=state.last_run_key if state else None,
        resources=Resources(context.defs.resources),
        log=PREVIEW_LOG,
        instance=DagsterInstance(context.storage),
    )
    try:
        evaluation = s.evaluate(sensor_context, context.defs.resources)
    except Exception as exc:
        return PreviewTick(tick_time=None, run_requests=[], skip_reason=None, error=repr(exc))
    return PreviewTick(
        tick_time=None,
        run_requests=_requested(evaluation),
        skip_reason=evaluation.skip_reason,
        error=None,
        cursor=evaluation.cursor,
        cursor_set=evaluation.cursor_set,
    )
