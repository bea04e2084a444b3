"""Schedules and sensors: their state, start/stop, next ticks, tick history (skip reasons and
errors), a sensor's cursor (view, set, reset) and lag. Changes need the admin role, as in the
API; they write the same storage rows as ``tidegate sensor start|stop|cursor``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.responses import Response

from tidegate.definitions.cron import cron_ticks
from tidegate.definitions.event_sensor import EventSensorDefinition
from tidegate.definitions.limits import check_cursor
from tidegate.definitions.schedule import ScheduleDefinition
from tidegate.definitions.sensor import SensorDefinition
from tidegate.errors import NotFoundError
from tidegate.names import InstigatorStatus, Role, TickStatus
from tidegate.storage.instance import DagsterInstance
from tidegate.storage.instigators import InstigatorState
from tidegate.webserver.ui.base import UIRequest, UIRoute, action, page, redirect

router = APIRouter(route_class=UIRoute)
Page = Annotated[UIRequest, Depends(page)]
AdminAction = Annotated[UIRequest, Depends(action(Role.ADMIN))]
TICKS_PER_PAGE = 25
NEXT_TICKS = 5
KINDS = {"schedules": "schedule", "sensors": "sensor"}


def effective_status(definition: ScheduleDefinition | SensorDefinition, state: InstigatorState | None) -> str:
    return (state.status if state and state.status else None) or definition.default_status.value


def next_ticks(schedule: ScheduleDefinition, count: int, now: datetime) -> list[datetime]:
    upcoming = cron_ticks(schedule.cron_schedule, schedule.timezone, now)
    return [next(upcoming).astimezone(schedule.timezone) for _ in range(count)]


def sensor_lag(ui: UIRequest, sensor: SensorDefinition, state: InstigatorState | None) -> str:
    """Events waiting after an event sensor's cursor; for others, the time since the last tick."""
    now = ui.context.storage.db_now()
    if isinstance(sensor, EventSensorDefinition):
        lag = sensor.lag(DagsterInstance(ui.context.storage), state.cursor if state else None, now.timestamp())
        return f"{lag.describe()} events waiting"
    if state is None or state.last_tick_at is None:
        return "never ticked"
    return f"last tick {(now - state.last_tick_at).total_seconds():.0f} s ago"


def _definition(ui: UIRequest, kind: str, name: str) -> ScheduleDefinition | SensorDefinition:
    found: Any = (ui.context.defs.schedules if kind == "schedule" else ui.context.defs.sensors).get(name)
    if found is None:
        raise NotFoundError(f"{kind} '{name}': not defined in the loaded code")
    assert isinstance(found, ScheduleDefinition | SensorDefinition)
    return found


@router.get("/automation")
def automation_list(ui: Page) -> Response:
    defs, storage = ui.context.defs, ui.context.storage
    states = storage.instigator_states()
    now = datetime.now(UTC)
    schedules = [
        {"def": s, "state": states.get(n), "status": effective_status(s, states.get(n)), "next": next_ticks(s, 1, now)}
        for n, s in sorted(defs.schedules.items())
    ]
    sensors = [
        {
            "def": s,
            "state": states.get(n),
            "status": effective_status(s, states.get(n)),
            "lag": sensor_lag(ui, s, states.get(n)),
        }
        for n, s in sorted(defs.sensors.items())
    ]
    return ui.render("automation.html", schedules=schedules, sensors=sensors)


@router.get("/schedules/{name}")
def schedule_detail(ui: Page, name: str, status: str = "", before: int | None = None) -> Response:
    return _instigator_page(ui, "schedules", name, status, before)


@router.get("/sensors/{name}")
def sensor_detail(ui: Page, name: str, status: str = "", before: int | None = None) -> Response:
    return _instigator_page(ui, "sensors", name, status, before)


def _instigator_page(ui: UIRequest, section: str, name: str, status: str, before: int | None) -> Response:
    kind = KINDS[section]
    definition = _definition(ui, kind, name)
    storage = ui.context.storage
    state = storage.get_instigator(name)
    ticks = storage.get_ticks(name, limit=TICKS_PER_PAGE, status=status or None, before_id=before)
    return ui.render(
        "instigator.html",
        kind=kind,
        section=section,
        definition=definition,
        state=state,
        state_status=effective_status(definition, state),
        ticks=ticks,
        tick_statuses=[s.value for s in TickStatus],
        tick_filter=status,
        next_before=ticks[-1].id if len(ticks) == TICKS_PER_PAGE else None,
        next_ticks=next_ticks(definition, NEXT_TICKS, datetime.now(UTC))
        if isinstance(definition, ScheduleDefinition)
        else [],
        lag=sensor_lag(ui, definition, state) if isinstance(definition, SensorDefinition) else None,
        running=InstigatorStatus.RUNNING,
    )


@router.post("/schedules/{name}/status")
def set_schedule_status(ui: AdminAction, name: str) -> Response:
    return _set_status(ui, "schedules", name)


@router.post("/sensors/{name}/status")
def set_sensor_status(ui: AdminAction, name: str) -> Response:
    return _set_status(ui, "sensors", name)


def _set_status(ui: UIRequest, section: str, name: str) -> Response:
    kind = KINDS[section]
    _definition(ui, kind, name)
    assert ui.form is not None
    wanted = InstigatorStatus.RUNNING if ui.form.get("status") == InstigatorStatus.RUNNING else InstigatorStatus.STOPPED
    ui.context.storage.set_instigator_status(name, kind, wanted, datetime.now(UTC))
    verb = "started" if wanted == InstigatorStatus.RUNNING else "stopped"
    return redirect(f"/{section}/{name}", notice=f"{kind} {name} {verb}")


@router.post("/sensors/{name}/cursor")
def set_cursor(ui: AdminAction, name: str) -> Response:
    definition = _definition(ui, "sensor", name)
    assert ui.form is not None
    if ui.form.get("reset") == "1":
        ui.context.storage.set_cursor(name, "sensor", None)
        return redirect(f"/sensors/{name}", notice="cursor reset")
    value = ui.form.get("cursor")
    value = value if isinstance(value, str) else ""
    if isinstance(definition, EventSensorDefinition):
        definition.check_cursor(value)
    ui.context.storage.set_cursor(name, "sensor", check_cursor(f"sensor '{name}'", value))
    return redirect(f"/sensors/{name}", notice="cursor set")
