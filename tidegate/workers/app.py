"""The Celery app with tidegate's task registered: ``celery -A tidegate.workers.app worker``.

Each worker process loads the code location named by ``TIDEGATE_DEFINITIONS`` once, opens
storage from ``TIDEGATE_DATABASE_URL``, and keeps them for its life (per process id, so a
prefork child never uses its parent's connections).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from celery import Celery, Task
from sqlalchemy.exc import DBAPIError

from tidegate.broker import CeleryPublisher, get_app
from tidegate.config import Settings
from tidegate.definitions.loading import load_definitions
from tidegate.errors import TidegateError
from tidegate.names import EXECUTE_STEP_TASK
from tidegate.storage.api import Storage
from tidegate.workers.execution import StepExecutor


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
            settings = Settings.from_env()
            storage = Storage.open(settings.database_url)
            executor = StepExecutor(
                defs=load_definitions(),
                storage=storage,
                publish=CeleryPublisher(app, storage),
                worker_name=worker_name,
                heartbeat_seconds=settings.heartbeat_seconds,
            )
            _runtime = _ProcessRuntime(os.getpid(), executor)
        return _runtime.executor


def reset_runtime() -> None:
    global _runtime
    with _runtime_lock:
        _runtime = None


def register_tasks(celery_app: Celery) -> None:
    @celery_app.task(  # type: ignore[untyped-decorator]
        name=EXECUTE_STEP_TASK, bind=True, acks_late=True, ignore_result=True
    )
    def execute_step(self: Task, run_id: str, step_key: str, attempt: int) -> str:
        try:
            executor = runtime(self.request.hostname or "worker")
        except (TidegateError, DBAPIError) as exc:
            # The database is unreachable or not migrated yet: nothing was claimed, so ask the
            # broker to deliver this step again shortly instead of dropping it.
            raise self.retry(exc=exc, countdown=5, max_retries=None) from exc
        return executor.execute(run_id, step_key, attempt)


app = get_app()
register_tasks(app)
