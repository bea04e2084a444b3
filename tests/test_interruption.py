"""A step told by its heartbeat that it no longer owns its step stops, and records nothing:
the step executor in this process against SQLite and PostgreSQL. The same on real worker
processes (cancel and the run monitor): tests/test_workers.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import tidegate as tg
from tidegate.names import RunStatus, StepStatus
from tidegate.storage.api import Storage
from tidegate.workers.execution import Outcome, StepExecutor
from tidegate.workers.io import InMemoryIOManager

progress: list[str] = []


@tg.asset
def checks_the_flag(context: tg.AssetExecutionContext) -> str:
    """Never logs: stops because it looks at context.is_interrupted."""
    for _ in range(1000):
        if context.is_interrupted:
            progress.append("saw the flag")
            return "partial"
        progress.append("tick")
        time.sleep(0.01)
    return "whole"


@tg.asset
def yields_slowly(context: tg.AssetExecutionContext) -> Iterator[Any]:
    """A generator: stopped between two yields."""
    for i in range(1000):
        progress.append("tick")
        time.sleep(0.01)
        yield tg.AssetObservation(asset_key="yields_slowly", metadata={"i": i})
    yield tg.Output(1)


@tg.asset
def catches_and_carries_on(context: tg.AssetExecutionContext) -> str:
    """Swallows the first StepInterruptedError: the next log call raises it again."""
    for _ in range(1000):
        try:
            context.log.info("working")
        except tg.StepInterruptedError:
            progress.append("caught")
            time.sleep(0.01)
            context.log.info("still here")  # raises again
        progress.append("tick")
        time.sleep(0.01)
    return "whole"


@pytest.fixture(autouse=True)
def _fresh_progress() -> None:
    progress.clear()


def run_and_cancel(storage: Storage, asset: tg.AssetsDefinition, io: InMemoryIOManager) -> tuple[str, str]:
    defs = tg.Definitions(assets=[asset], resources={"io_manager": io})
    executor = StepExecutor(defs, storage, publish=lambda refs: None, worker_name="test", heartbeat_seconds=0.05)
    run_id = storage.submit_run(defs.plan("__ASSET_JOB"), origin="test").run_id
    (ref,) = storage.start_run(run_id)

    def cancel_once_running() -> None:
        while len(progress) < 5:
            time.sleep(0.01)
        assert storage.cancel_run(run_id).canceled

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    outcome = executor.execute(run_id, ref.step_key, ref.attempt)
    canceller.join()
    return run_id, outcome


@pytest.mark.parametrize("asset", [checks_the_flag, yields_slowly, catches_and_carries_on], ids=lambda a: a.name)
def test_an_interrupted_step_stops_and_records_nothing(storage: Storage, asset: tg.AssetsDefinition) -> None:
    io = InMemoryIOManager()
    run_id, outcome = run_and_cancel(storage, asset, io)
    assert outcome == Outcome.INTERRUPTED
    assert progress.count("tick") < 500, "it ran to its end"
    (step,) = storage.get_steps(run_id)
    assert step.status == StepStatus.CANCELED and step.error is None
    assert storage.get_run(run_id).status == RunStatus.CANCELED
    assert storage.get_materializations() == []
    assert [e.event_type for e in storage.get_events(run_id) if e.step_key] == ["STEP_STARTED"]
    assert io.values == {}  # "partial" was not stored
    if asset is checks_the_flag:
        assert progress[-1] == "saw the flag"
    if asset is catches_and_carries_on:
        assert progress.count("caught") == 1
