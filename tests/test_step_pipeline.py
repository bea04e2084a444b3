"""A step's claim and success under races and lost claims, on SQLite and PostgreSQL (where
each is one round trip: ``run_pipelined``), with two storages standing for two workers (their
own engines and connections)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import (
    Integer,
    String,
    bindparam,
    create_engine,
    event,
    func,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql as sa_postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

import tidegate as tg
from tests.support import truncate_all
from tests.test_storage_contract import DEFS
from tidegate.names import RunStatus, StepStatus
from tidegate.storage.api import Storage, _success_statement
from tidegate.storage.engine import DriverStatement, normalize_url, run_pipelined
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
    """PostgreSQL: the claim (one statement sent alone, its own transaction, on the driver
    connection) returns its connection to the pool outside a transaction, out of pipeline
    and autocommit mode, with its settings unchanged (the claim commits durably)."""
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
            assert raw.autocommit is False
            assert conn.execute(select(func.current_setting("synchronous_commit"))).scalar() == "on"
            assert conn.execute(select(runs.c.status).where(runs.c.run_id == run_id)).scalar() == RunStatus.STARTED
    finally:
        storage.dispose()


def test_a_pipelined_claim_after_postgresql_dropped_every_connection_invalidates_the_pool(pg_url: str) -> None:
    """PostgreSQL: every pooled connection of a worker died with its server session (here
    ``pg_terminate_backend``). The first claim fails on its dead connection; as
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


def test_sibling_successes_queued_behind_a_held_run_lock_lock_nothing_else_and_count_down_once(pg_url: str) -> None:
    """PostgreSQL: the module's lock order (the run's row before its steps') in the pipelined
    success, which SQLAlchemy's cursor events cannot pause. Another connection holds the run's
    row lock, as ``fail_step`` and the run monitor do before they touch steps; two workers
    complete the sibling steps ``left`` (one child known from its claim, continuing) and
    ``right`` (the ``downstream`` comparison alone) meanwhile. Both queue on the run's row
    holding no step row: the holder locks left, right and their child with NOWAIT (a success
    that had taken a step row first would make it fail here, and make a real holder
    deadlock). Once the holder commits, each success counts the child down exactly once: it
    ends READY-and-claimed by the continuing worker or READY, once, and the run's counter
    has lost exactly three."""
    truncate_all(pg_url)
    first, second = Storage.open(pg_url, upgrade=True), Storage.open(pg_url)
    holder_engine = create_engine(normalize_url(pg_url))
    try:
        run_id, queue = _started_run(first)
        assert first.claim_step(run_id, "top", 1, "w0") is not None
        assert first.complete_step(run_id, "top", 1, asset_key="top", metadata={}) is not None
        left = first.claim_step(run_id, "left", 1, "w0")
        assert left is not None and left.step.downstream == ("bottom",)
        assert second.claim_step(run_id, "right", 1, "w1") is not None
        with holder_engine.connect() as holder:
            holder.begin()
            holder.execute(select(runs.c.run_id).where(runs.c.run_id == run_id).with_for_update())
            holder_pid = holder.execute(select(func.pg_backend_pid())).scalar()
            with ThreadPoolExecutor(2) as pool:
                done_left = pool.submit(
                    first.complete_step_and_claim,
                    run_id,
                    "left",
                    1,
                    continuation=Continuation("w0", queue, left.run),
                    asset_key="left",
                    metadata={},
                    downstream=left.step.downstream,
                )
                done_right = pool.submit(second.complete_step, run_id, "right", 1, asset_key="right", metadata={})
                _wait_blocked_by(holder_engine, holder_pid, 2, [done_left, done_right])
                # Neither success holds a step row while it waits for the run's.
                locked = holder.execute(
                    select(steps.c.step_key)
                    .where(steps.c.run_id == run_id, steps.c.step_key.in_(["left", "right", "bottom"]))
                    .with_for_update(nowait=True)
                ).all()
                assert sorted(r.step_key for r in locked) == ["bottom", "left", "right"]
                holder.commit()
                left_outcome, right_outcome = done_left.result(timeout=60), done_right.result(timeout=60)
        assert left_outcome is not None and right_outcome is not None
        published, claimed = left_outcome
        bottom = {s.step_key: s for s in first.get_steps(run_id)}["bottom"]
        assert bottom.pending_upstream == 0
        released = [r.step_key for r in [*published, *right_outcome]] + ([claimed.step.step_key] if claimed else [])
        assert released == ["bottom"]  # by whichever success came second, once
        assert bottom.status == (StepStatus.RUNNING if claimed else StepStatus.READY)
        assert first.get_run(run_id).steps_remaining == 2  # five steps, three succeeded
        assert _count(first, run_id, "STEP_SUCCESS") == 3
        assert _count(first, run_id, "STEP_STARTED", "bottom") == (1 if claimed else 0)
    finally:
        holder_engine.dispose()
        first.dispose()
        second.dispose()


def _wait_blocked_by(engine: Any, holder_pid: int, count: int, futures: list[Any]) -> None:
    """Until ``count`` backends of this database wait for a lock, the first for one that
    ``holder_pid`` holds (the others queue behind it: PostgreSQL reports them blocked by the
    first waiter); fails if one of ``futures`` ends first (it did not wait). The test's
    timeout ends a wait that never comes."""
    while True:
        for future in futures:
            if future.done():
                raise AssertionError(f"a success did not wait for the held run lock: {future.result()!r}")
        with engine.connect() as conn:
            blockers = conn.execute(
                text(
                    "SELECT pg_blocking_pids(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0"
                )
            ).scalars()
            blocked = list(blockers)
        if len(blocked) >= count and any(holder_pid in pids for pids in blocked):
            return
        time.sleep(0.01)


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def test_a_success_finds_its_only_child_by_key_without_statistics(pg_url: str) -> None:
    """PostgreSQL, a table never analyzed (TRUNCATE; a server with autovacuum off): a success
    told its one child (``downstream``, from its claim) releases it through the unique
    (run_id, step_key) index with both keys, not by reading every step of the run, which
    made a fan-out's successes quadratic in its width; it counts the child down once, and
    a step with several children (``top``) still releases them all.

    The table is first made what a bench run leaves: TRUNCATE (no statistics, no pages),
    then 300 steps run and deleted. At that size the planner once costed the status index
    (its RUNNING entries) and the pool index as cheaply as the unique key and took them."""
    import psycopg

    truncate_all(pg_url)
    storage = Storage.open(pg_url, upgrade=True)
    try:
        with storage.engine.begin() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("TRUNCATE steps")
            raw.execute(
                "INSERT INTO runs (run_id, job_name, status, origin, priority, tags, steps_remaining, created_at)"
                " VALUES ('bloat', 'j', 'SUCCEEDED', 'test', 0, '{}', 0, now())"
            )
            raw.execute(
                "INSERT INTO steps (run_id, step_key, asset_key, display_name, status, attempt, queue,"
                " downstream, pending_upstream) SELECT 'bloat', 's' || g, 'a', 'a', 'RUNNING', 1, 'q', '[]', 0"
                " FROM generate_series(1, 300) AS g"
            )
            raw.execute("UPDATE steps SET status = 'SUCCEEDED'")
            raw.execute("DELETE FROM steps")
            raw.execute("DELETE FROM runs")
        run_id, _ = _started_run(storage)
        assert (
            sorted(r.step_key for r in storage.complete_step(run_id, "top", 1, asset_key="top", metadata={}) or [])
            == []
        )
        top = storage.claim_step(run_id, "top", 1, "w")
        assert top is not None and sorted(top.step.downstream) == ["left", "right"]
        ready = storage.complete_step(run_id, "top", 1, asset_key="top", metadata={}, downstream=top.step.downstream)
        assert ready is not None and sorted(r.step_key for r in ready) == ["left", "right"]
        left = storage.claim_step(run_id, "left", 1, "w")
        assert left is not None and left.step.downstream == ("bottom",)

        statement = _success_statement(1, 3, False, 0, True, storage.engine.dialect)
        params = {
            "b_run_id": run_id,
            "b_step_key": "left",
            "b_attempt": 1,
            "b_asset_key": "left",
            "b_metadata": {},
            "b_partition_0": None,
            "b_only_child": "bottom",
            **{f"b_{name}_{i}": None for name in ("message", "data") for i in range(3)},
            **{f"b_type_{i}": "TEST" for i in range(3)},
        }
        with storage.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            assert raw.execute("SELECT reltuples FROM pg_class WHERE relname = 'steps'").fetchone()[0] < 0
            explain = psycopg.RawCursor(raw).execute(
                b"EXPLAIN (FORMAT JSON) " + statement.numbered, statement.params(params)
            )
            explained = explain.fetchone()[0]  # type: ignore[index]
            raw.rollback()
        for cte in ("CTE done", "CTE released"):  # the compare-and-set, the child's count-down
            [node] = [n for n in _plan_nodes(explained[0]["Plan"]) if n.get("Subplan Name") == cte]
            [scan] = [
                n
                for n in _plan_nodes(node)
                if n.get("Relation Name") == "steps" and n["Node Type"] != "ModifyTable" and n.get("Alias") != "child"
            ]
            assert scan.get("Index Name") == "uq_steps_run_step", cte
            assert "step_key" in scan["Index Cond"] and "run_id" in scan["Index Cond"], cte

        ready = storage.complete_step(run_id, "left", 1, asset_key="left", metadata={}, downstream=left.step.downstream)
        assert ready == []  # bottom waits for right
        bottom = {s.step_key: s for s in storage.get_steps(run_id)}["bottom"]
        assert (bottom.status, bottom.pending_upstream) == (StepStatus.PLANNED, 1)
        right = storage.claim_step(run_id, "right", 1, "w")
        assert right is not None
        ready = storage.complete_step(
            run_id, "right", 1, asset_key="right", metadata={}, downstream=right.step.downstream
        )
        assert ready is not None and [r.step_key for r in ready] == ["bottom"]
        assert _count(storage, run_id, "STEP_SUCCESS") == 3 and storage.get_run(run_id).steps_remaining == 2
    finally:
        storage.dispose()


def test_starting_a_run_once_its_roots_ready_and_pooled_roots_waiting(workers: tuple[Storage, Storage]) -> None:
    """``start_run`` (one round trip on PostgreSQL): two launchers starting one run at once
    start it once (one RUN_STARTED, its root READY once); a run whose root is in a full pool
    takes the general path: STARTED, the root WAITING, nothing to publish."""
    first, second = workers
    for _ in range(3):
        run_id = first.submit_run(DEFS.plan("diamond"), origin="test").run_id
        outcomes = _race([lambda s=s, run_id=run_id: s.start_run(run_id) for s in (first, second)])
        assert sorted(len(o) for o in outcomes) == [0, 1]
        [ready] = [o for o in outcomes if o]
        assert [(r.run_id, r.step_key, r.attempt) for r in ready] == [(run_id, "top", 1)]
        run = first.get_run(run_id)
        assert (run.status, run.steps_remaining) == (RunStatus.STARTED, 5) and run.started_at is not None
        state = {s.step_key: s for s in first.get_steps(run_id)}
        assert state["top"].status == StepStatus.READY and state["top"].ready_at is not None
        assert {s.status for k, s in state.items() if k != "top"} == {StepStatus.PLANNED}
        assert _count(first, run_id, "RUN_STARTED") == 1
        assert first.start_run(run_id) == []

    defs = _pooled_defs()
    first.set_pool_limit("warehouse", 0)
    pooled = tg.Definitions(
        assets=list(defs.assets.values()), jobs=[tg.define_asset_job("load_only", tg.AssetSelection.assets("load"))]
    )
    run_id = first.submit_run(pooled.plan("load_only"), origin="test").run_id
    assert first.start_run(run_id) == []
    assert first.get_run(run_id).status == RunStatus.STARTED
    assert [(s.step_key, s.status) for s in first.get_steps(run_id)] == [("load", StepStatus.WAITING)]
    assert _count(first, run_id, "RUN_STARTED") == 1


def test_statements_sent_alone_or_pipelined_are_one_transaction_and_leave_their_connection_as_it_came(
    pg_url: str,
) -> None:
    """PostgreSQL: ``run_pipelined`` sends its statements in autocommit mode, one alone (a
    claim, ``start_run``) or several in one pipeline with one Sync (a success): either way
    one transaction, committed before the call returns (another connection sees all of it),
    or, if a statement fails, nothing written, not even by the statements before it. The
    connection goes back to its pool out of autocommit mode, outside a transaction, usable
    (not invalidated)."""
    import psycopg

    truncate_all(pg_url)
    engine = create_engine(normalize_url(pg_url), pool_size=1, max_overflow=0)
    storage = Storage(pg_url, engine=engine)
    observer = create_engine(normalize_url(pg_url), poolclass=NullPool)
    try:
        run_id, _ = _started_run(storage)
        run_id_param = bindparam("b_run_id", type_=String())
        mark = DriverStatement(
            update(runs).where(runs.c.run_id == run_id_param).values(tags={"marked": "yes"}).returning(runs.c.run_id),
            engine.dialect,
        )
        # A NULL ``b_status`` fails the statement (NOT NULL).
        restate = DriverStatement(
            update(steps).where(steps.c.run_id == run_id_param).values(status=bindparam("b_status", type_=String())),
            engine.dialect,
        )

        def state() -> tuple[Any, set[str]]:
            with observer.connect() as other:
                tags = other.execute(select(runs.c.tags).where(runs.c.run_id == run_id)).scalar()
                statuses = other.execute(select(steps.c.status).where(steps.c.run_id == run_id)).scalars()
                return tags, set(statuses)

        def left_as_it_came(conn: Any) -> None:
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            assert raw.autocommit is False
            assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert raw.info.pipeline_status == psycopg.pq.PipelineStatus.OFF

        before = ({}, {StepStatus.READY, StepStatus.PLANNED})
        by_run = {"b_run_id": run_id}
        fails = {**by_run, "b_status": None}
        for failing in ([(restate, fails)], [(mark, by_run), (restate, fails)]):
            with engine.connect() as conn, pytest.raises(DBAPIError) as failed:
                run_pipelined(conn, failing)
            assert not failed.value.connection_invalidated
            assert state() == before
            with engine.connect() as conn:
                left_as_it_came(conn)
        with engine.connect() as conn:
            (restated,) = run_pipelined(conn, [(restate, {**by_run, "b_status": StepStatus.SKIPPED})])
            assert restated == [] and state() == ({}, {StepStatus.SKIPPED})
            left_as_it_came(conn)
            marked, _ = run_pipelined(conn, [(mark, by_run), (restate, {**by_run, "b_status": StepStatus.CANCELED})])
            assert [r.run_id for r in marked] == [run_id]
            assert state() == ({"marked": "yes"}, {StepStatus.CANCELED})
            left_as_it_came(conn)
    finally:
        observer.dispose()
        storage.dispose()


def test_a_driver_statement_longer_than_psycopgs_parse_cache_is_bound_by_number(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: psycopg parses a text's ``%(name)s`` placeholders again on each call when
    the text is longer than its cache takes (4,096 characters; a success statement with a
    continuation is 5,300). A ``DriverStatement`` numbers them once (``$n``, a name used
    twice one number, ``%%`` back to ``%``) and psycopg parses nothing per call; the values
    arrive in their places, alone and in a pipeline."""
    import psycopg._queries

    def parsed(*args: object) -> None:
        raise AssertionError("psycopg parsed a DriverStatement's placeholders")

    padding = " + 0" * 1100  # past psycopg's 4,096 characters
    statement = DriverStatement(
        select(
            (bindparam("b_n", type_=Integer()) + literal_column("0" + padding)).label("n"),
            (bindparam("b_n", type_=Integer()) * 2).label("twice"),
            (bindparam("b_word", type_=String()) + literal("%", String())).label("word"),
            literal_column("'100%'").label("percent"),
        ),
        sa_postgresql.dialect(),  # type: ignore[no-untyped-call]
    )
    assert len(statement.sql) > psycopg._queries.MAX_CACHED_STATEMENT_LENGTH
    assert statement.names.count("b_n") == 1 and b"%(" not in statement.numbered
    engine = create_engine(normalize_url(pg_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:  # SQLAlchemy's first connection sends its own queries
            monkeypatch.setattr(psycopg._queries, "_query2pg_nocache", parsed)
            monkeypatch.setattr(psycopg._queries, "_query2pg", parsed)
            for count in (1, 2):
                results = run_pipelined(conn, [(statement, {"b_n": 21, "b_word": "all"})] * count)
                assert [(r.n, r.twice, r.word, r.percent) for (r,) in results] == [(21, 42, "all%", "100%")] * count
    finally:
        engine.dispose()


def test_a_driver_statements_result_columns_are_read_once(pg_url: str) -> None:
    """PostgreSQL: a statement always returns the same columns, so ``run_pipelined`` reads
    their names from its first result only (psycopg built ``cursor.description`` anew on
    each reading: 8 % of a pool process's CPU on trivial steps) and keeps them on the
    statement; later results come back by the kept names, a command's as no rows."""
    rows = DriverStatement(
        select(bindparam("b_n", type_=Integer()).label("n"), (bindparam("b_n", type_=Integer()) * 2).label("twice")),
        sa_postgresql.dialect(),  # type: ignore[no-untyped-call]
    )
    command = DriverStatement(text("SET LOCAL statement_timeout = 0"), sa_postgresql.dialect())  # type: ignore[no-untyped-call]
    assert rows.columns is None and command.columns is None
    engine = create_engine(normalize_url(pg_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            (got,) = run_pipelined(conn, [(rows, {"b_n": 1})])
            assert [(r.n, r.twice) for r in got] == [(1, 2)]
            assert run_pipelined(conn, [(command, {}), (rows, {"b_n": 1})])[0] == []
            assert (rows.columns, command.columns) == (("n", "twice"), ())
            rows.columns = ("kept", "names")  # what a second reading of the result would undo
            for n in (2, 3):
                (got,) = run_pipelined(conn, [(rows, {"b_n": n})])
                assert [(r.kept, r.names) for r in got] == [(n, 2 * n)]
    finally:
        engine.dispose()


def test_a_workers_thread_claims_and_records_on_the_connection_it_keeps_and_reconnects_it(pg_url: str) -> None:
    """PostgreSQL, ``keep_connections`` (a worker): a thread's claims and successes check one
    connection out of the pool once, not per transaction; when the server drops that
    connection (a restart, a failover), the next claim retries on a new one and claims once;
    a forked child never uses its parent's; ``dispose`` hands it back."""
    truncate_all(pg_url)
    storage = Storage.open(pg_url, keep_connections=True)
    checkouts: list[int] = []
    event.listen(storage.engine, "checkout", lambda *_: checkouts.append(1))
    try:
        run_id, _ = _started_run(storage)
        start = len(checkouts)
        assert storage.claim_step(run_id, "top", 1, "w") is not None
        assert storage.complete_step(run_id, "top", 1, asset_key="top", metadata={}) is not None
        assert storage.claim_step(run_id, "left", 1, "w") is not None
        assert len(checkouts) - start == 1
        with storage.engine.connect() as admin:  # the server ends the kept connection's session
            ended = admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
                )
            ).all()
        assert ended
        assert storage.claim_step(run_id, "right", 1, "w") is not None
        assert storage.claim_step(run_id, "right", 1, "w") is None  # claimed once
        assert _count(storage, run_id, "STEP_STARTED", "right") == 1
        child = os.fork()
        if child == 0:  # the child's claim on its own connection; the parent's stays usable
            code = 0 if storage.claim_step(run_id, "left", 1, "w") is None else 1
            os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert storage.complete_step(run_id, "left", 1, asset_key="left", metadata={}) == []
    finally:
        storage.dispose()
    assert storage.engine.pool.checkedout() == 0


def test_driver_statements_bind_values_as_sqlalchemy_does(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: a ``DriverStatement`` finds each placeholder's value, bound constant and
    conversion once (``_binding_plan``), not through ``construct_params`` on every call; over
    a whole run of claims and successes (with a continuation, events, metadata and none),
    every call binds exactly what SQLAlchemy's own binding gives, and a value the caller
    must give and did not is a typed error naming it."""
    truncate_all(pg_url)
    storage = Storage.open(pg_url, upgrade=True, keep_connections=True)
    planned = DriverStatement.params
    checked: list[str] = []

    def compared(statement: DriverStatement, values: Any) -> list[Any]:
        assert statement._plan is not None
        bound = planned(statement, values)
        by_sqlalchemy = statement.compiled.construct_params(values)
        for name, process in statement.processors.items():
            if name in by_sqlalchemy:
                by_sqlalchemy[name] = process(by_sqlalchemy[name])
        expected = [by_sqlalchemy[name] for name in statement.names]
        assert [repr(v) for v in bound] == [repr(v) for v in expected], statement.sql[:200]
        checked.append(statement.sql)
        return bound

    monkeypatch.setattr(DriverStatement, "params", compared)
    try:
        run_id, queue = _started_run(storage)
        claimed = storage.claim_step(run_id, "top", 1, "w")
        assert claimed is not None
        published, child = storage.complete_step_and_claim(  # type: ignore[misc]
            run_id, "top", 1, continuation=Continuation("w", queue, claimed.run), asset_key="top", metadata={"k": 1}
        )
        assert child is not None and [r.step_key for r in published] == ["right"]
        assert storage.complete_step(run_id, "left", 1, asset_key="left", metadata=None) == []
        assert storage.claim_step(run_id, "right", 1, "w") is not None
        assert [r.step_key for r in storage.complete_step(run_id, "right", 1, asset_key="right", metadata={})] == [
            "bottom"
        ]
        for key in ("bottom", "tail"):
            assert storage.claim_step(run_id, key, 1, "w") is not None
            storage.complete_step(run_id, key, 1, asset_key=key, metadata={"rows": [1, None], "k": "v"})
        assert storage.get_run(run_id).status == RunStatus.SUCCESS
    finally:
        storage.dispose()
    assert len(checked) >= 9 and len(set(checked)) >= 3  # claims, successes with and without a continuation, ...
    statement = DriverStatement(
        select(bindparam("b_n", type_=Integer()).label("n"), literal(7).label("seven")),
        sa_postgresql.dialect(),  # type: ignore[no-untyped-call]
    )
    assert planned(statement, {"b_n": 3}) == [3, 7]
    with pytest.raises(Exception, match="required for bind parameter 'b_n'"):
        planned(statement, {})


def _prepared_here(conn: Any) -> list[str]:
    """The names of the prepared statements of ``conn``'s session, ours only."""
    raw = conn.connection.driver_connection
    rows = raw.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE '\\_tidegate\\_%' ORDER BY name")
    names = [name for (name,) in rows]
    raw.rollback()
    return names


def test_pipelined_statements_are_prepared_once_and_again_after_psycopg_deallocates_them(pg_url: str) -> None:
    """PostgreSQL: ``run_pipelined`` writes a transaction out at once, each statement prepared
    on its connection in the same write as its first execution, and executed by name from
    then on. psycopg's DEALLOCATE ALL (it sends one after a ROLLBACK on a connection where it
    prepared statements of its own) takes ours too: the next call finds its statement gone,
    has written nothing, prepares it again and goes on, once."""
    engine = create_engine(normalize_url(pg_url), poolclass=NullPool)
    statement = DriverStatement(
        select((bindparam("b_n", type_=Integer()) + 1).label("next")),
        sa_postgresql.dialect(),  # type: ignore[no-untyped-call]
    )
    try:
        with engine.connect() as conn:
            assert _prepared_here(conn) == []
            for n in (1, 2):
                assert [r.next for (r,) in [run_pipelined(conn, [(statement, {"b_n": n})])[0]]] == [n + 1]
            [name] = _prepared_here(conn)
            raw = conn.connection.driver_connection
            raw.execute("DEALLOCATE ALL")
            raw.commit()
            assert _prepared_here(conn) == []
            assert [r.next for r in run_pipelined(conn, [(statement, {"b_n": 5})])[0]] == [6]
            [again] = _prepared_here(conn)
            assert again != name  # a name is never reused
            assert not conn.invalidated
    finally:
        engine.dispose()


def test_pipelined_statements_go_unnamed_when_psycopg_prepares_nothing(pg_url: str) -> None:
    """PostgreSQL: with psycopg's ``prepare_threshold`` None (a pooler such as pgbouncer in
    transaction mode, which cannot keep prepared statements), ``run_pipelined`` prepares
    nothing either: its statements are sent unnamed."""
    engine = create_engine(normalize_url(pg_url), poolclass=NullPool, connect_args={"prepare_threshold": None})
    statement = DriverStatement(
        select((bindparam("b_n", type_=Integer()) * 3).label("thrice")),
        sa_postgresql.dialect(),  # type: ignore[no-untyped-call]
    )
    try:
        with engine.connect() as conn:
            for n in (1, 2, 3):
                assert [r.thrice for r in run_pipelined(conn, [(statement, {"b_n": n})] * 2)[1]] == [3 * n]
            assert _prepared_here(conn) == []
    finally:
        engine.dispose()


def test_a_value_that_cannot_be_sent_fails_before_anything_is_written(pg_url: str) -> None:
    """PostgreSQL: a value psycopg cannot adapt fails the call before any statement of the
    transaction is buffered: nothing written, the connection usable, not invalidated."""
    truncate_all(pg_url)
    storage = Storage.open(pg_url, upgrade=True)
    try:
        run_id, _ = _started_run(storage)
        run_id_param = bindparam("b_run_id", type_=String())
        mark = DriverStatement(
            update(runs).where(runs.c.run_id == run_id_param).values(tags={"marked": "yes"}),
            storage.engine.dialect,
        )
        odd = DriverStatement(select(bindparam("b_odd").label("odd")), storage.engine.dialect)
        with storage.engine.connect() as conn:
            with pytest.raises(DBAPIError) as failed:
                run_pipelined(conn, [(mark, {"b_run_id": run_id}), (odd, {"b_odd": object()})])
            assert not failed.value.connection_invalidated and not conn.invalidated
            assert storage.get_run(run_id).tags == {}
            run_pipelined(conn, [(mark, {"b_run_id": run_id})])
        assert storage.get_run(run_id).tags == {"marked": "yes"}
    finally:
        storage.dispose()
