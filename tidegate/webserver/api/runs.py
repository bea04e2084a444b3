"""/api/v1/runs: launch, read, list, cancel and re-execute runs; their events (also as a
server-sent event stream) and a step's captured logs."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from tidegate.definitions.config import redacted
from tidegate.definitions.instance import RunsFilter
from tidegate.definitions.job import IMPLICIT_ASSET_JOB
from tidegate.errors import ConflictError, DuplicateRunKeyError, LaunchRequestError, NotFoundError
from tidegate.names import LAUNCHED_BY_TAG, Role, RunStatus
from tidegate.storage.api import Storage
from tidegate.storage.instance import DagsterInstance
from tidegate.submit import prepare_job_run
from tidegate.webserver.app import web_context
from tidegate.webserver.auth import Principal, require_role
from tidegate.webserver.errors import error_responses
from tidegate.webserver.models import (
    Event,
    EventPage,
    LaunchRequest,
    ReexecuteRequest,
    Run,
    RunDetail,
    RunPage,
    Step,
    StepLogs,
)

API_ORIGIN = "api"  # the origin of runs launched through the webserver (run keys are unique per origin)
STREAM_POLL_SECONDS = 0.5
STREAM_BATCH = 500

log = logging.getLogger("tidegate.webserver")
router = APIRouter(tags=["runs"], responses=error_responses())
Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER))]
Launcher = Annotated[Principal, Depends(require_role(Role.LAUNCHER))]


@router.post(
    "/runs", status_code=201, summary="Launch a job or materialize assets", responses=error_responses(400, 409)
)
def launch_run(body: LaunchRequest, principal: Launcher, connection: HTTPConnection) -> Run:
    context = web_context(connection)
    if (body.job is None) == (body.asset_selection is None):
        raise LaunchRequestError("give exactly one of 'job' or 'asset_selection'")
    request = prepare_job_run(
        context.defs,
        context.storage,
        body.job if body.job is not None else IMPLICIT_ASSET_JOB,
        partition_key=body.partition,
        tags=body.tags,
        priority=body.priority,
        run_key=body.run_key,
        selection=body.asset_selection,
        run_config=body.run_config,
    )
    request.tags[LAUNCHED_BY_TAG] = principal.name  # who launched it, whatever the body says
    result = request.submit(context.storage, origin=API_ORIGIN)
    if not result.created:
        raise DuplicateRunKeyError(
            f"run key {body.run_key!r}: run '{result.run_id}' was launched with it already", result.run_id
        )
    return Run.of(context.storage.get_run(result.run_id))


@router.get("/runs", summary="List runs, newest first", responses=error_responses(400))
def list_runs(
    principal: Viewer,
    connection: HTTPConnection,
    status: Annotated[list[RunStatus] | None, Query()] = None,
    job: str | None = None,
    tag: Annotated[list[str] | None, Query(description="KEY=VALUE; repeat for several")] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> RunPage:
    tags: dict[str, list[str]] = {}
    for item in tag or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LaunchRequestError(f"tag filter {item!r}: expected KEY=VALUE")
        tags.setdefault(key, []).append(value)
    filters = RunsFilter(
        job_name=job,
        statuses=status or None,
        tags=tags or None,
        created_after=created_after,
        created_before=created_before,
    )
    instance = DagsterInstance(web_context(connection).storage)
    runs = [Run.of(r) for r in instance.run_rows(filters, limit, cursor=cursor)]
    return RunPage(runs=runs, next_cursor=runs[-1].run_id if len(runs) == limit else None)


def _detail(storage: Storage, run_id: str) -> RunDetail:
    record = storage.get_run(run_id)
    return RunDetail(
        **Run.of(record).model_dump(),
        run_config=redacted(record.run_config) if record.run_config else None,
        steps=[Step.of(s) for s in storage.get_steps(run_id)],
    )


@router.get("/runs/{run_id}", summary="A run with its steps", responses=error_responses(404))
def get_run(run_id: str, principal: Viewer, connection: HTTPConnection) -> RunDetail:
    return _detail(web_context(connection).storage, run_id)


@router.post("/runs/{run_id}/cancel", summary="Cancel a run", responses=error_responses(404, 409))
def cancel_run(run_id: str, principal: Launcher, connection: HTTPConnection) -> RunDetail:
    from tidegate.broker import CeleryPublisher, get_app

    storage = web_context(connection).storage
    result = storage.cancel_run(storage.get_run(run_id).run_id)
    if not result.canceled:
        raise ConflictError(f"run '{run_id}': already {storage.get_run(run_id).status}; nothing to cancel")
    publisher = CeleryPublisher(get_app(), storage)
    publisher.revoke(result.running)
    publisher(result.released)  # pool slots it freed went to other runs' waiting steps
    log.info("run %s canceled by token '%s'", run_id, principal.name)
    return _detail(storage, run_id)


@router.post(
    "/runs/{run_id}/reexecute",
    status_code=201,
    summary="Re-execute a finished run (all steps, or from failure)",
    responses=error_responses(400, 404, 409),
)
def reexecute_run(
    run_id: str, principal: Launcher, connection: HTTPConnection, body: ReexecuteRequest | None = None
) -> Run:
    from tidegate.scheduler.reexecution import submit_reexecution

    context = web_context(connection)
    run = context.storage.get_run(run_id)
    if run.status not in RunStatus.TERMINAL:
        raise ConflictError(f"run '{run_id}': still {run.status}; re-execute a finished run")
    result = submit_reexecution(
        context.defs,
        context.storage,
        run_id,
        from_failure=body.from_failure if body else False,
        origin=API_ORIGIN,
        extra_tags={LAUNCHED_BY_TAG: principal.name},
    )
    return Run.of(context.storage.get_run(result.run_id))


@router.get("/runs/{run_id}/events", summary="A run's events in order", responses=error_responses(404))
def run_events(
    run_id: str,
    principal: Viewer,
    connection: HTTPConnection,
    after: Annotated[int, Query(ge=0, le=2**62, description="Only events after this id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> EventPage:
    storage = web_context(connection).storage
    storage.get_run(run_id)
    events = [Event.of(e) for e in storage.get_events(run_id, after_id=after, limit=limit)]
    return EventPage(events=events, next_cursor=events[-1].id if len(events) == limit else None)


@router.get(
    "/runs/{run_id}/events/stream",
    summary="A run's events as server-sent events, until the run ends",
    description=(
        "Each event is sent as `id: <event id>`, `event: <event type>`, `data: <the event as JSON>`. "
        "Reconnect with `Last-Event-ID` (or `after`) to continue. A final `event: end` carries the run's status."
    ),
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **error_responses(404)},
)
def stream_run_events(
    run_id: str,
    principal: Viewer,
    connection: HTTPConnection,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    storage = web_context(connection).storage
    storage.get_run(run_id)
    if last_event_id is not None and last_event_id.isdigit():
        after = max(after, int(last_event_id))
    return StreamingResponse(
        _event_stream(storage, run_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _event_stream(storage: Storage, run_id: str, after: int) -> AsyncIterator[str]:
    idle = 0.0
    while True:
        run = await run_in_threadpool(storage.get_run, run_id)  # before the events: a final run's are all in
        events = await run_in_threadpool(storage.get_events, run_id, after_id=after, limit=STREAM_BATCH)
        for event in events:
            after = event.id
            yield f"id: {event.id}\nevent: {event.event_type}\ndata: {Event.of(event).model_dump_json()}\n\n"
        if len(events) == STREAM_BATCH:
            continue
        if run.status in RunStatus.TERMINAL:
            yield f"event: end\ndata: {json.dumps({'run_id': run_id, 'status': run.status})}\n\n"
            return
        if events:
            idle = 0.0
        else:
            idle += STREAM_POLL_SECONDS
            if idle >= 15:
                idle = 0.0
                yield ": keep-alive\n\n"
        await asyncio.sleep(STREAM_POLL_SECONDS)


@router.get(
    "/runs/{run_id}/steps/{step_key}/logs",
    summary="What a step logged, with its error",
    responses=error_responses(404),
)
def step_logs(
    run_id: str,
    step_key: str,
    principal: Viewer,
    connection: HTTPConnection,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> StepLogs:
    storage = web_context(connection).storage
    storage.get_run(run_id)
    step = next((s for s in storage.get_steps(run_id) if s.step_key == step_key), None)
    if step is None:
        raise NotFoundError(f"run '{run_id}': no step '{step_key}'")
    events = storage.get_events(run_id, step_key=step_key, limit=limit)
    return StepLogs(
        run_id=run_id,
        step_key=step_key,
        status=step.status,
        attempt=step.attempt,
        error=step.error,
        logs=[Event.of(e) for e in events],
    )
