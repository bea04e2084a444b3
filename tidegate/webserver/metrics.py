"""Prometheus metrics at /metrics (viewer role), read from the database at each scrape, so any
webserver of several reports the same figures.

The text exposition format is written here (a dozen gauges do not need prometheus_client and
its process-global registry, which several apps in one process would share)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select
from starlette.requests import HTTPConnection

from tidegate.definitions.event_sensor import EventSensorDefinition
from tidegate.names import Role, RunStatus, StepStatus
from tidegate.storage.engine import database_now
from tidegate.storage.instance import DagsterInstance
from tidegate.storage.schema import runs, steps
from tidegate.webserver.app import WebContext, web_context
from tidegate.webserver.auth import Principal, require_role
from tidegate.webserver.errors import error_responses

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[dict[str, str], float]


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(name: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    """One gauge in the text exposition format."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        shown = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{shown}}} {value:g}" if shown else f"{name} {value:g}")
    return lines


def collect(context: WebContext) -> str:
    storage = context.storage
    with storage.engine.connect() as conn:
        now = database_now(conn)
        by_status: dict[str, int] = dict(
            conn.execute(select(runs.c.status, func.count()).group_by(runs.c.status)).all()
        )
        oldest = conn.execute(select(func.min(runs.c.created_at)).where(runs.c.status == RunStatus.QUEUED)).scalar()
        running = conn.execute(
            select(steps.c.pool, func.count()).where(steps.c.status == StepStatus.RUNNING).group_by(steps.c.pool)
        ).all()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=now.tzinfo)
    lines = render(
        "tidegate_runs", "Runs by status.", [({"status": s.value}, float(by_status.get(s, 0))) for s in RunStatus]
    )
    lines += render("tidegate_run_queue_depth", "Runs waiting in the run queue.", [({}, by_status.get("QUEUED", 0))])
    age = (now - oldest).total_seconds() if oldest is not None else 0.0
    lines += render("tidegate_run_queue_oldest_age_seconds", "Age of the oldest queued run.", [({}, max(0.0, age))])
    lines += render(
        "tidegate_steps_running",
        'Steps running, per concurrency pool (pool="" for steps in none).',
        [({"pool": pool or ""}, float(count)) for pool, count in running],
    )
    lines += _sensor_lag(context)
    lines += _tick_durations(context)
    return "\n".join(lines) + "\n"


def _sensor_lag(context: WebContext) -> list[str]:
    instance = DagsterInstance(context.storage)
    now = context.storage.db_now().timestamp()
    events: list[Sample] = []
    ages: list[Sample] = []
    for name, sensor in sorted(context.defs.sensors.items()):
        if not isinstance(sensor, EventSensorDefinition):
            continue
        state = context.storage.get_instigator(name)
        lag = sensor.lag(instance, state.cursor if state else None, now)
        events.append(({"sensor": name}, float(lag.events_waiting)))
        ages.append(({"sensor": name}, lag.oldest_age_seconds or 0.0))
    return render(
        "tidegate_sensor_lag_events", "Events waiting after an asset or run-status sensor's cursor.", events
    ) + render("tidegate_sensor_lag_seconds", "Age of the oldest event waiting for a sensor.", ages)


def _tick_durations(context: WebContext) -> list[str]:
    samples: list[Sample] = []
    for kind, names in (("schedule", context.defs.schedules), ("sensor", context.defs.sensors)):
        for name in sorted(names):
            ticks = context.storage.get_ticks(name, limit=1)
            if ticks:
                tick = ticks[0]
                seconds = (tick.ended_at - tick.started_at).total_seconds()
                samples.append(({"kind": kind, "name": name, "status": tick.status}, seconds))
    return render(
        "tidegate_last_tick_duration_seconds", "How long each schedule's or sensor's last tick took.", samples
    )


def metrics_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}, **error_responses()},
    )
    def metrics(
        principal: Annotated[Principal, Depends(require_role(Role.VIEWER))], connection: HTTPConnection
    ) -> PlainTextResponse:
        return PlainTextResponse(collect(web_context(connection)), media_type=CONTENT_TYPE)

    return router
