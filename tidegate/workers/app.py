"""The Celery app with tidegate's tasks registered: ``celery -A tidegate.workers.app worker``.

``tidegate.execute_step`` runs one attempt of one step; ``tidegate.launch_job`` submits a run
of a job (what Flower's "apply" calls) through the same validation and submit path as
``tidegate job launch``.

Each worker process loads the code location named by ``TIDEGATE_DEFINITIONS`` once, opens
storage from ``TIDEGATE_DATABASE_URL``, and keeps them for its life (per process id, so a
prefork child never uses its parent's connections).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from sqlalchemy.exc import DBAPIError

from tidegate.broker import CeleryPublisher, get_app, step_task_name
from tidegate.config import Settings
from tidegate.definitions.loading import load_definitions
from tidegate.errors import TidegateError
from tidegate.names import EXECUTE_STEP_TASK, LAUNCH_JOB_TASK, step_task_id
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRecord, StepRef
from tidegate.submit import FLOWER_ORIGIN, prepare_job_run
from tidegate.workers.execution import StepExecutor

# A delivery that cannot reach the database goes back to the broker, delivered again after
# this many seconds (doubling per re-delivery up to the cap: short enough for Celery's ETA).
REQUEUE_COUNTDOWN = 2.0
REQUEUE_COUNTDOWN_MAX = 30.0


def requeue_countdown(retries: int) -> float:
    return float(min(REQUEUE_COUNTDOWN_MAX, REQUEUE_COUNTDOWN * 2 ** min(retries, 8)))


log = logging.getLogger("tidegate.worker")


def continuation_queue(request: Any) -> str | None:
    """The queue a step delivery came from, on which the step may claim a child it readies
    and run it next in this process; None (no continuation) when the delivery carries a time
    limit, which would also bound the children run under it."""
    if any(limit for limit in (request.timelimit or ())):
        return None
    routing_key = (request.delivery_info or {}).get("routing_key")
    return routing_key if isinstance(routing_key, str) and routing_key else None


class ContinuedTaskEvents:
    """A Celery ``task-succeeded`` event for each step run by continuation, under the task id
    and name its own delivery would have had and carrying what ``task-received`` and
    ``task-started`` would have said (args, parent, the times), so that Flower lists it as a
    task of its own (its parent the task it ran in) and counts it in its metrics. One event a
    step, not three: each is a broker round trip, on the path continuation exists to shorten.
    Sent only when the worker sends task events (``-E``, as ``tidegate worker`` does); a
    failure to send is logged and changes nothing: the step's outcome is in the database."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.began = 0.0
        self._dispatcher: Any = None
        self._context: Any = None

    def __enter__(self) -> ContinuedTaskEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)

    def started(self, step: StepRecord) -> None:
        self.began = time.time()

    @property
    def enabled(self) -> bool:
        # Read when a continued step ends, not per delivery: most deliveries continue none, and
        # a Celery setting is a lookup through several mappings.
        return bool(self.task.app.conf.worker_send_task_events)

    def finished(self, step: StepRecord, outcome: str, runtime: float) -> None:
        if not self.enabled:
            return
        request = self.task.request
        ref = StepRef(step.run_id, step.step_key, step.attempt, step.queue, step.display_name)
        try:
            if self._dispatcher is None:
                self._context = self.task.app.events.default_dispatcher(hostname=request.hostname)
                self._dispatcher = self._context.__enter__()
            self._dispatcher.send(
                "task-succeeded",
                uuid=step_task_id(step.run_id, step.step_key, step.attempt),
                name=step_task_name(ref),
                args=repr([step.run_id, step.step_key, step.attempt]),
                kwargs="{}",
                root_id=request.root_id or request.id,
                parent_id=request.id,
                received=self.began,
                started=self.began,
                result=repr(outcome),
                runtime=runtime,
            )
        except Exception as exc:  # the broker is away: Flower misses this step, nothing else does
            log.info("continued step %s: its task event was not sent: %s", ref.step_key, exc)


@dataclass
class _ProcessRuntime:
    pid: int
    executor: StepExecutor


_runtime: _ProcessRuntime | None = None
_runtime_lock = threading.Lock()


def runtime(worker_name: str) -> StepExecutor:
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.pid != os.getpid():
            settings = Settings.load()
            # No pre-ping: the claim and the outcome retry a connection the server dropped. The
            # pool's threads each claim and record on a connection they keep.
            storage = Storage.open(settings.database_url, pre_ping=False, keep_connections=True)
            executor = StepExecutor(
                defs=load_definitions(),
                storage=storage,
                publish=CeleryPublisher(app, storage),
                worker_name=worker_name,
                heartbeat_seconds=settings.heartbeat_seconds,
                continuation=settings.continuation,
            )
            _runtime = _ProcessRuntime(os.getpid(), executor)
        return _runtime.executor


def reset_runtime() -> None:
    global _runtime
    with _runtime_lock:
        _runtime = None


def register_tasks(celery_app: Celery) -> None:
    # max_retries=None on the task: Celery reads None passed to retry() as "the default, 3".
    @celery_app.task(  # type: ignore[untyped-decorator]
        name=EXECUTE_STEP_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=None
    )
    def execute_step(self: Task, run_id: str, step_key: str, attempt: int) -> str:
        countdown = requeue_countdown(self.request.retries or 0)
        try:
            executor = runtime(self.request.hostname or "worker")
            with ContinuedTaskEvents(self) as seen:
                return executor.execute(
                    run_id,
                    step_key,
                    attempt,
                    queue=continuation_queue(self.request),
                    task_id=self.request.id,
                    seen=seen,
                )
        except (TidegateError, DBAPIError) as exc:
            if isinstance(exc, TidegateError) and _runtime is not None:
                raise  # not the storage opening: the executor records such errors itself
            # The database is unreachable (or not migrated yet) for the storage opening or the
            # claim (the executor itself retries recording an outcome it has): ask the broker
            # to deliver this step again later instead of dropping it. A step already claimed
            # or finished makes the next delivery a no-op, so no body runs twice.
            log.warning(
                "step %s of run %s: database unreachable, delivering again in %gs: %s",
                step_key,
                run_id,
                countdown,
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )
            raise self.retry(exc=exc, countdown=countdown) from exc

    @celery_app.task(  # type: ignore[untyped-decorator]
        name=LAUNCH_JOB_TASK, bind=True, throws=(TidegateError,)
    )
    def launch_job(
        self: Task,
        job_name: str,
        partition_key: str | None = None,
        tags: dict[str, str] | None = None,
        run_key: str | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> str:
        """Submit a QUEUED run of ``job_name`` and return its id; the beat starts it within the
        run queue's limits. A second launch with the same ``run_key`` returns the first run.
        An unknown job, a bad partition key, malformed tags or ``run_config`` (the dict form)
        that does not fit the job fail the task with a typed error (shown as the task's
        exception in Flower)."""
        try:
            executor = runtime(self.request.hostname or "worker")
        except DBAPIError as exc:
            raise self.retry(exc=exc, countdown=5, max_retries=12) from exc
        request = prepare_job_run(
            executor.defs,
            executor.storage,
            job_name,
            partition_key=partition_key,
            tags=tags,
            run_key=run_key,
            run_config=run_config,
        )
        return request.submit(executor.storage, origin=FLOWER_ORIGIN).run_id


app = get_app()
register_tasks(app)
