"""Continuation (``TIDEGATE_CONTINUATION``, off by default): a step whose success readies a
child on the queue its delivery came from claims that child in the same transaction and runs it
next in the same process, instead of publishing it. On SQLite and PostgreSQL, with the real
executor and storage; one test with a real worker over Redis shows a Celery delivery continues.

Each guarantee of a published step holds: the claim is the same compare-and-set (a second
delivery of the child runs nothing), a pool's limit is kept (a child in a full pool is WAITING,
never claimed), a continued step that dies mid-run is retried by the run monitor, another
queue's or a timed child goes through the broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import tidegate as tg
from tests.support import WorkerProcess
from tests.test_workers import Harness
from tidegate.config import MonitorConfig
from tidegate.definitions.asset import DEFAULT_QUEUE
from tidegate.names import RunStatus, StepStatus
from tidegate.scheduler.monitor import RunMonitor
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRef
from tidegate.workers import execution
from tidegate.workers.execution import Outcome, StepExecutor
from tidegate.workers.io import FilesystemIOManager

bodies: list[str] = []
die_in: set[str] = set()


class _ProcessDied(BaseException):
    """Stands for the worker process being killed while the body runs: nothing after it runs."""


def _body(name: str) -> None:
    bodies.append(name)
    if name in die_in:
        die_in.discard(name)
        raise _ProcessDied(name)


@tg.asset
def a() -> None:
    _body("a")


@tg.asset(deps=[a], retry_policy=tg.RetryPolicy(max_retries=1))
def b() -> None:
    _body("b")


@tg.asset(deps=[b])
def c() -> None:
    _body("c")


@tg.asset(deps=[a], pool="narrow")
def pooled() -> None:
    _body("pooled")


@tg.asset(deps=[a], queue="heavy")
def elsewhere() -> None:
    _body("elsewhere")


@tg.asset(deps=[a], timeout=30)
def timed() -> None:
    _body("timed")


DEFS = tg.Definitions(
    assets=[a, b, c, pooled, elsewhere, timed],
    jobs=[
        tg.define_asset_job("chain", [a, b, c]),
        tg.define_asset_job("pooled_job", [a, pooled]),
        tg.define_asset_job("others", [a, elsewhere, timed]),
    ],
)


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    bodies.clear()
    die_in.clear()
    yield
    die_in.clear()


class Published(list[StepRef]):
    def __call__(self, refs: list[StepRef]) -> None:
        self.extend(refs)


def executor(storage: Storage, tmp_path: Path, name: str = "w1@test") -> tuple[StepExecutor, Published]:
    published = Published()
    return (
        StepExecutor(
            defs=DEFS,
            storage=storage,
            publish=published,
            worker_name=name,
            heartbeat_seconds=5.0,
            continuation=True,
            default_io_manager=FilesystemIOManager(tmp_path / "io"),
        ),
        published,
    )


def started(storage: Storage, job: str) -> str:
    run_id = storage.submit_run(DEFS.plan(job), origin="test").run_id
    storage.start_run(run_id)
    return run_id


def steps(storage: Storage, run_id: str) -> dict[str, tuple[str, int, str | None]]:
    return {s.step_key: (s.status, s.attempt, s.worker) for s in storage.get_steps(run_id)}


def successes(storage: Storage, run_id: str) -> list[str]:
    return sorted(e.step_key or "" for e in storage.get_events(run_id) if e.event_type == "STEP_SUCCESS")


def test_one_delivery_runs_a_chain_on_its_queue_each_step_recorded_once(storage: Storage, tmp_path: Path) -> None:
    run_id = started(storage, "chain")
    worker, published = executor(storage, tmp_path)
    assert worker.execute(run_id, "a", 1, queue=DEFAULT_QUEUE) == Outcome.SUCCEEDED
    assert bodies == ["a", "b", "c"]
    assert published == []  # b and c never went through the broker
    assert steps(storage, run_id) == {k: (StepStatus.SUCCEEDED, 1, "w1@test") for k in ("a", "b", "c")}
    assert successes(storage, run_id) == ["a", "b", "c"]
    started_events = [e.step_key for e in storage.get_events(run_id) if e.event_type == "STEP_STARTED"]
    assert sorted(started_events) == ["a", "b", "c"]  # the run's event log shows every claim
    assert storage.get_run(run_id).status == RunStatus.SUCCESS


def test_without_a_queue_or_with_continuation_off_children_are_published(storage: Storage, tmp_path: Path) -> None:
    run_id = started(storage, "chain")
    worker, published = executor(storage, tmp_path)
    assert worker.execute(run_id, "a", 1) == Outcome.SUCCEEDED
    assert bodies == ["a"] and [r.step_key for r in published] == ["b"]
    worker.continuation = False  # the default: TIDEGATE_CONTINUATION unset
    assert worker.execute(run_id, "b", 1, queue=DEFAULT_QUEUE) == Outcome.SUCCEEDED
    assert bodies == ["a", "b"] and [r.step_key for r in published] == ["b", "c"]


def test_a_second_delivery_of_a_continued_child_runs_nothing(storage: Storage, tmp_path: Path) -> None:
    """Two workers racing for one child: the continuation's claim is the compare-and-set, so
    the other delivery (say a republish) finds it taken."""
    run_id = started(storage, "chain")
    die_in.add("b")  # stop inside b, the continued child, to race for it while it runs
    worker, _ = executor(storage, tmp_path)
    with pytest.raises(_ProcessDied):
        worker.execute(run_id, "a", 1, queue=DEFAULT_QUEUE)
    assert steps(storage, run_id)["b"] == (StepStatus.RUNNING, 1, "w1@test")
    other, _ = executor(storage, tmp_path, "w2@test")
    assert other.execute(run_id, "b", 1, queue=DEFAULT_QUEUE) == Outcome.DUPLICATE
    assert bodies == ["a", "b"]  # b's body ran once
    assert storage.steps_to_publish(now=datetime.now(UTC) + timedelta(hours=1)) == []  # RUNNING: nothing to send


def test_a_continued_step_killed_mid_run_is_retried_by_the_run_monitor(storage: Storage, tmp_path: Path) -> None:
    run_id = started(storage, "chain")
    die_in.add("b")
    worker, _ = executor(storage, tmp_path)
    with pytest.raises(_ProcessDied):
        worker.execute(run_id, "a", 1, queue=DEFAULT_QUEUE)
    published = Published()
    monitor = RunMonitor(storage, published, DEFS, MonitorConfig(heartbeat_timeout_seconds=1.0))
    assert monitor.check(now=datetime.now(UTC) + timedelta(hours=1))["lost"] == 1
    assert steps(storage, run_id)["b"][:2] == (StepStatus.READY, 2)  # b's RetryPolicy
    again, _ = executor(storage, tmp_path, "w2@test")
    assert again.execute(run_id, "b", 2, queue=DEFAULT_QUEUE) == Outcome.SUCCEEDED
    assert bodies == ["a", "b", "b", "c"]
    assert successes(storage, run_id) == ["a", "b", "c"]
    assert storage.get_run(run_id).status == RunStatus.SUCCESS


def test_a_child_in_a_full_pool_is_not_continued(storage: Storage, tmp_path: Path) -> None:
    storage.set_pool_limit("narrow", 1)
    holder = started(storage, "pooled_job")
    worker, _ = executor(storage, tmp_path)
    die_in.add("pooled")  # holder's pooled step takes the pool's one slot and stays RUNNING
    with pytest.raises(_ProcessDied):
        worker.execute(holder, "a", 1, queue=DEFAULT_QUEUE)
    assert steps(storage, holder)["pooled"][0] == StepStatus.RUNNING
    run_id = started(storage, "pooled_job")
    bodies.clear()
    assert worker.execute(run_id, "a", 1, queue=DEFAULT_QUEUE) == Outcome.SUCCEEDED
    assert bodies == ["a"]  # the pooled child waits for the slot instead of running here
    assert steps(storage, run_id)["pooled"] == (StepStatus.WAITING, 1, None)


def test_a_child_on_another_queue_or_with_a_timeout_is_published(storage: Storage, tmp_path: Path) -> None:
    run_id = started(storage, "others")
    worker, published = executor(storage, tmp_path)
    assert worker.execute(run_id, "a", 1, queue=DEFAULT_QUEUE) == Outcome.SUCCEEDED
    assert bodies == ["a"]
    assert sorted(r.step_key for r in published) == ["elsewhere", "timed"]


def test_continuation_stops_after_its_bound_and_publishes_the_next(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(execution, "MAX_CONTINUED_STEPS", 1)
    run_id = started(storage, "chain")
    worker, published = executor(storage, tmp_path)
    assert worker.execute(run_id, "a", 1, queue=DEFAULT_QUEUE) == Outcome.SUCCEEDED
    assert bodies == ["a", "b"] and [r.step_key for r in published] == ["c"]


def test_a_real_worker_continues_a_chain_from_its_delivery(
    redis_url: str, tmp_path: Path, worker_factory: Callable[..., WorkerProcess]
) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    harness = Harness(f"sqlite:///{tmp_path / 'tidegate.db'}", redis_url, tmp_path)
    try:
        worker_factory({**harness.env, "TIDEGATE_CONTINUATION": "1"}, name="cont", concurrency=1)
        run_id = harness.run("big_job", timeout=15)
        assert harness.storage.get_run(run_id).status == RunStatus.SUCCESS
        continued = [s for s in harness.storage.get_steps(run_id) if s.enqueued_at is None]
        assert continued, "no step was run by continuation"  # claimed READY, never published
        assert all((s.worker or "").startswith("cont@") for s in continued)
    finally:
        harness.close()
