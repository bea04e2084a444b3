"""/api/v1/backfills (create, get with progress, list, cancel), /api/v1/queue (what waits and
why) and /api/v1/pools (list; set a limit: admin)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.requests import HTTPConnection

from tidegate.errors import ConflictError, TidegateError
from tidegate.names import BackfillStatus, Role
from tidegate.webserver.app import web_context
from tidegate.webserver.auth import Principal, require_role
from tidegate.webserver.errors import error_responses
from tidegate.webserver.models import Backfill, BackfillRequest, Pool, PoolLimit, Queue, QueuedRun

log = logging.getLogger("tidegate.webserver")
router = APIRouter(responses=error_responses())
Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER))]
Launcher = Annotated[Principal, Depends(require_role(Role.LAUNCHER))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]


# -- backfills ----------------------------------------------------------------------------------


@router.post(
    "/backfills",
    status_code=201,
    tags=["backfills"],
    summary="Backfill a partitioned job over a range, a list, all or the missing partitions",
    responses=error_responses(400),
)
def create_backfill(body: BackfillRequest, principal: Launcher, connection: HTTPConnection) -> Backfill:
    from tidegate.scheduler import backfill as backfills

    context = web_context(connection)
    keys = backfills.backfill_partitions(
        context.defs,
        context.storage,
        body.job,
        from_key=body.from_key,
        to_key=body.to_key,
        partitions=body.partitions,
        all_keys=body.all,
        missing=body.missing,
    )
    if not keys:
        raise TidegateError(f"job '{body.job}': no partitions to backfill")
    record = backfills.create_backfill(
        context.defs, context.storage, body.job, keys, max_concurrent=body.max_concurrent, run_config=body.run_config
    )
    log.info("backfill %s of job %s created by token '%s'", record.backfill_id, body.job, principal.name)
    return Backfill.of(record, context.storage.backfill_progress(record))


@router.get("/backfills", tags=["backfills"], summary="Backfills, newest first, with their progress")
def list_backfills(
    principal: Viewer,
    connection: HTTPConnection,
    status: BackfillStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[Backfill]:
    storage = web_context(connection).storage
    return [Backfill.of(b, storage.backfill_progress(b)) for b in storage.list_backfills(status=status, limit=limit)]


@router.get(
    "/backfills/{backfill_id}",
    tags=["backfills"],
    summary="A backfill with its progress",
    responses=error_responses(404),
)
def get_backfill(backfill_id: str, principal: Viewer, connection: HTTPConnection) -> Backfill:
    storage = web_context(connection).storage
    record = storage.get_backfill(backfill_id)
    return Backfill.of(record, storage.backfill_progress(record))


@router.post(
    "/backfills/{backfill_id}/cancel",
    tags=["backfills"],
    summary="Stop a backfill and cancel its unfinished runs",
    responses=error_responses(404, 409),
)
def cancel_backfill(backfill_id: str, principal: Launcher, connection: HTTPConnection) -> Backfill:
    from tidegate.scheduler.backfill import cancel_backfill as cancel

    storage = web_context(connection).storage
    record = storage.get_backfill(backfill_id)
    if record.status != BackfillStatus.REQUESTED:
        raise ConflictError(f"backfill '{record.backfill_id}': already {record.status}")
    cancel(storage, record.backfill_id)
    log.info("backfill %s canceled by token '%s'", record.backfill_id, principal.name)
    record = storage.get_backfill(record.backfill_id)
    return Backfill.of(record, storage.backfill_progress(record))


# -- the run queue and pools --------------------------------------------------------------------


@router.get("/queue", tags=["queue"], summary="Queued runs in start order, and why each waits")
def run_queue(principal: Viewer, connection: HTTPConnection) -> Queue:
    import functools

    from tidegate.scheduler.run_queue import decide, location_hold

    context = web_context(connection)
    defs, storage, config = context.defs, context.storage, context.settings
    hold = functools.partial(location_hold, jobs=set(defs.jobs), location=defs.code_location)
    in_progress = storage.started_runs()
    decisions = decide(config.run_queue, storage.queued_runs(), in_progress, hold=hold)
    return Queue(
        max_concurrent_runs=config.run_queue.max_concurrent_runs,
        in_progress=len(in_progress),
        queued=[
            QueuedRun(
                run_id=d.run.run_id,
                job_name=d.run.job_name,
                priority=d.run.priority,
                created_at=d.run.created_at,
                starts=d.start,
                waits_for=d.reason or None,
            )
            for d in decisions
        ],
    )


@router.get("/pools", tags=["pools"], summary="Concurrency pools with their slots, active and waiting steps")
def list_pools(principal: Viewer, connection: HTTPConnection) -> list[Pool]:
    overview = web_context(connection).storage.pools_overview()
    return [Pool(name=p.name, slots=p.slots, active=p.active, waiting=p.waiting) for p in overview]


@router.put("/pools/{name}", tags=["pools"], summary="Set a pool's limit", responses=error_responses(400))
def set_pool(name: str, body: PoolLimit, principal: Admin, connection: HTTPConnection) -> Pool:
    from tidegate.definitions.limits import check_name

    storage = web_context(connection).storage
    check_name(f"pool '{name}'", "name", name)
    storage.set_pool_limit(name, body.slots)  # steps it releases are READY: the beat sends them
    log.info("pool %s set to %d slot(s) by token '%s'", name, body.slots, principal.name)
    found = next((p for p in storage.pools_overview() if p.name == name), None)
    return Pool(name=name, slots=body.slots, active=found.active if found else 0, waiting=found.waiting if found else 0)
