"""A step's claim and success under races and lost claims, on SQLite and PostgreSQL (where
each is one round trip: ``run_pipelined``), with two storages standing for two workers (their
own engines and connections)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select, update

import tidegate as tg
from tests.test_storage_contract import DEFS
from tidegate.names import RunStatus, StepStatus
from tidegate.storage.api import Storage
from tidegate.storage.engine import normalize_url
from tidegate.storage.records import Continuation
from tidegate.storage.schema import runs, steps


@pytest.fixture
def workers(database_url: str) -> Iterator[tuple[Storage, Storage]]:
    first, second = Storage.open(database_url, upgrade=True), Storage.open(database_url)
    yield first, second
    first.dispose()
    second.dispose()


def _started_run(storage: Storage, job: str = "diamond", defs: tg.Definitions = DEFS) -> tuple[str, str]:
    """A STARTED run of ``job``; returns its id and its roots' queue."""
    run_id = storage.submit_run(defs.plan(job), origin="test").run_id
    ready = storage.start_run(run_id)
    return run_id, ready[0].queue if ready else ""


def _count(storage: Storage, run_id: str, event_type: str, step_key: str | None = None) -> int:
    return sum(
        1
        for e in storage.get_events(run_id)
        if e.event_type == event_type and (step_key is None or e.step_key == step_key)
    )


def _race(calls: list[Any]) -> list[Any]:
    barrier = threading.Barrier(len(calls))

    def call(fn: Any) -> Any:
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(call, calls))


def test_two_workers_completing_one_step_and_claiming_its_child_record_it_once(
    workers: tuple[Storage, Storage],
) -> None:
    """A duplicate delivery of ``top`` ran on two workers; both complete it at once, each
    asking to continue with a child: one success, one child claimed, by the winner."""
    for _ in range(4):
        run_id, queue = _started_run(workers[0])
        assert workers[0].claim_step(run_id, "top", 1, "w0") is not None
        run = workers[0].get_run(run_id)

        def complete(i: int, run_id: str = run_id, run: Any = run, queue: str = queue) -> Any:
            return lambda: workers[i].complete_step_and_claim(
                run_id,
                "top",
                1,
                continuation=Continuation(f"w{i}", queue, run),
                asset_key="top",
                metadata={"k": i},
            )

        outcomes = _race([complete(0), complete(1)])
        assert sum(o is not None for o in outcomes) == 1
        [(winner, (published, claimed))] = [(i, o) for i, o in enumerate(outcomes) if o is not None]
        assert claimed is not None and claimed.step.step_key == "left" and claimed.step.worker == f"w{winner}"
        assert [r.step_key for r in published] == ["right"]
        state = {s.step_key: s for s in workers[1].get_steps(run_id)}
        assert (state["top"].status, state["left"].status, state["right"].status) == (
            StepStatus.SUCCEEDED,
            StepStatus.RUNNING,
            StepStatus.READY,
        )
        assert _count(workers[1], run_id, "STEP_SUCCESS") == 1
        assert _count(workers[1], run_id, "STEP_STARTED", "left") == 1
        assert [m.metadata for m in workers[1].get_materializations("top") if m.run_id == run_id] == [{"k": winner}]
        assert workers[1].get_run(run_id).steps_remaining == 4


def test_two_workers_claiming_one_step_claim_it_once(workers: tuple[Storage, Storage]) -> None:
    for _ in range(4):
        run_id, _ = _started_run(workers[0])
        claims = _race([lambda i=i, run_id=run_id: workers[i].claim_step(run_id, "top", 1, f"w{i}") for i in (0, 1)])
        assert sum(c is not None for c in claims) == 1
        assert _count(workers[1], run_id, "STEP_STARTED", "top") == 1
        [claim] = [c for c in claims if c is not None]
        assert claim.run.run_id == run_id and claim.run.status == RunStatus.STARTED


def test_a_success_after_the_claim_was_lost_writes_nothing(database_url: str, workers: tuple[Storage, Storage]) -> None:
    """The claim's row goes back to READY behind the worker's back (as after PostgreSQL lost
    an unflushed claim in a crash): the worker's success is refused and changes nothing, and
    the step's next claim and success count once."""
    worker, _ = workers
    run_id, _ = _started_run(worker)
    assert worker.claim_step(run_id, "top", 1, "w") is not None
    other = create_engine(normalize_url(database_url))
    try:
        with other.begin() as conn:
            conn.execute(
                update(steps)
                .where(steps.c.run_id == run_id, steps.c.step_key == "top")
                .values(status=StepStatus.READY, worker=None)
            )
    finally:
        other.dispose()
    assert worker.complete_step(run_id, "top", 1, asset_key="top", metadata={}) is None
    assert worker.heartbeat(run_id, "top", 1) is False
    state = {s.step_key: s.status for s in worker.get_steps(run_id)}
    assert state == {"top": StepStatus.READY, **dict.fromkeys(["left", "right", "bottom", "tail"], StepStatus.PLANNED)}
    assert worker.get_run(run_id).steps_remaining == 5
    assert (_count(worker, run_id, "STEP_SUCCESS"), len(worker.get_materializations("top"))) == (0, 0)

    assert worker.claim_step(run_id, "top", 1, "w") is not None
    ready = worker.complete_step(run_id, "top", 1, asset_key="top", metadata={})
    assert ready is not None and sorted(r.step_key for r in ready) == ["left", "right"]
    assert (_count(worker, run_id, "STEP_SUCCESS"), len(worker.get_materializations("top"))) == (1, 1)


def test_the_last_success_after_a_failure_ends_the_run_failed(storage: Storage) -> None:
    run_id, _ = _started_run(storage)
    assert storage.claim_step(run_id, "top", 1, "w") is not None
    assert storage.complete_step(run_id, "top", 1, asset_key="top", metadata={}) is not None
    for key in ("left", "right"):
        assert storage.claim_step(run_id, key, 1, "w") is not None
    assert storage.fail_step(run_id, "left", 1, error="boom", retry_delay=None) is not None  # skips bottom, tail
    assert storage.get_run(run_id).status == RunStatus.STARTED
    assert storage.complete_step(run_id, "right", 1, asset_key="right", metadata={}) == []
    run = storage.get_run(run_id)
    assert (run.status, run.steps_remaining) == (RunStatus.FAILURE, 0) and run.ended_at is not None
    assert (_count(storage, run_id, "RUN_FAILURE"), _count(storage, run_id, "RUN_SUCCESS")) == (1, 0)


def _pooled_defs() -> tg.Definitions:
    @tg.asset
    def extract() -> int:
        return 1

    @tg.asset(pool="warehouse")
    def load(extract: int) -> int:
        return extract

    return tg.Definitions(assets=[extract, load], jobs=[tg.define_asset_job("etl", "*")])


def test_successes_that_hand_pool_slots_over(storage: Storage) -> None:
    """A step with a pooled child (the child waits for a slot, then is READY), and a pooled
    step that hands its slot to another run's waiting step."""
    defs = _pooled_defs()
    storage.set_pool_limit("warehouse", 1)
    first, _ = _started_run(storage, "etl", defs)
    second, _ = _started_run(storage, "etl", defs)
    for run_id in (first, second):
        assert storage.claim_step(run_id, "extract", 1, "w") is not None
    ready = storage.complete_step(first, "extract", 1, asset_key="extract", metadata={})
    assert ready is not None and [(r.run_id, r.step_key) for r in ready] == [(first, "load")]
    assert storage.complete_step(second, "extract", 1, asset_key="extract", metadata={}) == []  # the slot is taken
    assert {s.step_key: s.status for s in storage.get_steps(second)}["load"] == StepStatus.WAITING

    assert storage.claim_step(first, "load", 1, "w") is not None
    ready = storage.complete_step(first, "load", 1, asset_key="load", metadata={})
    assert ready is not None and [(r.run_id, r.step_key) for r in ready] == [(second, "load")]
    assert storage.get_run(first).status == RunStatus.SUCCESS
    assert _count(storage, first, "STEP_SUCCESS") == 2


def test_a_claim_leaves_its_pooled_connection_as_it_came(pg_url: str) -> None:
    """PostgreSQL: the pipelined claim (BEGIN, statement, COMMIT in one round trip on the
    driver connection) returns its connection to the pool outside a transaction, out of
    pipeline mode, with its settings unchanged (the claim commits durably)."""
    engine = create_engine(normalize_url(pg_url), pool_size=1, max_overflow=0)
    storage = Storage(pg_url, engine=engine)
    try:
        run_id, _ = _started_run(storage)
        assert storage.claim_step(run_id, "top", 1, "w") is not None
        with engine.connect() as conn:
            import psycopg

            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert raw.info.pipeline_status == psycopg.pq.PipelineStatus.OFF
            assert conn.execute(select(func.current_setting("synchronous_commit"))).scalar() == "on"
            assert conn.execute(select(runs.c.status).where(runs.c.run_id == run_id)).scalar() == RunStatus.STARTED
    finally:
        storage.dispose()


def test_a_pipelined_claim_after_postgresql_dropped_every_connection_invalidates_the_pool(pg_url: str) -> None:
    """PostgreSQL: every pooled connection of a worker died with its server session (here
    ``pg_terminate_backend``). The first pipelined claim fails on its dead connection; as
    SQLAlchemy does on a disconnect, the whole pool is invalidated, so the retry opens a new
    connection and claims, and later calls meet no other dead connection."""
    engine = create_engine(normalize_url(pg_url), pool_size=3, max_overflow=0)
    storage = Storage(pg_url, engine=engine)
    try:
        run_id, _ = _started_run(storage)
        held = [engine.connect() for _ in range(3)]  # three pooled connections, then back in the pool
        pids = [c.execute(select(func.pg_backend_pid())).scalar() for c in held]
        for c in held:
            c.close()
        admin = create_engine(normalize_url(pg_url))
        with admin.begin() as conn:
            for pid in pids:
                conn.execute(select(func.pg_terminate_backend(pid)))
        admin.dispose()
        invalidated: list[object] = []
        event.listen(engine.pool, "invalidate", lambda *args: invalidated.append(args))
        assert storage.claim_step(run_id, "top", 1, "w") is not None
        # One dead connection met and invalidated (with the pool), not one per pooled connection.
        assert len(invalidated) == 1
        # No other dead connection is left in the pool: each of three checkouts is alive.
        fresh = [engine.connect() for _ in range(3)]
        try:
            live = [c.execute(select(func.pg_backend_pid())).scalar() for c in fresh]
            assert not set(live) & set(pids)
        finally:
            for c in fresh:
                c.close()
    finally:
        storage.dispose()
