"""Continuation (``TIDEGATE_CONTINUATION``, on by default): a step whose success readies a
child on the queue its delivery came from claims that child in the same transaction and runs it
next in the same process, instead of publishing it. On SQLite and PostgreSQL, with the real
executor and storage; one test with a real worker over Redis shows a Celery delivery continues.

Each guarantee of a published step holds: the claim is the same compare-and-set (a second
delivery of the child runs nothing), a pool's limit is kept (a child in a full pool is WAITING,
never claimed), a continued step that dies mid-run is retried by the run monitor, another
queue's or a timed child goes through the broker, a canceled run ends the chain, and revoking a
continued step terminates the broker task it runs inside (recorded with its claim).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

import tidegate as tg
from tests.support import ROOT, WorkerProcess
from tests.test_workers import Harness
from tidegate.config import MonitorConfig
from tidegate.definitions.asset import DEFAULT_QUEUE
from tidegate.definitions.job import RunPlan
from tidegate.definitions.loading import CodeLocation
from tidegate.names import RunStatus, StepStatus, step_task_id
from tidegate.scheduler.monitor import RunMonitor
from tidegate.storage.api import CONTINUED_IN, Storage
from tidegate.storage.records import StepRef
from tidegate.workers import execution
from tidegate.workers.execution import Outcome, StepExecutor
from tidegate.workers.io import FilesystemIOManager

_T = TypeVar("_T")
STUCK_PROJECT = ROOT / "tests" / "projects" / "continuation_project.py"

bodies: list[str] = []
die_in: set[str] = set()
during: dict[str, Callable[[], object]] = {}  # step key -> called inside its body


class _ProcessDied(BaseException):
    """Stands for the worker process being killed while the body runs: nothing after it runs."""


def _body(name: str) -> None:
    bodies.append(name)
    if name in during:
        during.pop(name)()
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
    during.clear()
    yield
    die_in.clear()
    during.clear()


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


def test_a_run_canceled_during_a_continued_step_ends_the_chain(storage: Storage, tmp_path: Path) -> None:
    """Canceled while b (continued from a) runs: b's outcome is not recorded and it claims
    nothing, so c never runs here; the chain stops without a broker in the loop."""
    run_id = started(storage, "chain")
    during["b"] = lambda: storage.cancel_run(run_id)
    worker, published = executor(storage, tmp_path)
    assert worker.execute(run_id, "a", 1, queue=DEFAULT_QUEUE) == Outcome.SUCCEEDED
    assert bodies == ["a", "b"] and published == []
    assert steps(storage, run_id) == {
        "a": (StepStatus.SUCCEEDED, 1, "w1@test"),
        "b": (StepStatus.CANCELED, 1, "w1@test"),
        "c": (StepStatus.CANCELED, 1, None),
    }
    assert successes(storage, run_id) == ["a"]
    assert storage.get_run(run_id).status == RunStatus.CANCELED


def test_a_continued_claim_records_the_task_it_runs_inside(storage: Storage, tmp_path: Path) -> None:
    """What ``CeleryPublisher.revoke`` reads to terminate a continued step: the delivery's
    task id, with the claim (its STEP_STARTED event); a step with its own task has none."""
    run_id = started(storage, "chain")
    worker, _ = executor(storage, tmp_path)
    assert worker.execute(run_id, "a", 1, queue=DEFAULT_QUEUE, task_id="delivery-of-a") == Outcome.SUCCEEDED
    refs = [StepRef(run_id, key, 1, DEFAULT_QUEUE, key) for key in ("a", "b", "c")]
    assert storage.continued_deliveries(refs) == {(run_id, "b", 1): "delivery-of-a", (run_id, "c", 1): "delivery-of-a"}
    started_events = {e.step_key: e.data for e in storage.get_events(run_id) if e.event_type == "STEP_STARTED"}
    assert started_events["a"] == {"attempt": 1}
    assert started_events["b"] == {"attempt": 1, CONTINUED_IN: "delivery-of-a"}
    assert storage.continued_deliveries([StepRef(run_id, "b", 2, DEFAULT_QUEUE, "b")]) == {}  # another attempt


def test_revoking_a_continued_step_terminates_the_process_running_it(
    redis_url: str, tmp_path: Path, worker_factory: Callable[..., WorkerProcess]
) -> None:
    """A real prefork worker continues ``first -> stuck``; ``stuck`` ignores its context, so
    only terminating its process stops it. Canceling the run and revoking its running steps
    (what `tidegate run cancel`, the API and the UI do) terminates the task of ``first``'s
    delivery, inside which ``stuck`` runs: the process goes, ``stuck`` never finishes."""
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    harness = Harness(f"sqlite:///{tmp_path / 'tidegate.db'}", redis_url, tmp_path)
    harness.env["TIDEGATE_DEFINITIONS"] = str(STUCK_PROJECT)
    harness.env["TIDEGATE_HEARTBEAT_SECONDS"] = "30"  # no beat during the test: termination alone stops it
    effects = harness.effects / "stuck.log"
    try:
        worker = worker_factory(harness.env, name="revoke", concurrency=1)
        run_id = harness.storage.submit_run(_stuck_plan(), origin="test").run_id
        started_line = _wait_for(lambda: _line(effects, f"started {run_id} "), harness)
        pid = int(started_line.split()[2])
        stuck = next(s for s in harness.storage.get_steps(run_id) if s.step_key == "stuck")
        assert stuck.status == StepStatus.RUNNING and stuck.enqueued_at is None  # claimed by continuation
        delivery = step_task_id(run_id, "first", 1)
        assert harness.storage.continued_deliveries([_ref(run_id, "stuck")]) == {(run_id, "stuck", 1): delivery}
        result = harness.storage.cancel_run(run_id)
        assert [r.step_key for r in result.running] == ["stuck"]
        harness.publisher.revoke(result.running)
        _wait_for(lambda: not _alive(pid), harness)
        assert f"Terminating {delivery}" in worker.log()
        assert _line(effects, f"finished {run_id}") is None
        assert harness.storage.get_run(run_id).status == RunStatus.CANCELED
    finally:
        harness.close()


def _stuck_plan() -> RunPlan:
    return CodeLocation(file=str(STUCK_PROJECT)).load().plan("stuck_job")


def _ref(run_id: str, key: str) -> StepRef:
    return StepRef(run_id, key, 1, DEFAULT_QUEUE, key)


def _line(path: Path, prefix: str) -> str | None:
    lines = path.read_text().splitlines() if path.exists() else []
    return next((line for line in lines if line.startswith(prefix)), None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(found: Callable[[], _T | bool | None], harness: Harness, timeout: float = 45.0) -> _T:
    """Drive the launcher (start the run, publish its roots) until ``found`` returns something."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        harness.launcher.tick()
        value = found()
        if value:
            return value  # type: ignore[return-value]
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout}s")
