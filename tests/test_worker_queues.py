"""Which queues a `tidegate worker` consumes: like Celery, the default queue unless -Q says
otherwise, so a step on queue "heavy" never lands on a general worker. Real worker processes
over real Redis."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, TIDEGATE, WorkerProcess
from tests.test_workers import Harness
from tidegate.names import RunStatus, StepStatus

PROJECT = ROOT / "tests" / "projects" / "core_project.py"


@pytest.fixture
def harness(redis_url: str, tmp_path: Path) -> Iterator[Harness]:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    h = Harness(f"sqlite:///{tmp_path / 'tidegate.db'}", redis_url, tmp_path)
    yield h
    h.close()


def _step(harness: Harness, run_id: str, key: str) -> tuple[str, str | None]:
    [step] = [s for s in harness.storage.get_steps(run_id) if s.step_key == key]
    return step.status, step.worker


def test_a_worker_without_q_does_not_run_heavy_steps_and_one_with_q_heavy_does(
    harness: Harness, worker_factory: Callable[..., WorkerProcess]
) -> None:
    general = worker_factory(harness.env, name="general", queues=None, concurrency=1)
    assert "-Q" not in general.process.args
    run_id = harness.submit("routing_job")
    deadline = time.monotonic() + 30
    while _step(harness, run_id, "light_a")[0] != StepStatus.SUCCEEDED and time.monotonic() < deadline:
        harness.launcher.tick()
        time.sleep(0.05)
    status, worker = _step(harness, run_id, "light_a")
    assert status == StepStatus.SUCCEEDED and (worker or "").startswith("general@")
    for _ in range(40):  # 2 s of publishing: the general worker is idle, heavy_b stays in Redis
        harness.launcher.tick()
        time.sleep(0.05)
    assert _step(harness, run_id, "heavy_b") == (StepStatus.ENQUEUED, None)
    assert harness.executions("heavy_b") == []

    worker_factory(harness.env, name="heavy", queues="heavy", concurrency=1)
    assert harness.wait(run_id, timeout=60) == RunStatus.SUCCESS
    workers = {s.step_key: (s.worker or "").split("@")[0] for s in harness.storage.get_steps(run_id)}
    assert workers == {"light_a": "general", "heavy_b": "heavy", "light_c": "general"}


def test_all_queues_consumes_the_default_queue_and_every_queue_the_code_names(
    harness: Harness, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker = worker_factory(harness.env, name="every", concurrency=1)  # tests.support: --all-queues
    assert "--all-queues" in worker.process.args
    run_id = harness.submit("routing_job")
    assert harness.wait(run_id, timeout=60) == RunStatus.SUCCESS
    assert {(s.worker or "").split("@")[0] for s in harness.storage.get_steps(run_id)} == {"every"}
    banner = worker.log()
    assert ".> heavy " in banner and ".> tidegate " in banner


def test_q_and_all_queues_together_are_refused(harness: Harness) -> None:
    result = subprocess.run(
        [TIDEGATE, "worker", "-Q", "heavy", "--all-queues"],
        env=harness.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "give -Q or --all-queues, not both" in result.stderr


def test_the_embedded_worker_of_make_run_and_tidegate_dev_serves_every_queue(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(
        TIDEGATE_HOME=str(tmp_path / "home"),
        TIDEGATE_BROKER_URL="memory://localhost/",
        TIDEGATE_TEST_EFFECTS=str(tmp_path / "effects"),
    )
    result = subprocess.run(
        [TIDEGATE, "job", "launch", "routing_job", "-f", str(PROJECT), "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "heavy_b" in result.stdout and "SUCCESS" in result.stdout
