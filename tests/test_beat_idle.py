"""The beat's cheap idle round keeps every guarantee (issue 17), on SQLite and PostgreSQL.

An idle round reads the ``PendingWork`` flags and the changed instigator rows in one statement
and nothing else; these tests show what still happens at the next round: a
schedule started from the CLI fires at its next due time, a stopped one does not, the run
monitor catches a dead worker, a queued run starts when a slot frees, a run that fails after
many idle rounds is retried, and (``run_forever``) a tick that commits a run wakes the launcher.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, update

import tidegate as tg
from tidegate.config import Settings
from tidegate.names import MAX_RETRIES_TAG, InstigatorStatus, RunStatus, StepStatus
from tidegate.scheduler.beat import Beat
from tidegate.scheduler.clock import FakeClock
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRef
from tidegate.storage.schema import steps as steps_table

T0 = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)
RUNNING = tg.DefaultScheduleStatus.RUNNING


@tg.asset
def only() -> int:
    return 1


ONLY = tg.define_asset_job("only_job", [only])
HOURLY = tg.ScheduleDefinition("hourly", cron_schedule="0 * * * *", job=ONLY)  # stopped by default


def _defs(**kwargs: Any) -> tg.Definitions:
    return tg.Definitions(assets=[only], jobs=[ONLY], **kwargs)


def _beat(storage: Storage, defs: tg.Definitions, clock: FakeClock, **kwargs: Any) -> tuple[Beat, list[StepRef]]:
    sent: list[StepRef] = []

    def publish(refs: Any) -> None:
        sent.extend(refs)
        storage.mark_enqueued(refs)  # as CeleryPublisher does once sent

    return Beat(defs, storage, publish, clock=clock, holder="idle-beat", **kwargs), sent


@contextmanager
def _statements(storage: Storage) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(storage.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(storage.engine, "before_cursor_execute", record)


def _finish(storage: Storage, run_id: str) -> None:
    """A worker runs the run's one step to SUCCESS."""
    claimed = storage.claim_step(run_id, "only", 1, "w")
    assert claimed is not None
    storage.complete_step(run_id, "only", 1, asset_key="only", metadata={})


def test_an_idle_round_is_one_read_and_no_write(storage: Storage) -> None:
    clock = FakeClock(T0)
    beat, _ = _beat(storage, _defs(schedules=[HOURLY]), clock)
    assert beat.tick().leader  # takes the lease, reads every row
    clock.set(T0 + timedelta(seconds=1))
    with _statements(storage) as seen:
        assert beat.tick().leader  # renewed a moment ago: still its lease, no write
    queries = [s for s in seen if not s.startswith("BEGIN")]
    assert len(queries) == 1, seen  # the flags joined with the changed instigator rows
    assert "EXISTS" in queries[0] and "JOIN instigators" in queries[0]
    assert not any(s.startswith(("INSERT", "UPDATE", "DELETE")) for s in seen)


def test_a_schedule_started_midway_fires_at_its_next_due_time_and_a_stopped_one_does_not(storage: Storage) -> None:
    clock = FakeClock(T0)
    beat, _ = _beat(storage, _defs(schedules=[HOURLY]), clock)
    for minute in range(0, 30, 5):  # idle rounds: the schedule is stopped
        clock.set(T0 + timedelta(minutes=minute))
        assert beat.tick().schedule_ticks == []
    # started from the CLI or the API (another process) at 00:30: the next round sees it
    storage.set_instigator_status("hourly", "schedule", InstigatorStatus.RUNNING, T0 + timedelta(minutes=30))
    clock.set(T0 + timedelta(minutes=31))
    assert beat.tick().schedule_ticks == []  # not due before 01:00
    clock.set(T0 + timedelta(hours=1))
    assert beat.tick().schedule_ticks == ["hourly@2024-03-04T01:00:00+00:00"]
    (run,) = storage.list_runs()
    assert run.status == RunStatus.STARTED  # the same round's launcher started it

    storage.set_instigator_status("hourly", "schedule", InstigatorStatus.STOPPED, T0 + timedelta(hours=1, minutes=1))
    clock.set(T0 + timedelta(hours=1, minutes=2))
    assert beat.tick().schedule_ticks == []
    clock.set(T0 + timedelta(hours=2))
    assert beat.tick().schedule_ticks == []
    assert len(storage.list_runs()) == 1


def test_the_monitor_catches_a_dead_worker_at_the_next_round_after_idle_ones(storage: Storage) -> None:
    clock = FakeClock(T0)
    beat, sent = _beat(storage, _defs(), clock)
    for second in range(3):  # idle rounds: nothing in flight
        clock.set(T0 + timedelta(seconds=second))
        beat.tick()
    run_id = storage.submit_run(_defs().plan("only_job"), origin="test").run_id
    clock.set(T0 + timedelta(seconds=3))
    beat.tick()  # starts it and publishes its step
    assert [(r.run_id, r.attempt) for r in sent] == [(run_id, 1)]
    assert storage.claim_step(run_id, "only", 1, "w") is not None
    clock.set(T0 + timedelta(seconds=4))
    beat.tick()  # a live worker: nothing to do
    assert [s.status for s in storage.get_steps(run_id)] == [StepStatus.RUNNING]
    # the worker died an hour ago (its heartbeat, on the database's clock, stopped then)
    old = storage.db_now() - timedelta(hours=1)
    with storage.engine.begin() as conn:
        conn.execute(update(steps_table).where(steps_table.c.run_id == run_id).values(heartbeat_at=old, started_at=old))
    clock.set(T0 + timedelta(seconds=5))
    beat.tick()
    (step,) = storage.get_steps(run_id)
    assert (step.attempt, step.status) == (2, StepStatus.ENQUEUED)  # retried (worker_lost_retries) and sent
    assert [(r.run_id, r.attempt) for r in sent] == [(run_id, 1), (run_id, 2)]


def test_a_queued_run_starts_at_the_round_after_a_slot_frees(storage: Storage) -> None:
    clock = FakeClock(T0)
    config = Settings.from_dict({"run_queue": {"max_concurrent_runs": 1}})
    beat, _ = _beat(storage, _defs(), clock, config=config)
    first, second = (storage.submit_run(_defs().plan("only_job"), origin="test").run_id for _ in range(2))
    beat.tick()
    assert (storage.get_run(first).status, storage.get_run(second).status) == (RunStatus.STARTED, RunStatus.QUEUED)
    for second_ in range(1, 4):  # the slot is taken: the second run waits
        clock.set(T0 + timedelta(seconds=second_))
        beat.tick()
    assert storage.get_run(second).status == RunStatus.QUEUED
    _finish(storage, first)
    assert storage.get_run(first).status == RunStatus.SUCCESS
    clock.set(T0 + timedelta(seconds=4))
    beat.tick()
    assert storage.get_run(second).status == RunStatus.STARTED


def test_a_run_failing_after_many_idle_rounds_is_still_retried_once(storage: Storage) -> None:
    clock = FakeClock(T0)
    beat, _ = _beat(storage, _defs(), clock)
    for second in range(5):  # idle rounds move the monitor's look for failed runs forward
        clock.set(T0 + timedelta(seconds=second))
        beat.tick()
    run_id = storage.submit_run(_defs().plan("only_job"), origin="test", tags={MAX_RETRIES_TAG: "1"}).run_id
    clock.set(T0 + timedelta(seconds=5))
    beat.tick()
    assert storage.claim_step(run_id, "only", 1, "w") is not None
    storage.fail_step(run_id, "only", 1, error="boom", retry_delay=None)
    assert storage.get_run(run_id).status == RunStatus.FAILURE
    for second in range(6, 9):
        clock.set(T0 + timedelta(seconds=second))
        beat.tick()
    retries = storage.child_runs(run_id)
    assert len(retries) == 1  # once, however many rounds looked
    assert retries[0].status == RunStatus.STARTED


def test_a_tick_that_commits_a_run_wakes_the_launcher_at_once(storage: Storage) -> None:
    """``run_forever`` with a launcher round only once an hour: only the wake-up can start the
    run the sensor requests (the launcher's first round happens at start, before the request)."""
    requested = threading.Event()

    @tg.sensor(job=ONLY, minimum_interval_seconds=1, default_status=RUNNING)
    def on_demand(_context: tg.SensorEvaluationContext) -> Any:
        if requested.is_set():
            return tg.RunRequest(run_key="once")
        return tg.SkipReason("not yet")

    sent: list[StepRef] = []
    beat = Beat(_defs(sensors=[on_demand]), storage, sent.extend, holder="idle-beat", launcher_interval=3600)
    stop = threading.Event()
    thread = threading.Thread(target=beat.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        waited = threading.Event()
        for _ in range(1500):  # two SKIPPED ticks: the launcher's first round is long over
            if len(storage.get_ticks("on_demand")) >= 2:
                break
            waited.wait(0.02)
        assert len(storage.get_ticks("on_demand")) >= 2
        requested.set()
        for _ in range(1500):  # the next evaluation requests the run; the wake starts it
            if sent:
                break
            waited.wait(0.02)
    finally:
        stop.set()
        thread.join(30)
    (run,) = storage.list_runs()
    assert run.status == RunStatus.STARTED
    assert [r.run_id for r in sent] == [run.run_id]
