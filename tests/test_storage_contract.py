"""One storage contract, run on SQLite and on PostgreSQL (the ``storage`` fixture)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

import tidegate as tg
from tests.support import truncate_all
from tidegate.definitions.job import IMPLICIT_ASSET_JOB
from tidegate.errors import RunNotFoundError, StorageError
from tidegate.names import RunStatus, StepStatus
from tidegate.storage.api import Storage
from tidegate.storage.records import NewEvent


def _diamond() -> tg.Definitions:
    @tg.asset
    def top() -> int:
        return 1

    @tg.asset
    def left(top: int) -> int:
        return top

    @tg.asset
    def right(top: int) -> int:
        return top

    @tg.asset
    def bottom(left: int, right: int) -> int:
        return left + right

    @tg.asset
    def tail(bottom: int) -> int:
        return bottom

    return tg.Definitions(assets=[top, left, right, bottom, tail], jobs=[tg.define_asset_job("diamond", "*")])


DEFS = _diamond()


def _run(storage: Storage, **kwargs: Any) -> str:
    return storage.submit_run(DEFS.plan("diamond"), origin=kwargs.pop("origin", "test"), **kwargs).run_id


def _succeed(storage: Storage, run_id: str, step_key: str, attempt: int = 1) -> list[str]:
    assert storage.claim_step(run_id, step_key, attempt, "w") is not None
    ready = storage.complete_step(run_id, step_key, attempt, asset_key=step_key, metadata={"k": step_key})
    assert ready is not None
    return sorted(r.step_key for r in ready)


def test_submit_inserts_a_queued_run_with_planned_steps(storage: Storage) -> None:
    run_id = _run(storage, tags={"team": "finance"}, priority=3)
    run = storage.get_run(run_id)
    assert (run.status, run.job_name, run.priority, run.tags["team"]) == (
        RunStatus.QUEUED,
        "diamond",
        3,
        "finance",
    )
    steps = {s.step_key: s for s in storage.get_steps(run_id)}
    assert set(steps) == {"top", "left", "right", "bottom", "tail"}
    assert all(s.status == StepStatus.PLANNED and s.attempt == 1 for s in steps.values())
    assert steps["bottom"].pending_upstream == 2
    assert sorted(steps["top"].downstream) == ["left", "right"]


def test_run_key_makes_a_repeated_request_a_no_op(storage: Storage) -> None:
    first = storage.submit_run(DEFS.plan("diamond"), origin="sensor:files", run_key="a.csv")
    again = storage.submit_run(DEFS.plan("diamond"), origin="sensor:files", run_key="a.csv")
    other_origin = storage.submit_run(DEFS.plan("diamond"), origin="sensor:other", run_key="a.csv")
    assert first.created and not again.created and other_origin.created
    assert again.run_id == first.run_id
    assert len(storage.list_runs()) == 2
    assert len(storage.get_steps(first.run_id)) == 5


def test_concurrent_submissions_of_one_run_key_create_one_run(storage: Storage) -> None:
    barrier = threading.Barrier(8)

    def submit(_: int) -> tuple[str, bool]:
        barrier.wait()
        result = storage.submit_run(DEFS.plan("diamond"), origin="schedule:daily", run_key="2024-01-22")
        return result.run_id, result.created

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submit, range(8)))
    assert len({run_id for run_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(storage.list_runs()) == 1


def test_submit_in_commits_with_the_callers_transaction_or_not_at_all(storage: Storage) -> None:
    with pytest.raises(RuntimeError), storage.engine.begin() as conn:
        storage.submit_in(conn, DEFS.plan("diamond"), origin="sensor:x", run_key="k")
        raise RuntimeError("instigator failed after the run insert")
    assert storage.list_runs() == []


def test_start_run_readies_roots_once(storage: Storage) -> None:
    run_id = _run(storage)
    ready = storage.start_run(run_id)
    assert [r.step_key for r in ready] == ["top"]
    assert storage.start_run(run_id) == []  # no longer QUEUED
    assert storage.get_run(run_id).status == RunStatus.STARTED


def test_queued_runs_order_by_priority_then_age(storage: Storage) -> None:
    low = _run(storage, priority=0)
    high = _run(storage, priority=5)
    low_later = _run(storage, priority=0)
    assert storage.queued_run_ids() == [high, low, low_later]


def test_claim_is_a_compare_and_set(storage: Storage) -> None:
    run_id = _run(storage)
    assert storage.claim_step(run_id, "top", 1, "w") is None  # run not started
    storage.start_run(run_id)
    assert storage.claim_step(run_id, "top", 2, "w") is None  # wrong attempt
    assert storage.claim_step(run_id, "left", 1, "w") is None  # not ready
    claimed = storage.claim_step(run_id, "top", 1, "w1")
    assert claimed is not None and claimed.step.status == StepStatus.RUNNING and claimed.step.worker == "w1"
    assert storage.claim_step(run_id, "top", 1, "w2") is None  # duplicate delivery


def test_exactly_one_of_many_concurrent_claims_wins(storage: Storage) -> None:
    run_id = _run(storage)
    storage.start_run(run_id)
    barrier = threading.Barrier(8)

    def claim(i: int) -> bool:
        barrier.wait()
        return storage.claim_step(run_id, "top", 1, f"w{i}") is not None

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(claim, range(8))) == 1


def test_mark_enqueued_never_overrides_a_claim(storage: Storage) -> None:
    run_id = _run(storage)
    ready = storage.start_run(run_id)
    storage.claim_step(run_id, "top", 1, "w")  # the worker was faster than the publisher
    storage.mark_enqueued(ready)
    assert storage.get_steps(run_id)[0].status == StepStatus.RUNNING


def test_success_readies_children_when_all_parents_are_done(storage: Storage) -> None:
    run_id = _run(storage)
    storage.start_run(run_id)
    assert _succeed(storage, run_id, "top") == ["left", "right"]
    assert _succeed(storage, run_id, "left") == []  # bottom still waits for right
    assert _succeed(storage, run_id, "right") == ["bottom"]
    assert _succeed(storage, run_id, "bottom") == ["tail"]
    assert storage.get_run(run_id).status == RunStatus.STARTED
    assert _succeed(storage, run_id, "tail") == []
    run = storage.get_run(run_id)
    assert run.status == RunStatus.SUCCESS and run.ended_at is not None
    assert [m.asset_key for m in storage.get_materializations()] == ["top", "left", "right", "bottom", "tail"]
    types = [e.event_type for e in storage.get_events(run_id)]
    assert types[0] == "RUN_QUEUED" and types[-1] == "RUN_SUCCESS" and types.count("STEP_SUCCESS") == 5


def test_concurrent_parent_completions_ready_the_child_once_and_close_the_run_once(storage: Storage) -> None:
    for _ in range(3):
        run_id = _run(storage)
        storage.start_run(run_id)
        _succeed(storage, run_id, "top")
        for key in ("left", "right"):
            assert storage.claim_step(run_id, key, 1, key) is not None
        barrier = threading.Barrier(2)

        def complete(key: str, run_id: str = run_id, barrier: threading.Barrier = barrier) -> list[str]:
            barrier.wait()
            ready = storage.complete_step(run_id, key, 1, asset_key=key, metadata={})
            return [r.step_key for r in ready or []]

        with ThreadPoolExecutor(2) as pool:
            released = list(pool.map(complete, ["left", "right"]))
        assert sorted(key for keys in released for key in keys) == ["bottom"]
        _succeed(storage, run_id, "bottom")
        _succeed(storage, run_id, "tail")
        assert [e.event_type for e in storage.get_events(run_id)].count("RUN_SUCCESS") == 1


def test_outcome_is_recorded_once(storage: Storage) -> None:
    run_id = _run(storage)
    storage.start_run(run_id)
    _succeed(storage, run_id, "top")
    assert storage.complete_step(run_id, "top", 1, asset_key="top", metadata={}) is None
    assert storage.fail_step(run_id, "top", 1, error="late", retry_delay=None) is None
    assert len(storage.get_materializations("top")) == 1


def test_failure_skips_descendants_and_fails_the_run(storage: Storage) -> None:
    run_id = _run(storage)
    storage.start_run(run_id)
    _succeed(storage, run_id, "top")
    storage.claim_step(run_id, "left", 1, "w")
    assert storage.fail_step(run_id, "left", 1, error="Traceback...\nValueError: bad", retry_delay=None) == []
    steps = {s.step_key: s for s in storage.get_steps(run_id)}
    assert steps["left"].status == StepStatus.FAILED and "ValueError: bad" in (steps["left"].error or "")
    assert steps["bottom"].status == StepStatus.SKIPPED and steps["tail"].status == StepStatus.SKIPPED
    assert storage.get_run(run_id).status == RunStatus.STARTED  # right still runs
    assert _succeed(storage, run_id, "right") == []  # bottom stays SKIPPED
    assert storage.get_run(run_id).status == RunStatus.FAILURE


def test_retry_is_due_in_sql_not_before(storage: Storage) -> None:
    run_id = _run(storage)
    storage.start_run(run_id)
    storage.claim_step(run_id, "top", 1, "w")
    assert storage.fail_step(run_id, "top", 1, error="boom", retry_delay=30) == []
    step = storage.get_steps(run_id)[0]
    assert (step.status, step.attempt) == (StepStatus.READY, 2)
    assert step.ready_at is not None and 29 < (step.ready_at - storage.db_now()).total_seconds() <= 30
    assert storage.steps_to_publish() == []
    due = storage.steps_to_publish(now=step.ready_at + timedelta(seconds=1))
    assert [(r.step_key, r.attempt) for r in due] == [("top", 2)]
    assert storage.claim_step(run_id, "top", 1, "w") is None  # the old attempt is gone
    assert storage.claim_step(run_id, "top", 2, "w") is not None


def test_retry_due_now_is_returned_for_publishing(storage: Storage) -> None:
    run_id = _run(storage)
    storage.start_run(run_id)
    storage.claim_step(run_id, "top", 1, "w")
    ready = storage.fail_step(run_id, "top", 1, error="boom", retry_delay=0)
    assert [(r.step_key, r.attempt) for r in ready or []] == [("top", 2)]


def test_unsent_ready_steps_are_republished_after_a_grace_period(storage: Storage) -> None:
    run_id = _run(storage)
    storage.start_run(run_id)  # its publisher "died" before sending
    assert storage.steps_to_publish(grace_seconds=60) == []
    later = storage.db_now() + timedelta(seconds=61)
    assert [r.step_key for r in storage.steps_to_publish(now=later, grace_seconds=60)] == ["top"]


def test_events_and_logs_are_appended_with_the_outcome(storage: Storage) -> None:
    run_id = _run(storage)
    storage.start_run(run_id)
    storage.claim_step(run_id, "top", 1, "w")
    storage.complete_step(
        run_id,
        "top",
        1,
        asset_key="top",
        metadata={"rows": 3},
        events_=[NewEvent("LOG", "hello", {"level": "INFO"})],
    )
    events = storage.get_events(run_id)
    log = [e for e in events if e.event_type == "LOG"]
    assert log[0].message == "hello" and log[0].step_key == "top"
    ids = [e.id for e in events]
    assert ids == sorted(ids)
    after = storage.get_events(run_id, after_id=ids[2])
    assert [e.id for e in after] == ids[3:]


def test_materialization_ids_serve_as_a_cursor(storage: Storage) -> None:
    run_a, run_b = _run(storage), _run(storage)
    for run_id in (run_a, run_b):
        storage.start_run(run_id)
        _succeed(storage, run_id, "top")
    records = storage.get_materializations("top")
    assert [r.run_id for r in records] == [run_a, run_b]
    assert [r.run_id for r in storage.get_materializations("top", after_id=records[0].id)] == [run_b]
    latest = storage.latest_materializations()
    assert latest["top"].run_id == run_b and latest["top"].metadata == {"k": "top"}


def test_run_lookups(storage: Storage) -> None:
    run_id = _run(storage)
    assert storage.find_run_id(run_id[:12]) == run_id
    with pytest.raises(RunNotFoundError, match="not found"):
        storage.get_run("nope")
    with pytest.raises(RunNotFoundError):
        storage.find_run_id("zzzz")
    assert [r.run_id for r in storage.list_runs(status=RunStatus.QUEUED)] == [run_id]
    assert storage.list_runs(status=RunStatus.SUCCESS) == []


def test_subset_plan_counts_only_its_steps(storage: Storage) -> None:
    plan = DEFS.plan(IMPLICIT_ASSET_JOB, "bottom+")
    run_id = storage.submit_run(plan, origin="cli").run_id
    ready = storage.start_run(run_id)
    assert [r.step_key for r in ready] == ["bottom"]  # its parents are outside the run
    assert storage.get_run(run_id).asset_selection == ("bottom", "tail")


def test_outdated_schema_is_refused_unless_upgrading(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(StorageError, match="tidegate db upgrade"):
        Storage.open(url, upgrade=False)
    Storage.open(url).dispose()  # SQLite upgrades itself by default
    Storage.open(url, upgrade=False).dispose()


# -- retries after a lost commit acknowledgement ---------------------------------------------------


def _lose_the_first_commit_acknowledgement(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The next COMMIT reaches the database and succeeds, then the connection drops before its
    acknowledgement arrives: the client sees a disconnect, as when a network link fails."""
    real_commit = storage.engine.dialect.do_commit
    lost: list[bool] = []

    def commit_then_drop(dbapi_connection: Any) -> None:
        real_commit(dbapi_connection)
        if lost:
            return
        lost.append(True)
        dbapi_connection.dbapi_connection.close()  # the driver's connection, under the pool's proxy
        if storage.dialect == "postgresql":
            import psycopg

            raise psycopg.OperationalError("server closed the connection unexpectedly")
        import sqlite3

        raise sqlite3.ProgrammingError("Cannot operate on a closed database.")

    monkeypatch.setattr(storage.engine.dialect, "do_commit", commit_then_drop)
    return lost


@pytest.mark.parametrize("run_key", [None, "k1"])
def test_a_submit_whose_commit_acknowledgement_is_lost_creates_one_run(
    storage: Storage, monkeypatch: pytest.MonkeyPatch, run_key: str | None
) -> None:
    lost = _lose_the_first_commit_acknowledgement(storage, monkeypatch)
    result = storage.submit_run(DEFS.plan("diamond"), origin="cli", run_key=run_key)
    monkeypatch.undo()
    assert lost == [True]  # the first attempt committed, then the transient-error retry ran
    assert result.created
    assert [r.run_id for r in storage.list_runs()] == [result.run_id]
    assert len(storage.get_steps(result.run_id)) == 5
    assert [e.event_type for e in storage.get_events(result.run_id)] == ["RUN_QUEUED"]


# -- lock order ------------------------------------------------------------------------------------


@pytest.fixture
def pg_storage(pg_url: str) -> Any:
    truncate_all(pg_url)
    store = Storage.open(pg_url)
    yield store
    store.dispose()


class Rendezvous:
    """Two operations in two threads, each paused right after a chosen statement (the one that
    takes its first contested lock) until the other reached its own, or 0.5 s passed. Any lock
    order inversion between them then deadlocks every time; PostgreSQL's deadlocks (40P01,
    retried by ``retry_transient``) are recorded."""

    def __init__(self, storage: Storage, pause_after: dict[str, Callable[[str], bool]]) -> None:
        self.pause_after = pause_after
        self.reached = {op: threading.Event() for op in pause_after}
        self.deadlocks: list[str] = []
        self.local = threading.local()
        event.listen(storage.engine, "handle_error", self._record)
        event.listen(storage.engine, "after_cursor_execute", self._pause)

    def _record(self, context: Any) -> None:
        if getattr(context.original_exception, "sqlstate", None) == "40P01":
            self.deadlocks.append(str(context.original_exception))

    def _pause(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        op = getattr(self.local, "op", None)
        if op is None or self.local.paused or not self.pause_after[op](" ".join(statement.upper().split())):
            return
        self.local.paused = True
        self.reached[op].set()
        [other] = [o for o in self.reached if o != op]
        self.reached[other].wait(0.5)

    def run(self, operations: dict[str, Callable[[], Any]]) -> dict[str, Any]:
        for flag in self.reached.values():
            flag.clear()

        def call(op: str) -> Any:
            self.local.op, self.local.paused = op, False
            try:
                return operations[op]()
            finally:
                self.local.op = None

        with ThreadPoolExecutor(2) as pool:
            futures = {op: pool.submit(call, op) for op in operations}
            return {op: f.result(timeout=60) for op, f in futures.items()}


def _first_lock(statement: str) -> bool:
    return statement.startswith("UPDATE") or "FOR UPDATE" in statement


def test_ending_a_run_while_its_step_completes_never_deadlocks(pg_storage: Storage) -> None:
    """PostgreSQL: cancel_run and complete_step of the same run, in two transactions at once
    (the run row and the step row, taken in opposite orders before)."""
    storage = pg_storage
    meet = Rendezvous(storage, {"cancel": _first_lock, "complete": _first_lock})
    for _ in range(4):
        run_id = _run(storage)
        storage.start_run(run_id)
        assert storage.claim_step(run_id, "top", 1, "w") is not None
        results = meet.run(
            {
                "cancel": lambda: storage.cancel_run(run_id).canceled,  # noqa: B023
                "complete": lambda: storage.complete_step(run_id, "top", 1, asset_key="top", metadata={}),  # noqa: B023
            }
        )
        assert results["cancel"] is True
        ended = storage.get_run(run_id)
        assert (ended.status, ended.steps_remaining) == (RunStatus.CANCELED, 0)
        assert {s.status for s in storage.get_steps(run_id)} <= {StepStatus.CANCELED, StepStatus.SUCCEEDED}
    assert meet.deadlocks == []


def test_canceling_a_run_while_another_hands_it_a_pool_slot_never_deadlocks(pg_storage: Storage) -> None:
    """PostgreSQL: run A's pooled step completes and hands its slot to run B's WAITING step
    (pool row, then B's step) while B is canceled (B's steps, then the pool row, before)."""

    @tg.asset(pool="warehouse")
    def load() -> int:
        return 1

    defs = tg.Definitions(assets=[load], jobs=[tg.define_asset_job("load_job", [load])])
    storage = pg_storage
    storage.set_pool_limit("warehouse", 1)
    meet = Rendezvous(
        storage,
        {
            "complete": lambda sql: "FROM POOLS" in sql and "FOR UPDATE" in sql,
            "cancel": lambda sql: sql.startswith("UPDATE STEPS"),
        },
    )
    for _ in range(4):
        holder, waiter = (storage.submit_run(defs.plan("load_job"), origin="test").run_id for _ in range(2))
        assert [r.step_key for r in storage.start_run(holder)] == ["load"]
        assert storage.start_run(waiter) == []  # WAITING for the slot
        assert storage.claim_step(holder, "load", 1, "w") is not None
        results = meet.run(
            {
                "complete": lambda: storage.complete_step(holder, "load", 1, asset_key="load", metadata={}),  # noqa: B023
                "cancel": lambda: storage.cancel_run(waiter).canceled,  # noqa: B023
            }
        )
        assert results["cancel"] is True and results["complete"] is not None
        assert storage.get_run(holder).status == RunStatus.SUCCESS
        assert {s.status for s in storage.get_steps(waiter)} == {StepStatus.CANCELED}
    assert meet.deadlocks == []


def test_runs_created_in_one_transaction_keep_their_submission_order(storage: Storage) -> None:
    """Times come from the database's clock, which repeats within a transaction (PostgreSQL)
    or a millisecond (SQLite); creation order must survive for the run queue's oldest-first."""
    with storage.engine.begin() as conn:
        ids = [storage.submit_in(conn, DEFS.plan("diamond"), origin="tick", run_key=f"k{i}").run_id for i in range(5)]
    assert [r.run_id for r in storage.queued_runs()] == ids
    created = [storage.get_run(run_id).created_at for run_id in ids]
    assert created == sorted(created) and len(set(created)) == 5
