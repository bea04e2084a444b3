"""The run queue, pools, cancellation, re-execution, run retries and step timeouts on real
`tidegate worker` processes over real Redis, on SQLite and PostgreSQL.

Each backend gets one cluster for the whole module: two threads workers (``-P threads -c 4``)
on the main queue and one prefork worker (``-c 1``) on the control queue (terminating revokes
and soft time limits need prefork). Queue names carry a suffix unique to this session, so that
other sessions using the same Redis database neither take our steps nor give us theirs.

The test drives the beat's part itself: it submits several runs first and only then ticks a
Launcher, so it decides when runs may start; every ordering and limit is then asserted from the
start and end times recorded in the database.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from tests.support import (
    REDIS_HOST,
    REDIS_PORT,
    TIDEGATE,
    WorkerProcess,
    dedicated_pg_database,
    require_service,
    start_worker,
    stop_workers,
    tidegate_env,
    truncate_all,
)
from tidegate.broker import CeleryPublisher, make_celery_app
from tidegate.config import Settings
from tidegate.definitions.defs import Definitions
from tidegate.names import (
    CODE_LOCATION_TAG,
    PARENT_RUN_TAG,
    PRIORITY_TAG,
    RETRY_NUMBER_TAG,
    ROOT_RUN_TAG,
    RunStatus,
    StepStatus,
)
from tidegate.scheduler.launcher import Launcher
from tidegate.storage.api import Storage
from tidegate.storage.records import RunRecord, StepRecord
from tidegate.storage.schema import metadata
from tidegate.storage.schema import steps as steps_table

PROJECT = Path(__file__).parent / "projects" / "queue_project.py"
QUEUE_SUFFIX = f"_{os.getpid()}_{uuid.uuid4().hex[:6]}"
REDIS_DB = int(os.environ.get("TIDEGATE_TEST_CONTROL_REDIS_DB", "7"))  # apart from the conftest default (11)


def load_project() -> Definitions:
    """The project as the workers load it (with this session's queue names), under a module
    name of its own: tests/test_run_queue.py may have imported it without the suffix."""
    os.environ["TIDEGATE_TEST_QUEUE_SUFFIX"] = QUEUE_SUFFIX
    try:
        spec = importlib.util.spec_from_file_location("queue_project_run_control", PROJECT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        del os.environ["TIDEGATE_TEST_QUEUE_SUFFIX"]
    defs: Definitions = module.defs
    return defs


DEFS = load_project()
MAIN_QUEUE = f"tidegate{QUEUE_SUFFIX}"
CONTROL_QUEUE = f"control{QUEUE_SUFFIX}"
assert DEFS.get_asset("hold").queue == MAIN_QUEUE and DEFS.get_asset("long_a").queue == CONTROL_QUEUE
THREADS_WORKERS = 2
THREADS_PER_WORKER = 4


# -- the cluster: services and worker processes, once per backend ------------------------------


@pytest.fixture(scope="module")
def control_pg_url() -> Iterator[str]:
    with dedicated_pg_database("tidegate_test_control") as url:
        yield url


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    """Redis database 7. Not flushed: another session may be using it right now (flushing
    would drop its messages, as its flushes would drop ours); our queues are ours alone and
    their keys are deleted at the end."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        require_service("Redis", f"{REDIS_HOST}:{REDIS_PORT}: {exc}")
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    mine = [k for k in client.scan_iter(match=f"*{QUEUE_SUFFIX}*", count=1000)]
    if mine:
        client.delete(*mine)
    client.close()


@dataclass
class Cluster:
    backend: str
    database_url: str
    broker_url: str
    tmp: Path
    env: dict[str, str]
    workers: list[WorkerProcess]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cluster(
    request: pytest.FixtureRequest, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"cluster-{backend}")
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'tidegate.db'}"
        Storage.open(url, upgrade=True).dispose()
    else:
        url = request.getfixturevalue("control_pg_url")
    env = tidegate_env(
        database_url=url,
        broker_url=broker_url,
        definitions=PROJECT,
        io_dir=tmp / "io",
        TIDEGATE_TEST_EFFECTS=str(tmp / "effects"),
        TIDEGATE_TEST_QUEUE_SUFFIX=QUEUE_SUFFIX,
    )
    specs: list[dict[str, Any]] = [
        {"name": f"t{i}-{backend}", "pool": "threads", "concurrency": THREADS_PER_WORKER, "queues": MAIN_QUEUE}
        for i in range(1, THREADS_WORKERS + 1)
    ]
    specs.append({"name": f"p1-{backend}", "pool": "prefork", "concurrency": 1, "queues": CONTROL_QUEUE})
    with ThreadPoolExecutor(len(specs)) as executor:
        futures = [executor.submit(start_worker, env, log_dir=tmp, timeout=60.0, **spec) for spec in specs]
        workers = []
        errors = []
        for future in futures:
            try:
                workers.append(future.result())
            except Exception as exc:
                errors.append(exc)
    if errors:
        stop_workers(workers)
        raise errors[0]
    yield Cluster(backend, url, broker_url, tmp, env, workers)
    stop_workers(workers)


# -- the harness: what the beat would do, driven by the test -----------------------------------


@dataclass(frozen=True)
class Effect:
    what: str
    run_id: str
    attempt: int
    pid: int
    at: float


class Harness:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.storage = Storage.open(cluster.database_url)
        self.app = make_celery_app(cluster.broker_url)
        self.publisher = CeleryPublisher(self.app, self.storage)
        self.effects_dir = cluster.tmp / "effects"
        self.env = dict(cluster.env)

    def clear(self) -> None:
        """Every test starts from an empty database (the workers stay up)."""
        if self.storage.dialect == "postgresql":
            truncate_all(self.cluster.database_url)
            return
        with self.storage.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(delete(table))

    def launcher(self, config: dict[str, Any] | None = None, *, with_defs: bool = True) -> Launcher:
        return Launcher(
            self.storage,
            self.publisher,
            republish_grace_seconds=5.0,
            defs=DEFS if with_defs else None,
            config=Settings.from_dict(config or {}),
        )

    def submit(self, job: str, *, priority: int = 0, **tags: str) -> str:
        if priority:
            tags[PRIORITY_TAG] = str(priority)
        run_id = self.storage.submit_run(DEFS.plan(job), origin="test", tags=tags, priority=priority).run_id
        time.sleep(0.003)  # distinct creation times: "oldest first" is then well defined
        return run_id

    def drive(
        self,
        launcher: Launcher | None,
        run_ids: Iterable[str],
        timeout: float = 30.0,
        each: Callable[[], None] | None = None,
    ) -> list[RunRecord]:
        """Tick ``launcher`` (None: only watch) until every run has ended."""
        ids = list(run_ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if launcher is not None:
                launcher.tick()
            if each is not None:
                each()
            records = [self.storage.get_run(i) for i in ids]
            if all(r.status in RunStatus.TERMINAL for r in records):
                return records
            time.sleep(0.02)
        detail = {i[:8]: (self.storage.get_run(i).status, self.step_states(i)) for i in ids}
        raise AssertionError(f"runs did not end within {timeout}s: {detail}")

    def until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.02)

    def steps(self, run_id: str) -> dict[str, StepRecord]:
        return {s.step_key: s for s in self.storage.get_steps(run_id)}

    def step_states(self, run_id: str) -> dict[str, str]:
        return {k: s.status for k, s in self.steps(run_id).items()}

    def effects(self, asset: str, run_id: str | None = None) -> list[Effect]:
        path = self.effects_dir / f"{asset}.log"
        if not path.exists():
            return []
        found = []
        for line in path.read_text().splitlines():
            what, rid, attempt, pid, at = line.split()
            if run_id is None or rid == run_id:
                found.append(Effect(what, rid, int(attempt), int(pid), float(at)))
        return found

    def cli(self, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **(extra_env or {})}
        return subprocess.run(
            [TIDEGATE, *args], env=env, cwd=self.cluster.tmp, capture_output=True, text=True, timeout=60
        )

    def write_config(self, text: str) -> Path:
        path = self.cluster.tmp / f"tidegate-{time.monotonic_ns()}.toml"
        path.write_text(text)
        return path

    def close(self) -> None:
        self.app.close()
        self.storage.dispose()


@pytest.fixture
def h(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.delenv("TIDEGATE_MAX_CONCURRENT_RUNS", raising=False)  # Settings reads it
    harness = Harness(cluster)
    harness.clear()
    for worker in cluster.workers:
        assert worker.process.poll() is None, f"worker {worker.name} died:\n{worker.log()}"
    yield harness
    harness.close()


# -- recorded intervals ------------------------------------------------------------------------


Interval = tuple[datetime, datetime]


def interval(record: RunRecord | StepRecord) -> Interval:
    assert record.started_at is not None and record.ended_at is not None, record
    return record.started_at, record.ended_at


def max_overlap(intervals: Iterable[Interval]) -> int:
    """The largest number of intervals open at one instant (one ending as another starts at
    the same recorded instant do not overlap)."""
    points = []
    for start, end in intervals:
        assert start <= end
        points += [(start, 1), (end, -1)]
    points.sort(key=lambda p: (p[0], p[1]))
    open_now = peak = 0
    for _, delta in points:
        open_now += delta
        peak = max(peak, open_now)
    return peak


def overlaps(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


# -- the run queue -----------------------------------------------------------------------------


def test_runs_start_highest_priority_first_then_oldest_within_max_concurrent_runs(h: Harness) -> None:
    names = {}
    for name, priority in [("old", 0), ("young", 0), ("urgent", 5), ("low", -1), ("urgent_later", 5)]:
        names[h.submit("hold_job", priority=priority)] = name
    runs = h.drive(h.launcher({"run_queue": {"max_concurrent_runs": 1}}), names)

    assert {r.status for r in runs} == {RunStatus.SUCCESS}
    by_start = sorted(runs, key=lambda r: r.started_at or datetime.max)
    assert [names[r.run_id] for r in by_start] == ["urgent", "urgent_later", "old", "young", "low"]
    for before, after in pairwise(by_start):
        assert before.ended_at is not None and after.started_at is not None
        assert before.ended_at <= after.started_at, "two runs were in progress at once"
    assert max_overlap(interval(r) for r in runs) == 1
    holds = [h.steps(r.run_id)["hold"] for r in runs]
    assert max_overlap(interval(s) for s in holds) == 1
    for run in runs:
        step = h.steps(run.run_id)["hold"]
        assert interval(run)[0] <= interval(step)[0] <= interval(step)[1] <= interval(run)[1]


def test_max_concurrent_runs_is_reached_and_never_exceeded(h: Harness) -> None:
    ids = [h.submit("hold_job") for _ in range(7)]
    runs = h.drive(h.launcher({"run_queue": {"max_concurrent_runs": 3}}), ids)
    assert {r.status for r in runs} == {RunStatus.SUCCESS}
    assert max_overlap(interval(r) for r in runs) == 3
    # The steps really ran in parallel on the workers, never more than three at once.
    steps = [h.steps(i)["hold"] for i in ids]
    assert max_overlap(interval(s) for s in steps) == 3
    # Oldest first, since all have the same priority.
    assert [r.run_id for r in sorted(runs, key=lambda r: r.started_at or datetime.max)][:3] == ids[:3]


def test_tag_limits_hold_back_matching_runs_without_blocking_the_runs_behind_them(h: Harness) -> None:
    config = {
        "run_queue": {
            "tag_concurrency_limits": [
                {"key": "team", "value": "finance", "limit": 2},
                {"key": "customer", "limit": 1, "per_value": True},
            ]
        }
    }
    # The held-back runs have the highest priorities, so they are at the head of the queue.
    f = [h.submit("hold_job", priority=10, team="finance") for _ in range(4)]
    acme = [h.submit("hold_job", priority=5, customer="acme") for _ in range(2)]
    globex = h.submit("hold_job", customer="globex")
    marketing = h.submit("hold_job", team="marketing")
    ids = [*f, *acme, globex, marketing]
    runs = {r.run_id: r for r in h.drive(h.launcher(config), ids)}
    assert {r.status for r in runs.values()} == {RunStatus.SUCCESS}
    spans = {i: interval(r) for i, r in runs.items()}

    assert max_overlap(spans[i] for i in f) == 2  # the finance limit was used, never exceeded
    assert max_overlap(spans[i] for i in acme) == 1  # one run per customer value
    assert overlaps(spans[acme[0]], spans[globex])  # ... but customers do not wait for each other
    # globex and marketing started at once, while finance runs and an acme run were held back
    # in front of them.
    first_end = min(end for _, end in spans.values())
    assert spans[globex][0] < first_end and spans[marketing][0] < first_end
    for held in (f[2], f[3], acme[1]):
        assert spans[held][0] > spans[globex][0] and spans[held][0] > spans[marketing][0]
    # Priority then age within the finance runs.
    assert sorted(f, key=lambda i: spans[i][0]) == f
    steps = [h.steps(i)["hold"] for i in f]
    assert max_overlap(interval(s) for s in steps) == 2


# -- pools -------------------------------------------------------------------------------------


def test_a_pool_never_runs_more_than_its_slots_and_hands_each_slot_over(h: Harness) -> None:
    """Two runs with 7 `warehouse` steps each and 6 free steps each on 8 worker threads, pool
    limit 2. After the first tick nobody ticks the launcher again: only the finishing steps'
    hand-over can start the waiting ones."""
    h.storage.set_pool_limit("warehouse", 2)
    ids = [h.submit("pool_job") for _ in range(2)]
    h.launcher().tick()  # starts both runs; from now on no safety net (fill_all_pools, republish)
    snapshots: list[tuple[int, int]] = []

    def sample() -> None:
        with h.storage.engine.connect() as conn:  # one statement: one consistent snapshot
            rows = conn.execute(
                select(steps_table.c.status, steps_table.c.enqueued_at).where(steps_table.c.pool == "warehouse")
            ).all()
        running = sum(status == StepStatus.RUNNING for status, _ in rows)
        holding = sum(status in (StepStatus.READY, StepStatus.ENQUEUED, StepStatus.RUNNING) for status, _ in rows)
        waiting = [enqueued_at for status, enqueued_at in rows if status == StepStatus.WAITING]
        snapshots.append((running, holding))
        # A waiting step was never handed to the broker (so it holds no worker), and no slot
        # stays free while a step waits.
        assert all(enqueued_at is None for enqueued_at in waiting)
        assert not waiting or holding == 2, f"{len(waiting)} waiting while {holding} slot(s) held"

    runs = h.drive(None, ids, timeout=40, each=sample)
    assert {r.status for r in runs} == {RunStatus.SUCCESS}
    pooled = [s for i in ids for s in h.storage.get_steps(i) if s.pool == "warehouse"]
    free = [s for i in ids for s in h.storage.get_steps(i) if s.pool is None]
    assert len(pooled) == 14 and len(free) == 12
    assert max(running for running, _ in snapshots) <= 2
    assert max(holding for _, holding in snapshots) <= 2

    # The recorded RUNNING intervals of the pool's steps: at most two at any instant, and two
    # did run in parallel.
    assert max_overlap(interval(s) for s in pooled) == 2
    # Each waiting step started soon after a slot freed: the finisher handed it over.
    ordered = sorted(pooled, key=lambda s: s.started_at or datetime.max)
    for step in ordered[2:]:
        ends = [interval(o)[1] for o in pooled if interval(o)[1] <= interval(step)[0]]
        assert ends, f"{step.step_key} started while two pool steps were running"
        gap = (interval(step)[0] - max(ends)).total_seconds()
        assert gap < 1.0, f"{step.run_id[:8]}/{step.step_key} waited {gap:.2f}s for a free slot"
    # The free steps never queued behind the waiting pool steps: all of them ran while most of
    # the pool's backlog was still waiting.
    assert max(interval(s)[0] for s in free) < interval(ordered[8])[0]
    # The pool phase really was serialized to two at a time (7 rounds of 0.4 s).
    pool_span = (max(interval(s)[1] for s in pooled) - min(interval(s)[0] for s in pooled)).total_seconds()
    assert pool_span >= 7 * 0.4
    workers = {s.worker.split("@")[0] for s in [*pooled, *free] if s.worker}
    assert workers == {f"t1-{h.cluster.backend}", f"t2-{h.cluster.backend}"}


# -- cancellation ------------------------------------------------------------------------------


def test_cancel_terminates_the_running_step_and_nothing_else_starts(h: Harness) -> None:
    """The prefork worker (one process) runs one of cancel_job's two long root steps; the other
    waits in the broker and `after_long` waits for long_a."""
    launcher = h.launcher()
    run_id = h.submit("cancel_job")
    launcher.tick()

    def running() -> list[StepRecord]:
        return [s for s in h.storage.get_steps(run_id) if s.status == StepStatus.RUNNING]

    h.until(lambda: bool(running()) and bool(h.effects(running()[0].step_key, run_id)), 20, "a long step to run")
    (step,) = running()
    other = "long_b" if step.step_key == "long_a" else "long_a"
    (started,) = h.effects(step.step_key, run_id)
    assert alive(started.pid)
    assert h.step_states(run_id)[other] == StepStatus.ENQUEUED

    canceled = h.cli("runs", "cancel", run_id[:12])
    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout.strip() == f"run {run_id} CANCELED (1 running step(s) terminated)"
    run = h.storage.get_run(run_id)
    assert run.status == RunStatus.CANCELED and run.ended_at is not None
    assert set(h.step_states(run_id).values()) == {StepStatus.CANCELED}

    # The process executing the step was terminated (long before its 20 s body could end).
    h.until(lambda: not alive(started.pid), 10, f"the step's process {started.pid} to end")
    # Once a later run went through the same single-process worker, the delivery of the other
    # root step has been consumed: it, and the downstream step, never started.
    sentinel = h.submit("control_sentinel_job")
    assert h.drive(launcher, [sentinel])[0].status == RunStatus.SUCCESS
    launcher.tick()
    assert [e.what for e in h.effects(step.step_key, run_id)] == ["start"]  # never reached "end"
    assert h.effects(other, run_id) == []
    assert h.effects("after_long", run_id) == []
    assert h.storage.get_run(run_id).status == RunStatus.CANCELED
    assert set(h.step_states(run_id).values()) == {StepStatus.CANCELED}
    assert [m for m in h.storage.get_materializations() if m.run_id == run_id] == []

    again = h.cli("runs", "cancel", run_id)
    assert again.returncode == 2
    assert f"run '{run_id}': already CANCELED; nothing to cancel" in again.stderr


# -- re-execution ------------------------------------------------------------------------------


def test_reexecute_from_failure_reruns_only_failed_and_skipped_steps(h: Harness) -> None:
    launcher = h.launcher()
    parent = h.submit("reexec_job", team="finance")
    (run,) = h.drive(launcher, [parent])
    assert run.status == RunStatus.FAILURE
    assert h.step_states(parent) == {
        "base": StepStatus.SUCCEEDED,
        "doubled": StepStatus.FAILED,
        "final": StepStatus.SKIPPED,
        "side": StepStatus.SUCCEEDED,
    }
    assert "doubled is broken" in (h.steps(parent)["doubled"].error or "")

    (h.effects_dir / "doubled.fixed").touch()  # the fix is deployed
    out = h.cli("runs", "reexecute", parent[:12], "--from-failure")
    assert out.returncode == 0, out.stderr
    match = re.fullmatch(rf"run ([0-9a-f]+) submitted: re-execution of {parent}, 2 step\(s\)", out.stdout.strip())
    assert match, out.stdout
    child = match.group(1)
    assert h.storage.get_run(child).status != RunStatus.QUEUED  # the command started it
    (child_run,) = h.drive(launcher, [child])

    assert child_run.status == RunStatus.SUCCESS
    assert child_run.parent_run_id == parent
    assert child_run.tags == {
        "team": "finance",
        PARENT_RUN_TAG: parent,
        ROOT_RUN_TAG: parent,
        CODE_LOCATION_TAG: "queue_project.py",  # planned by the CLI's code location
    }
    assert h.step_states(child) == {"doubled": StepStatus.SUCCEEDED, "final": StepStatus.SUCCEEDED}
    # The successful steps were not run again; their outputs were read through the IO manager.
    assert [e.run_id for e in h.effects("base")] == [parent]
    assert [e.run_id for e in h.effects("side")] == [parent]
    materialized = {m.asset_key: m.metadata for m in h.storage.get_materializations() if m.run_id == child}
    assert materialized["doubled"]["input_value"] == 21
    assert materialized["doubled"]["input_run_id"] == parent  # the parent run's output of base
    assert materialized["final"]["input"] == 42

    # From failure, a successful run has nothing to re-execute: a clear error, exit code 2.
    refused = h.cli("runs", "reexecute", child, "--from-failure")
    assert refused.returncode == 2
    assert f"run '{child}': succeeded, nothing to re-execute from failure" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_reexecute_from_the_cli_respects_the_run_queue_limits(h: Harness) -> None:
    config = h.write_config("[run_queue]\nmax_concurrent_runs = 1\n")
    failed = h.submit("always_fails_job")
    assert h.drive(h.launcher(with_defs=False), [failed])[0].status == RunStatus.FAILURE
    h.storage.set_pool_limit("warehouse", 0)
    blocker = h.submit("pool_job")  # stays in progress: its pool has no slot
    h.launcher({"run_queue": {"max_concurrent_runs": 1}}, with_defs=False).tick()  # no run retries here
    assert h.storage.get_run(blocker).status == RunStatus.STARTED
    try:
        out = h.cli("runs", "reexecute", failed, "--from-failure", extra_env={"TIDEGATE_CONFIG": str(config)})
        assert out.returncode == 0, out.stderr
        child = out.stdout.split()[1]
        assert h.storage.get_run(child).status == RunStatus.QUEUED, "started beyond max_concurrent_runs=1"
    finally:
        for run in h.storage.list_runs(status=RunStatus.STARTED):
            h.storage.cancel_run(run.run_id)


# -- run retries -------------------------------------------------------------------------------


def test_a_failed_run_is_retried_from_failure_up_to_its_max_retries_tag(h: Harness) -> None:
    """retry_job (tidegate/max_retries=2) fails twice then succeeds; always_fails_job
    (tidegate/max_retries=1) fails every time. The launcher's run monitor re-executes."""
    launcher = h.launcher()
    retried = h.submit("retry_job")
    hopeless = h.submit("always_fails_job")

    def chain(root: str) -> list[RunRecord]:
        runs = [r for r in h.storage.list_runs(limit=100) if root in (r.run_id, r.tags.get(ROOT_RUN_TAG))]
        return sorted(runs, key=lambda r: r.created_at)

    def settled() -> bool:
        launcher.tick()
        a, b = chain(retried), chain(hopeless)
        return len(a) == 3 and a[-1].status in RunStatus.TERMINAL and len(b) == 2 and b[-1].status in RunStatus.TERMINAL

    h.until(settled, 40, "the retries to run")
    for _ in range(10):  # and nothing more comes of it
        launcher.tick()
        time.sleep(0.05)

    first, second, third = chain(retried)
    assert [r.status for r in (first, second, third)] == [RunStatus.FAILURE, RunStatus.FAILURE, RunStatus.SUCCESS]
    assert RETRY_NUMBER_TAG not in first.tags
    assert (second.tags[RETRY_NUMBER_TAG], second.parent_run_id, second.tags[ROOT_RUN_TAG]) == (
        "1",
        first.run_id,
        first.run_id,
    )
    assert (third.tags[RETRY_NUMBER_TAG], third.parent_run_id, third.tags[ROOT_RUN_TAG]) == (
        "2",
        second.run_id,
        first.run_id,
    )
    assert second.origin == third.origin == "run_retry"
    assert h.step_states(first.run_id) == {"retry_base": StepStatus.SUCCEEDED, "retry_flaky": StepStatus.FAILED}
    # Retries re-execute from failure: only the failed step, fed the first run's output.
    assert h.step_states(second.run_id) == {"retry_flaky": StepStatus.FAILED}
    assert h.step_states(third.run_id) == {"retry_flaky": StepStatus.SUCCEEDED}
    assert [e.run_id for e in h.effects("retry_base")] == [first.run_id]
    assert [e.run_id for e in h.effects("retry_flaky")] == [first.run_id, second.run_id, third.run_id]
    (done,) = [m for m in h.storage.get_materializations("retry_flaky") if m.run_id == third.run_id]
    assert done.metadata["input"] == 5
    # Each retry started after its parent ended.
    for parent, child in pairwise((first, second, third)):
        assert interval(parent)[1] <= interval(child)[0]

    one, two = chain(hopeless)
    assert (one.status, two.status) == (RunStatus.FAILURE, RunStatus.FAILURE)
    assert two.tags[RETRY_NUMBER_TAG] == "1" and two.parent_run_id == one.run_id
    assert [e.run_id for e in h.effects("always_fails") if e.run_id in (one.run_id, two.run_id)] == [
        one.run_id,
        two.run_id,
    ]


# -- step timeouts -----------------------------------------------------------------------------


def test_a_step_past_its_timeout_fails_on_a_prefork_worker(h: Harness) -> None:
    run_id = h.submit("timeout_job")
    # The monitor's own timeout enforcement waits 30 s past the timeout: only Celery's soft
    # time limit can fail the step within this test's few seconds.
    (run,) = h.drive(h.launcher(), [run_id], timeout=20)
    assert run.status == RunStatus.FAILURE
    steps = h.steps(run_id)
    assert steps["quick_enough"].status == StepStatus.SUCCEEDED  # within its timeout
    slow = steps["too_slow"]
    assert (slow.status, slow.attempt) == (StepStatus.FAILED, 1)
    assert "SoftTimeLimitExceeded" in (slow.error or "")
    assert "TimeoutError: step 'too_slow' exceeded its timeout of 1s" in (slow.error or "")
    took = (interval(slow)[1] - interval(slow)[0]).total_seconds()
    assert 0.9 <= took < 4.0, took
    assert [e.what for e in h.effects("too_slow", run_id)] == ["start"]  # its body never finished
    assert h.effects("quick_enough", run_id)[-1].what == "end"


def test_the_run_monitor_fails_a_step_past_its_timeout_on_a_threads_worker(h: Harness) -> None:
    """A threads worker cannot enforce Celery time limits: the monitor fails the step after its
    timeout plus the configured grace, and the step's late finish is not recorded."""
    launcher = h.launcher({"run_monitor": {"timeout_grace_seconds": 0.5}})
    run_id = h.submit("thread_timeout_job")
    (run,) = h.drive(launcher, [run_id], timeout=20)
    assert run.status == RunStatus.FAILURE
    step = h.steps(run_id)["slow_on_threads"]
    assert step.status == StepStatus.FAILED
    assert step.error == "TimeoutError: step 'slow_on_threads' exceeded its timeout of 0.5s"
    took = (interval(step)[1] - interval(step)[0]).total_seconds()
    assert 1.0 <= took < 2.5, took  # failed before the 3 s body ended
    h.until(lambda: len(h.effects("slow_on_threads", run_id)) == 2, 10, "the body to end")
    time.sleep(0.3)
    assert h.steps(run_id)["slow_on_threads"].status == StepStatus.FAILED
    assert h.storage.get_materializations("slow_on_threads") == []


# -- the command line --------------------------------------------------------------------------


def test_tidegate_queue_shows_start_order_and_why_each_run_waits(h: Harness) -> None:
    config = h.write_config(
        "[run_queue]\nmax_concurrent_runs = 3\ntag_concurrency_limits = [\n"
        '  { key = "team", value = "finance", limit = 1 },\n'
        '  { key = "customer", limit = 1, per_value = true },\n]\n'
    )
    for run_id in (h.submit("hold_job", team="finance"), h.submit("hold_job", customer="acme")):
        h.storage.start_run(run_id)  # in progress (nothing is published: no worker runs them)
    queued = {
        "n1": h.submit("hold_job"),
        "a1": h.submit("hold_job", priority=2, customer="acme"),
        "g1": h.submit("hold_job", customer="globex"),
        "f1": h.submit("hold_job", priority=5, team="finance"),
        "n2": h.submit("hold_job"),
    }
    names = {v: k for k, v in queued.items()}

    def rows(stdout: str) -> list[tuple[str, str]]:
        found = []
        for line in stdout.splitlines():
            parts = line.split(maxsplit=3)
            if parts and parts[0] in names:
                assert parts[1] == "hold_job"
                found.append((names[parts[0]], parts[3]))
        return found

    out = h.cli("queue", extra_env={"TIDEGATE_CONFIG": str(config)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:4] == [
        f"config {config}: max_concurrent_runs=3",
        "  tag limit team=finance: 1",
        "  tag limit customer=* (per value): 1",
        "2 run(s) in progress",
    ]
    assert rows(out.stdout) == [
        ("f1", "tag limit team=finance: 1 run(s) in progress"),
        ("a1", "tag limit customer=acme: 1 run(s) in progress"),
        ("n1", "starts next tick"),
        ("g1", "max_concurrent_runs=3 reached"),
        ("n2", "max_concurrent_runs=3 reached"),
    ]
    # The environment overrides the file's max_concurrent_runs.
    out = h.cli("queue", extra_env={"TIDEGATE_CONFIG": str(config), "TIDEGATE_MAX_CONCURRENT_RUNS": "4"})
    assert out.returncode == 0, out.stderr
    assert "max_concurrent_runs=4" in out.stdout.splitlines()[0]
    assert [reason for _, reason in rows(out.stdout)][2:] == [
        "starts next tick",
        "starts next tick",
        "max_concurrent_runs=4 reached",
    ]
    # An invalid file: one line naming the file and the key, exit code 2, no traceback.
    bad = h.write_config("[run_queue]\ntag_concurrency_limits = [{ key = 'team', limit = 'two' }]\n")
    out = h.cli("queue", extra_env={"TIDEGATE_CONFIG": str(bad)})
    assert out.returncode == 2
    assert (
        out.stderr.strip() == f"error: {bad}: run_queue.tag_concurrency_limits[0].limit must be an integer, got 'two'"
    )


def test_a_cli_launch_of_another_code_location_leaves_this_locations_runs_queued(h: Harness) -> None:
    """`tidegate job launch -f other_project.py` ticks a launcher of that code location: it
    must neither fail nor start a queued run of queue_project.py's job, and `tidegate queue`
    with that location says why the run waits."""
    other = h.cluster.tmp / "other_project.py"
    other.write_text(
        "import tidegate as tg\n\n\n"
        f"@tg.asset(queue='unconsumed{QUEUE_SUFFIX}')\n"
        "def elsewhere() -> int:\n    return 1\n\n\n"
        "defs = tg.Definitions(assets=[elsewhere], jobs=[tg.define_asset_job('other_job', [elsewhere])])\n"
    )
    tags = {CODE_LOCATION_TAG: "queue_project.py"}  # as `tidegate job launch -f .../queue_project.py` tags it
    waiting = h.storage.submit_run(DEFS.plan("hold_job"), origin="test", tags=tags).run_id
    out = h.cli("job", "launch", "other_job", "-f", str(other))
    assert out.returncode == 0, out.stderr
    assert h.storage.get_run(waiting).status == RunStatus.QUEUED
    [launched] = [r for r in h.storage.list_runs() if r.run_id != waiting]
    assert (launched.job_name, launched.tags[CODE_LOCATION_TAG]) == ("other_job", "other_project.py")
    out = h.cli("queue", "-f", str(other))
    assert out.returncode == 0, out.stderr
    [line] = [line for line in out.stdout.splitlines() if line.startswith(waiting)]
    assert line.endswith("a launcher of code location 'queue_project.py' (job 'hold_job' is not in 'other_project.py')")
    out = h.cli("queue", "-f", str(PROJECT))
    [line] = [line for line in out.stdout.splitlines() if line.startswith(waiting)]
    assert line.endswith("starts next tick")


def test_tidegate_pool_set_and_list(h: Harness) -> None:
    out = h.cli("pool", "list")
    assert (out.returncode, out.stdout.strip()) == (0, "no pools")
    out = h.cli("pool", "set", "warehouse", "2")
    assert (out.returncode, out.stdout.strip()) == (0, "pool warehouse: 2 slot(s)")
    run_id = h.submit("pool_job")
    h.storage.start_run(run_id)  # two pool steps hold the slots, four wait (nothing is published)
    out = h.cli("pool", "list")
    assert out.returncode == 0, out.stderr
    assert [line.split() for line in out.stdout.splitlines()] == [
        ["POOL", "SLOTS", "ACTIVE", "WAITING"],
        ["warehouse", "2", "2", "4"],
    ]
    out = h.cli("pool", "set", "warehouse", "3")
    assert (out.returncode, out.stdout.strip()) == (0, "pool warehouse: 3 slot(s); 1 waiting step(s) released")
    assert h.storage.pools_overview()[0].active == 3
    out = h.cli("pool", "set", "warehouse", "-1")
    assert out.returncode == 2 and "-1" in out.stderr
    h.storage.cancel_run(run_id)


# -- the beat ----------------------------------------------------------------------------------


def test_the_beat_applies_tidegate_toml_and_retries_runs(h: Harness) -> None:
    config = h.write_config("[run_queue]\nmax_concurrent_runs = 1\n")
    ids = [h.submit("hold_job") for _ in range(3)]
    hopeless = h.submit("always_fails_job", priority=-1)  # tidegate/max_retries=1, starts last
    env = {**h.env, "TIDEGATE_CONFIG": str(config)}
    log = (h.cluster.tmp / "beat.log").open("wb")
    beat = subprocess.Popen(
        [TIDEGATE, "beat"], env=env, cwd=h.cluster.tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        runs = h.drive(None, [*ids, hopeless], timeout=30)
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and not h.storage.child_runs(hopeless):
            time.sleep(0.1)
    finally:
        beat.send_signal(signal.SIGTERM)
        try:
            beat.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(beat.pid, signal.SIGKILL)
            beat.wait()
        log.close()
    assert max_overlap(interval(r) for r in runs) == 1, "runs overlapped beyond max_concurrent_runs=1"
    assert len(h.storage.child_runs(hopeless)) == 1, "the failed run tagged tidegate/max_retries=1 was not retried"
