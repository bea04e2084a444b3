"""Runs on real `tidegate worker` processes over real Redis, on SQLite and PostgreSQL."""

from __future__ import annotations

import pickle
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import TIDEGATE, WorkerProcess, tidegate_env
from tidegate.broker import CeleryPublisher, make_celery_app
from tidegate.config import MonitorConfig
from tidegate.definitions.loading import CodeLocation
from tidegate.names import EXECUTE_STEP_TASK, RunStatus, StepStatus
from tidegate.scheduler.launcher import Launcher
from tidegate.scheduler.monitor import RunMonitor
from tidegate.storage.api import Storage

PROJECT = Path(__file__).parent / "projects" / "core_project.py"
DEFS = CodeLocation(file=str(PROJECT)).load()


class Harness:
    """What the beat would do, driven by the test: submit, start, publish due steps."""

    def __init__(self, database_url: str, broker_url: str, tmp_path: Path) -> None:
        self.storage = Storage.open(database_url, upgrade=True)
        self.app = make_celery_app(broker_url)
        self.publisher = CeleryPublisher(self.app, self.storage)
        self.launcher = Launcher(self.storage, self.publisher, republish_grace_seconds=5.0)
        self.effects = tmp_path / "effects"
        self.env = tidegate_env(
            database_url=database_url,
            broker_url=broker_url,
            definitions=PROJECT,
            io_dir=tmp_path / "io",
            TIDEGATE_TEST_EFFECTS=str(self.effects),
        )

    def submit(self, job: str) -> str:
        return self.storage.submit_run(DEFS.plan(job), origin="test").run_id

    def run(self, job: str, timeout: float = 60.0) -> str:
        run_id = self.submit(job)
        self.wait(run_id, timeout)
        return run_id

    def wait(self, run_id: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.launcher.tick()
            status = self.storage.get_run(run_id).status
            if status in RunStatus.TERMINAL:
                return status
            time.sleep(0.05)
        steps = {s.step_key: s.status for s in self.storage.get_steps(run_id)}
        raise AssertionError(f"run {run_id} did not finish in {timeout}s: {steps}")

    def executions(self, asset: str) -> list[str]:
        path = self.effects / f"{asset}.log"
        return path.read_text().splitlines() if path.exists() else []

    def close(self) -> None:
        self.app.close()
        self.storage.dispose()


@pytest.fixture
def harness(database_url: str, redis_url: str, tmp_path: Path) -> Harness:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    h = Harness(database_url, redis_url, tmp_path)
    yield h
    h.close()


def test_big_job_respects_every_dependency(harness: Harness, worker_factory: Callable[..., WorkerProcess]) -> None:
    worker_factory(harness.env, name="w1", concurrency=2)
    worker_factory(harness.env, name="w2", concurrency=2)
    run_id = harness.run("big_job")

    run = harness.storage.get_run(run_id)
    assert run.status == RunStatus.SUCCESS
    steps = {s.step_key: s for s in harness.storage.get_steps(run_id)}
    assert len(steps) == 13
    assert all(s.status == StepStatus.SUCCEEDED for s in steps.values())
    for key in steps:
        asset = DEFS.get_asset(key)
        for upstream in asset.upstream_keys:
            up = steps[str(upstream)]
            assert up.ended_at <= steps[key].started_at, f"{key} started before {upstream} ended"
    # Both worker processes took part: steps are spread, not serialized on one node.
    assert {s.worker.split("@")[0] for s in steps.values()} == {"w1", "w2"}

    materialized = {m.asset_key: m for m in harness.storage.get_materializations() if m.run_id == run_id}
    assert set(materialized) == set(steps)
    assert materialized["gather"].metadata == {"fans": 5}
    assert materialized["summary"].metadata == {"sum": 45, "count": 10}
    assert materialized["source"].metadata["path"].endswith("source")
    ids = [m.id for m in harness.storage.get_materializations()]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for key in steps:
        assert len(harness.executions(key)) == 1, key
    logs = [e.message for e in harness.storage.get_events(run_id) if e.event_type == "LOG"]
    assert "summary of {'sum': 45, 'count': 10}" in logs


def test_failure_retries_then_skips_descendants(harness: Harness, worker_factory: Callable[..., WorkerProcess]) -> None:
    worker_factory(harness.env, name="w1", concurrency=2)
    run_id = harness.run("failing_job")

    run = harness.storage.get_run(run_id)
    assert run.status == RunStatus.FAILURE
    steps = {s.step_key: s for s in harness.storage.get_steps(run_id)}
    assert steps["flaky"].status == StepStatus.FAILED
    assert steps["flaky"].attempt == 3  # the first try and two retries
    assert "RuntimeError: warehouse unreachable (attempt 3)" in steps["flaky"].error
    assert "Traceback (most recent call last)" in steps["flaky"].error
    assert steps["after_flaky"].status == StepStatus.SKIPPED
    assert steps["after_after"].status == StepStatus.SKIPPED
    assert steps["branch_ok"].status == StepStatus.SUCCEEDED
    assert steps["branch_ok_child"].status == StepStatus.SUCCEEDED
    assert [line.split()[2] for line in harness.executions("flaky")] == ["1", "2", "3"]
    assert harness.executions("after_flaky") == []

    # The retry delays (0.3 s, then 0.6 s: linear backoff) were honoured between attempts.
    starts = [
        e.timestamp
        for e in harness.storage.get_events(run_id)
        if e.event_type == "STEP_STARTED" and e.step_key == "flaky"
    ]
    assert len(starts) == 3
    assert (starts[1] - starts[0]).total_seconds() >= 0.3
    assert (starts[2] - starts[1]).total_seconds() >= 0.6

    shown = subprocess.run(
        [TIDEGATE, "runs", "show", run_id[:10]], env=harness.env, capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 0, shown.stderr
    assert "FAILURE" in shown.stdout
    assert "error in step 'flaky' (attempt 3)" in shown.stdout
    assert "RuntimeError: warehouse unreachable (attempt 3)" in shown.stdout
    assert "SKIPPED" in shown.stdout


def test_duplicate_delivery_runs_the_asset_once(harness: Harness, worker_factory: Callable[..., WorkerProcess]) -> None:
    worker_factory(harness.env, name="w1", concurrency=1)
    run_id = harness.submit("once_job")
    ready = harness.storage.start_run(run_id)
    assert [r.step_key for r in ready] == ["once"]
    harness.publisher(ready)
    harness.publisher(ready)  # the same step task delivered twice
    assert harness.wait(run_id) == RunStatus.SUCCESS
    # And once more by hand after it finished, straight through Celery.
    harness.app.send_task(EXECUTE_STEP_TASK, args=[run_id, "once", 1], queue="tidegate")
    # One worker process consumes in order: once the sentinel ran, every duplicate was seen.
    sentinel_run = harness.run("sentinel_job")
    assert harness.storage.get_run(sentinel_run).status == RunStatus.SUCCESS
    assert len(harness.executions("sentinel")) == 1
    assert len(harness.executions("once")) == 1
    started = [e for e in harness.storage.get_events(run_id) if e.event_type == "STEP_STARTED"]
    assert len(started) == 1
    materializations = [m for m in harness.storage.get_materializations("once") if m.run_id == run_id]
    assert len(materializations) == 1


def test_a_running_step_records_heartbeats(harness: Harness, worker_factory: Callable[..., WorkerProcess]) -> None:
    worker_factory(harness.env, name="w1", concurrency=1)
    run_id = harness.run("slow_job")
    (step,) = harness.storage.get_steps(run_id)
    assert step.status == StepStatus.SUCCEEDED
    # Written every second while the 2.3 s body ran, never after the step ended.
    assert 1.5 <= (step.heartbeat_at - step.started_at).total_seconds() <= 2.5
    assert step.heartbeat_at <= step.ended_at


def test_steps_run_on_workers_serving_their_queue(
    harness: Harness, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker_factory(harness.env, name="light", queues="tidegate", concurrency=1)
    worker_factory(harness.env, name="heavy", queues="heavy", concurrency=1)
    run_id = harness.run("routing_job")
    assert harness.storage.get_run(run_id).status == RunStatus.SUCCESS
    workers = {s.step_key: s.worker.split("@")[0] for s in harness.storage.get_steps(run_id)}
    assert workers == {"light_a": "light", "heavy_b": "heavy", "light_c": "light"}
    queues = {s.step_key: s.queue for s in harness.storage.get_steps(run_id)}
    assert queues == {"light_a": "tidegate", "heavy_b": "heavy", "light_c": "tidegate"}


# -- what assets return and yield, on worker processes ----------------------------------------


def test_a_none_returned_upstream_reaches_the_downstream_worker(
    harness: Harness, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker_factory(harness.env, name="w1", concurrency=2)
    run_id = harness.run("none_job")
    assert harness.storage.get_run(run_id).status == RunStatus.SUCCESS, harness.storage.get_steps(run_id)
    stored = harness.env["TIDEGATE_IO_BASE_DIR"]
    assert pickle.loads((Path(stored) / "takes_none").read_bytes()) == "got None"
    assert pickle.loads((Path(stored) / "returns_none").read_bytes()) is None


def test_a_generator_asset_records_what_it_yields(
    harness: Harness, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker_factory(harness.env, name="w1", concurrency=2)
    run_id = harness.run("generator_job")
    assert harness.storage.get_run(run_id).status == RunStatus.SUCCESS, harness.storage.get_steps(run_id)
    materialized = {m.asset_key: m for m in harness.storage.get_materializations() if m.run_id == run_id}
    assert set(materialized) == {"generated", "generated_mirror", "after_generated"}
    assert materialized["generated"].metadata["rows"] == 3
    assert materialized["generated_mirror"].metadata == {"copied": True}
    assert materialized["generated_mirror"].step_key == "generated"
    observed = [e for e in harness.storage.get_events(run_id) if e.event_type == "ASSET_OBSERVATION"]
    assert [(e.message, e.data["metadata"]) for e in observed] == [("generated", {"seen": 3})]
    assert pickle.loads((Path(harness.env["TIDEGATE_IO_BASE_DIR"]) / "after_generated").read_bytes()) == 6


# -- a step whose attempt is taken away stops at its next context.log call ---------------------


def _started(harness: Harness, run_id: str, lines: int = 3, timeout: float = 30.0) -> None:
    """Start the run and wait until its long step has run a few iterations."""
    deadline = time.monotonic() + timeout
    while len(harness.executions("long_logger")) < lines:
        assert time.monotonic() < deadline, harness.storage.get_steps(run_id)
        harness.launcher.tick()
        time.sleep(0.05)


def _stopped_early(harness: Harness) -> int:
    """Wait until the step's effects stop growing; returns how many iterations ran."""
    count, still_for = -1, 0.0
    while still_for < 1.5:  # several heartbeats (0.2 s) without a new iteration (0.05 s each)
        time.sleep(0.25)
        now = len(harness.executions("long_logger"))
        still_for = still_for + 0.25 if now == count else 0.0
        count = now
    assert count < 200, f"the step ran {count} of its 400 iterations: it was not interrupted"
    return count


def _nothing_recorded_by_the_attempt(harness: Harness, run_id: str, *step_events: str) -> None:
    """No materialization, no output, and the step's events are only ``step_events``: none of
    the attempt's own (no LOG, no outcome)."""
    assert [m for m in harness.storage.get_materializations() if m.run_id == run_id] == []
    kinds = [e.event_type for e in harness.storage.get_events(run_id) if e.step_key == "long_logger"]
    assert kinds == list(step_events)
    assert not (Path(harness.env["TIDEGATE_IO_BASE_DIR"]) / "long_logger").exists()


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_canceled_run_stops_its_running_step(
    harness: Harness, worker_factory: Callable[..., WorkerProcess], pool: str
) -> None:
    """Cancel in storage only (no revoke): the heartbeat tells the step, which stops cooperatively."""
    harness.env["TIDEGATE_HEARTBEAT_SECONDS"] = "0.2"
    worker = worker_factory(harness.env, name="w1", concurrency=1, pool=pool)
    run_id = harness.submit("long_job")
    _started(harness, run_id)
    assert harness.storage.cancel_run(run_id).canceled
    ran = _stopped_early(harness)

    (step,) = harness.storage.get_steps(run_id)
    assert step.status == StepStatus.CANCELED  # as the canceller left it
    assert harness.storage.get_run(run_id).status == RunStatus.CANCELED
    _nothing_recorded_by_the_attempt(harness, run_id, "STEP_STARTED")
    assert f"step 'long_logger' of run {run_id} attempt 1: its run was canceled" in worker.log()
    assert "StepInterruptedError" in worker.log()
    # The worker is free again: the next run executes on it.
    assert harness.storage.get_run(harness.run("sentinel_job")).status == RunStatus.SUCCESS
    assert len(harness.executions("long_logger")) == ran


@pytest.mark.parametrize(
    ("pool", "heartbeat", "stopped_by"),
    [
        # Threads cannot be terminated: the next heartbeat (0.2 s) tells the step, which stops.
        ("threads", "0.2", "was given up by the run monitor (the step is now FAILED, attempt 1)"),
        # Prefork: the monitor's revoke terminates the pool process long before the next heartbeat.
        ("prefork", "60", "Terminating"),
    ],
)
def test_a_step_given_up_by_the_run_monitor_stops(
    harness: Harness, worker_factory: Callable[..., WorkerProcess], pool: str, heartbeat: str, stopped_by: str
) -> None:
    """The run monitor judges the heartbeat stale (its clock moved an hour on) and fails the
    step; the worker, alive all along, stops it."""
    harness.env["TIDEGATE_HEARTBEAT_SECONDS"] = heartbeat
    worker = worker_factory(harness.env, name="w1", concurrency=1, pool=pool)
    run_id = harness.submit("long_job")
    _started(harness, run_id)
    monitor = RunMonitor(
        harness.storage, harness.publisher, DEFS, MonitorConfig(worker_lost_retries=0), publisher=harness.publisher
    )
    assert monitor.check(now=datetime.now(UTC) + timedelta(hours=1))["lost"] == 1
    _stopped_early(harness)

    (step,) = harness.storage.get_steps(run_id)
    assert step.status == StepStatus.FAILED and step.attempt == 1  # as the monitor left it
    assert "WorkerLostError: no heartbeat from worker" in step.error
    assert harness.storage.get_run(run_id).status == RunStatus.FAILURE
    _nothing_recorded_by_the_attempt(harness, run_id, "STEP_STARTED", "STEP_FAILURE")  # the monitor's failure
    assert stopped_by in worker.log()
