"""One heartbeat thread per executor (per worker process) beats for all its running steps, on
SQLite and PostgreSQL: both steps' heartbeats advance, and a step taken away (its run
canceled) is interrupted while the other goes on and is recorded."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import tidegate as tg
from tidegate.names import RunStatus, StepStatus
from tidegate.storage.api import Storage
from tidegate.workers.execution import Outcome, StepExecutor
from tidegate.workers.io import FilesystemIOManager

release = threading.Event()
WAIT_LIMIT = 60.0  # a bound on a broken test, not a timing assertion


def _hold(context: tg.AssetExecutionContext) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while not release.is_set() and not context.is_interrupted and time.monotonic() < deadline:
        time.sleep(0.01)


@tg.asset
def held_one(context: tg.AssetExecutionContext) -> None:
    _hold(context)
    context.log.info("after the hold")  # raises StepInterruptedError once interrupted


@tg.asset
def held_two(context: tg.AssetExecutionContext) -> None:
    _hold(context)


DEFS = tg.Definitions(
    assets=[held_one, held_two],
    jobs=[tg.define_asset_job("one", [held_one]), tg.define_asset_job("two", [held_two])],
)


def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def test_one_thread_beats_for_every_running_step_and_interrupts_only_the_lost_one(
    storage: Storage, tmp_path: Path
) -> None:
    release.clear()
    earlier = set(threading.enumerate())  # other tests' executors may still have theirs
    executor = StepExecutor(
        defs=DEFS,
        storage=storage,
        publish=lambda refs: None,
        worker_name="w@test",
        heartbeat_seconds=0.05,
        default_io_manager=FilesystemIOManager(tmp_path / "io"),
    )
    runs = {}
    for job, key in (("one", "held_one"), ("two", "held_two")):
        runs[key] = storage.submit_run(DEFS.plan(job), origin="test").run_id
        storage.start_run(runs[key])
    outcomes: dict[str, str] = {}
    threads = [
        threading.Thread(target=lambda k=key: outcomes.__setitem__(k, executor.execute(runs[k], k, 1))) for key in runs
    ]
    for thread in threads:
        thread.start()

    def beaten(key: str) -> bool:
        (step,) = storage.get_steps(runs[key])
        return (
            step.status == StepStatus.RUNNING
            and step.heartbeat_at is not None
            and step.started_at is not None
            and (step.heartbeat_at > step.started_at)
        )

    try:
        _until(lambda: beaten("held_one") and beaten("held_two"), "both steps beaten")
        beaters = [t for t in threading.enumerate() if t.name == "tidegate-heartbeat" and t not in earlier]
        assert len(beaters) == 1
        storage.cancel_run(runs["held_one"])
        _until(lambda: "held_one" in outcomes, "held_one interrupted")
        assert outcomes["held_one"] == Outcome.INTERRUPTED
        assert beaten("held_two")  # still running, still beaten
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=WAIT_LIMIT)
    assert outcomes["held_two"] == Outcome.SUCCEEDED
    assert storage.get_run(runs["held_two"]).status == RunStatus.SUCCESS
    assert storage.get_run(runs["held_one"]).status == RunStatus.CANCELED
