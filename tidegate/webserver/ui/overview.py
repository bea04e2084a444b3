"""The overview (what runs, what waits and why, recent failures, sensors and schedules that need
a look, active backfills), backfills with per-partition progress and cancel, queue and pools."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from tidegate.names import BackfillStatus, Role, RunStatus, TickStatus
from tidegate.scheduler.run_queue import QueueDecision, decide, location_hold
from tidegate.webserver.ui.automation import effective_status, next_ticks, sensor_lag
from tidegate.webserver.ui.base import UIRequest, UIRoute, action, page, redirect
from tidegate.webserver.ui.queries import recent_failures, runs_by_key

router = APIRouter(route_class=UIRoute)
Page = Annotated[UIRequest, Depends(page)]
LaunchAction = Annotated[UIRequest, Depends(action(Role.LAUNCHER))]
OVERVIEW_ROWS = 50
BACKFILL_KEYS_SHOWN = 2000


def queue_decisions(ui: UIRequest) -> list[QueueDecision]:
    """The queued runs in start order and why each waits, as the beat's run queue decides."""
    storage, defs = ui.context.storage, ui.context.defs
    hold = functools.partial(location_hold, jobs=set(defs.jobs), location=defs.code_location)
    return decide(ui.context.settings.run_queue, storage.queued_runs(), storage.started_runs(), hold=hold)


@router.get("/")
def overview(ui: Page) -> Response:
    storage, defs = ui.context.storage, ui.context.defs
    now = datetime.now(UTC)
    states = storage.instigator_states()
    failing_sensors = []
    for name, sensor in sorted(defs.sensors.items()):
        last = storage.get_ticks(name, limit=1)
        lag = sensor_lag(ui, sensor, states.get(name))
        if (last and last[0].status == TickStatus.FAILURE) or ("waiting" in lag and not lag.startswith("0 ")):
            failing_sensors.append({"name": name, "tick": last[0] if last else None, "lag": lag})
    schedules = [
        {"name": n, "status": effective_status(s, states.get(n)), "next": next_ticks(s, 1, now)[0]}
        for n, s in sorted(defs.schedules.items())
    ]
    return ui.render(
        "overview.html",
        started=storage.started_runs()[:OVERVIEW_ROWS],
        limit=OVERVIEW_ROWS,
        queued=queue_decisions(ui)[:OVERVIEW_ROWS],
        failures=recent_failures(storage, storage.db_now() - timedelta(hours=24), OVERVIEW_ROWS + 1),
        failing_sensors=failing_sensors,
        schedules=schedules,
        backfills=storage.list_backfills(status=BackfillStatus.REQUESTED, limit=OVERVIEW_ROWS),
    )


@router.get("/backfills")
def backfill_list(ui: Page) -> Response:
    storage = ui.context.storage
    records = storage.list_backfills(limit=100)
    return ui.render("backfills.html", backfills=[(b, storage.backfill_progress(b)) for b in records])


@router.get("/backfills/{backfill_id}")
def backfill_detail(ui: Page, backfill_id: str) -> Response:
    storage = ui.context.storage
    record = storage.get_backfill(backfill_id)
    progress = storage.backfill_progress(record)
    runs = record.runs()
    statuses = runs_by_key(storage, record.origin)
    rows = [(key, first, last, statuses.get(key)) for key, (first, last) in list(runs.items())[:BACKFILL_KEYS_SHOWN]]
    return ui.render(
        "backfill.html",
        backfill=record,
        progress=progress,
        rows=rows,
        shown=min(len(runs), BACKFILL_KEYS_SHOWN),
        total_runs=len(runs),
        requested=BackfillStatus.REQUESTED,
    )


@router.post("/backfills/{backfill_id}/cancel")
def backfill_cancel(ui: LaunchAction, backfill_id: str) -> Response:
    from tidegate.scheduler.backfill import cancel_backfill

    run_ids = cancel_backfill(ui.context.storage, backfill_id)
    return redirect(
        f"/backfills/{backfill_id}", notice=f"backfill canceled ({len(run_ids)} unfinished run(s) canceled)"
    )


@router.get("/queue")
def queue(ui: Page) -> Response:
    storage = ui.context.storage
    config = ui.context.settings.run_queue
    return ui.render(
        "queue.html",
        decisions=queue_decisions(ui)[:500],
        in_progress=len(storage.started_runs()),
        config=config,
        pools=storage.pools_overview(),
        run_status=RunStatus,
    )


@router.post("/pools/{name}")
def pool_set(ui: Annotated[UIRequest, Depends(action(Role.ADMIN))], name: str) -> Response:
    assert ui.form is not None
    slots = ui.form.get("slots")
    if not isinstance(slots, str) or not slots.strip().isdigit():
        return redirect("/queue", problem=f"pool {name}: slots {slots!r} is not a whole number >= 0")
    ui.context.storage.set_pool_limit(name, int(slots))
    return redirect("/queue", notice=f"pool {name}: {int(slots)} slot(s)")
