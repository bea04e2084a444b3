"""Runs: the filterable list, a run's page (step timeline, live while it goes), a step's
logs, and the cancel / re-execute buttons (through the REST API's own handlers)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.responses import Response

from tidegate.definitions.config import redacted
from tidegate.definitions.instance import RunsFilter
from tidegate.errors import LaunchRequestError, NotFoundError
from tidegate.names import Role, RunStatus, StepStatus, step_task_id
from tidegate.storage.instance import DagsterInstance
from tidegate.storage.records import RunRecord, StepRecord
from tidegate.webserver.api import runs as api_runs
from tidegate.webserver.models import ReexecuteRequest
from tidegate.webserver.ui.base import UIRequest, UIRoute, action, page, redirect

router = APIRouter(route_class=UIRoute)
Page = Annotated[UIRequest, Depends(page)]
LaunchAction = Annotated[UIRequest, Depends(action(Role.LAUNCHER))]
PAGE_SIZE = 50
ACTIVE_STEP = frozenset({StepStatus.RUNNING, StepStatus.ENQUEUED, StepStatus.READY})


def parse_tag_filter(text: str) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {}
    for item in text.replace(",", "\n").splitlines():
        if not item.strip():
            continue
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise LaunchRequestError(f"tag filter {item.strip()!r}: expected KEY=VALUE")
        tags.setdefault(key, []).append(value)
    return tags


def _since(text: str) -> datetime | None:
    hours = {"1h": 1, "24h": 24, "7d": 24 * 7, "30d": 24 * 30}.get(text)
    return None if hours is None else datetime.now().astimezone() - timedelta(hours=hours)


@router.get("/runs")
def run_list(ui: Page, status: str = "", job: str = "", tag: str = "", since: str = "", cursor: str = "") -> Response:
    if status and status not in {s.value for s in RunStatus}:
        raise LaunchRequestError(f"status {status!r}: expected one of {', '.join(s.value for s in RunStatus)}")
    filters = RunsFilter(
        job_name=job or None,
        statuses=[status] if status else None,
        tags=parse_tag_filter(tag) or None,  # type: ignore[arg-type]
        created_after=_since(since),
    )
    rows = DagsterInstance(ui.context.storage).run_rows(filters, PAGE_SIZE, cursor=cursor or None)
    return ui.render(
        "runs.html",
        runs=rows,
        statuses=[s.value for s in RunStatus],
        jobs=sorted(ui.context.defs.jobs),
        filters={"status": status, "job": job, "tag": tag, "since": since},
        next_cursor=rows[-1].run_id if len(rows) == PAGE_SIZE else None,
    )


@dataclass(frozen=True)
class TimelineBar:
    """One step on the Gantt chart: its row (by worker) and its span in % of the run."""

    step: StepRecord
    lane: str
    left: float
    width: float


def timeline(run: RunRecord, steps: list[StepRecord], now: datetime) -> list[TimelineBar]:
    """Steps that started, laid out on a shared time axis, grouped by worker."""
    started = [s for s in steps if s.started_at is not None]
    if not started:
        return []
    begin = min(s.started_at for s in started if s.started_at)
    end = max((s.ended_at or now) for s in started)
    span = max((end - begin).total_seconds(), 0.001)
    bars = []
    for s in sorted(started, key=lambda s: (s.worker or "", s.started_at or begin)):
        assert s.started_at is not None
        left = (s.started_at - begin).total_seconds() / span * 100
        width = max(((s.ended_at or now) - s.started_at).total_seconds() / span * 100, 0.5)
        bars.append(TimelineBar(s, s.worker or "(no worker)", round(left, 2), round(min(width, 100 - left), 2)))
    return bars


def _run_values(ui: UIRequest, run_id: str) -> dict[str, Any]:
    storage = ui.context.storage
    run = storage.get_run(run_id)
    steps = storage.get_steps(run_id)
    counts: dict[str, int] = {}
    for s in steps:
        counts[s.status] = counts.get(s.status, 0) + 1
    return {
        "run": run,
        "steps": steps,
        "counts": sorted(counts.items()),
        "bars": timeline(run, steps, storage.db_now()),
        "terminal": run.status in RunStatus.TERMINAL,
        "has_failure": any(s.status in (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED) for s in steps),
        "task_id": step_task_id,
        # as `tidegate runs show` shows it: each EnvVar as "<redacted> (EnvVar NAME)"
        "run_config": json.dumps(redacted(run.run_config), indent=2, sort_keys=True) if run.run_config else None,
    }


@router.get("/runs/{run_id}")
def run_detail(ui: Page, run_id: str) -> Response:
    return ui.render("run.html", **_run_values(ui, run_id))


@router.get("/runs/{run_id}/live")
def run_live(ui: Page, run_id: str) -> Response:
    """The part of the run page that changes while it runs (polled by ui.js)."""
    return ui.render("run_live.html", **_run_values(ui, run_id))


@router.get("/runs/{run_id}/steps/{step_key}")
def step_detail(ui: Page, run_id: str, step_key: str) -> Response:
    storage = ui.context.storage
    run = storage.get_run(run_id)
    step = next((s for s in storage.get_steps(run_id) if s.step_key == step_key), None)
    if step is None:
        raise NotFoundError(f"run '{run_id}': no step '{step_key}'")
    events = storage.get_events(run_id, step_key=step_key, limit=2000)
    return ui.render("step.html", run=run, step=step, events=events, task_id=step_task_id)


@router.post("/runs/{run_id}/cancel")
def cancel(ui: LaunchAction, run_id: str) -> Response:
    api_runs.cancel_run(run_id, ui.principal, ui.request)
    return redirect(f"/runs/{run_id}", notice="cancel requested: running steps are revoked")


@router.post("/runs/{run_id}/reexecute")
def reexecute(ui: LaunchAction, run_id: str) -> Response:
    assert ui.form is not None
    from_failure = ui.form.get("from_failure") == "1"
    new = api_runs.reexecute_run(run_id, ui.principal, ui.request, ReexecuteRequest(from_failure=from_failure))
    what = "from failure" if from_failure else "all steps"
    return redirect(f"/runs/{new.run_id}", notice=f"re-execution ({what}) of run {run_id[:8]} launched")
