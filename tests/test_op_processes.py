"""Op jobs on real `tidegate worker` processes over Redis and PostgreSQL: each op invocation a
step (its own Celery task), a dynamic fan-out's mapped steps planned by the producing step's
success and spread over two workers, and a partitioned op job launched by its schedule."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support import WorkerProcess, tidegate_env, truncate_all
from tidegate.broker import CeleryPublisher, make_celery_app
from tidegate.definitions.loading import CodeLocation
from tidegate.names import PARTITION_TAG, RunStatus, StepStatus
from tidegate.scheduler.beat import Beat
from tidegate.scheduler.clock import FakeClock
from tidegate.scheduler.launcher import Launcher
from tidegate.storage.api import Storage

PROJECT = Path(__file__).parent / "projects" / "ops_project.py"
DEFS = CodeLocation(file=str(PROJECT)).load()

pytestmark = pytest.mark.slow


class Harness:
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

    def run(self, job: str, timeout: float = 90.0) -> str:
        run_id = self.storage.submit_run(DEFS.plan(job), origin="test").run_id
        self.wait(run_id, timeout)
        return run_id

    def wait(self, run_id: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.launcher.tick()
            status = self.storage.get_run(run_id).status
            if status in RunStatus.TERMINAL:
                return status
            time.sleep(0.05)
        steps = {s.step_key: s.status for s in self.storage.get_steps(run_id)}
        raise AssertionError(f"run {run_id} did not finish in {timeout}s: {steps}")

    def effects_of(self, name: str) -> list[str]:
        path = self.effects / f"{name}.log"
        return path.read_text().splitlines() if path.exists() else []

    def steps(self, run_id: str) -> dict[str, object]:
        return {s.step_key: s for s in self.storage.get_steps(run_id)}


@pytest.fixture
def harness(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[Harness]:
    truncate_all(pg_url)
    h = Harness(pg_url, redis_url, tmp_path)
    yield h
    h.app.close()
    h.storage.dispose()


def test_op_jobs_run_each_op_as_a_step_on_two_workers(
    harness: Harness, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker_factory(harness.env, name="w1", concurrency=2)
    worker_factory(harness.env, name="w2", concurrency=2)

    # A diamond: join waits for both branches, its inputs loaded through the IO manager.
    run_id = harness.run("diamond_job")
    assert harness.storage.get_run(run_id).status == RunStatus.SUCCESS
    steps = {s.step_key: s for s in harness.storage.get_steps(run_id)}
    assert set(steps) == {"source", "left", "right", "join"}
    assert steps["join"].started_at >= max(steps["left"].ended_at, steps["right"].ended_at)
    assert harness.effects_of("join") == ["34"]  # (3 + 1) + 3 * 10
    assert harness.storage.get_run(run_id).tags["team"] == "ops"

    # A graph nested in a graph: its ops are steps named by their path.
    run_id = harness.run("nested_job")
    assert harness.storage.get_run(run_id).status == RunStatus.SUCCESS
    keys = {s.step_key for s in harness.storage.get_steps(run_id)}
    assert keys == {"source", "outer.inner.left", "outer.inner.right", "outer.left", "record"}
    assert harness.effects_of("nested") == ["41"]  # ((3 + 1) * 10) + 1

    # An optional output left out: its consumer is skipped, the run still succeeds.
    run_id = harness.run("optional_job")
    assert harness.storage.get_run(run_id).status == RunStatus.SUCCESS
    steps = {s.step_key: s for s in harness.storage.get_steps(run_id)}
    assert steps["on_maybe"].status == StepStatus.SKIPPED
    assert steps["on_always"].status == StepStatus.SUCCEEDED
    assert harness.effects_of("on_maybe") == [] and harness.effects_of("on_always") == ["1"]

    # 50 mapped steps, planned when split succeeded; square[n13] fails once and is retried.
    run_id = harness.run("fan_out_job", timeout=180.0)
    assert harness.storage.get_run(run_id).status == RunStatus.SUCCESS
    steps = {s.step_key: s for s in harness.storage.get_steps(run_id)}
    mapped = {k: s for k, s in steps.items() if k.startswith("square[")}
    assert set(mapped) == {f"square[n{i}]" for i in range(50)}
    assert all(s.status == StepStatus.SUCCEEDED for s in mapped.values())
    assert mapped["square[n13]"].attempt == 2
    assert sorted(harness.effects_of("square")).count("n13 0") == 1
    assert harness.effects_of("total") == [str(sum(i * i for i in range(50)))]
    assert steps["total"].started_at >= max(s.ended_at for s in mapped.values())  # collect waited for all
    assert {s.worker.split("@")[0] for s in mapped.values()} == {"w1", "w2"}
    events = harness.storage.get_events(run_id)
    split_success = next(e for e in events if e.step_key == "split" and e.event_type == "STEP_SUCCESS")
    first_mapped = min(e.id for e in events if (e.step_key or "").startswith("square["))
    assert split_success.id < first_mapped
    # planned in split's success transaction: the same commit timestamp as its STEP_SUCCESS
    dynamic = next(e for e in events if e.step_key == "split" and e.event_type == "DYNAMIC_OUTPUT")
    assert dynamic.timestamp == split_success.timestamp and len(dynamic.data["mapping_keys"]) == 50


def test_partitioned_op_job_runs_from_its_schedule(
    harness: Harness, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker_factory(harness.env, name="w1", concurrency=2)
    clock = FakeClock(datetime(2024, 1, 3, 0, 0, 30, tzinfo=UTC))
    beat = Beat(DEFS, harness.storage, harness.publisher, clock=clock, holder="test-beat")
    beat.tick()
    clock.set(datetime(2024, 1, 4, 0, 0, 30, tzinfo=UTC))
    beat.tick()
    runs = [r for r in harness.storage.list_runs() if r.job_name == "daily_job"]
    assert runs, "the schedule requested no run"
    for run in runs:
        assert harness.wait(run.run_id) == RunStatus.SUCCESS
    keys = sorted(r.tags[PARTITION_TAG] for r in runs)
    assert keys[-1] == "2024-01-03"
    assert sorted(harness.effects_of("daily_report")) == keys
