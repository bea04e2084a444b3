"""The beat's loop is never held up by a sensor: evaluations run concurrently (each commits its
own tick), a large tick commits in batches, and a tick keeps only a preview of a long cursor.
Real SQLite and PostgreSQL (the ``storage`` fixture); the beat is stepped with a fake clock.
The real-process versions are in tests/test_beat_load.py."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

import tidegate as tg
from tests.test_beat import IMPORT, RUNNING, T0, Harness, _defs, _refusing, _runs
from tidegate.config import Settings
from tidegate.names import SENSOR_TAG, TickStatus
from tidegate.storage.api import Storage
from tidegate.storage.instigators import TICK_CURSOR_CHARACTERS, PlannedRun, TickOutcome
from tidegate.storage.schema import ticks


def _wait(condition: Any, what: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"{what}: not within {timeout:g}s"
        time.sleep(0.01)


def _ticks(storage: Storage, name: str) -> list[Any]:
    return storage.get_ticks(name, limit=1000)


def test_a_slow_sensor_does_not_hold_up_the_loop_or_a_fast_sensor(storage: Storage) -> None:
    release = threading.Event()
    slow_calls: list[int] = []

    @tg.sensor(job=IMPORT, minimum_interval_seconds=1, default_status=RUNNING, time_limit_seconds=30)
    def slow(_context: tg.SensorEvaluationContext) -> tg.RunRequest:
        slow_calls.append(1)
        release.wait(20)
        return tg.RunRequest(run_key=f"slow-{len(slow_calls)}")

    @tg.sensor(job=IMPORT, minimum_interval_seconds=1, default_status=RUNNING)
    def fast(context: tg.SensorEvaluationContext) -> tg.SensorResult:
        n = int(context.cursor or 0)
        return tg.SensorResult(run_requests=[tg.RunRequest(run_key=f"fast-{n}")], cursor=str(n + 1))

    h = Harness(_defs(schedules=[], sensors=[slow, fast]), storage, T0, synchronous_sensors=False)
    try:
        for second in range(5):
            began = time.monotonic()
            h.at(T0 + timedelta(seconds=second))
            assert time.monotonic() - began < 2.0, "a tick waited for the slow sensor"
            assert h.beat.wait_for_evaluations(10, sensors=["fast"])
            assert len(_ticks(storage, "fast")) == second + 1
        assert slow_calls == [1]  # still running: never started a second time
        assert _ticks(storage, "slow") == []
    finally:
        release.set()
    assert h.beat.wait_for_evaluations(10)
    report = h.at(T0 + timedelta(seconds=5))  # collects the slow tick, starts both again
    assert f"slow@{T0.isoformat()}" in report.sensor_ticks
    assert h.beat.wait_for_evaluations(10)
    h.at(T0 + timedelta(seconds=6))  # the slow sensor is due again once its second evaluation is in
    assert h.beat.wait_for_evaluations(10)  # its thread commits it: nothing else to collect
    assert [r.run_key for r in _runs(storage, **{SENSOR_TAG: "slow"})] == ["slow-1", "slow-2", "slow-3"]
    assert sorted(r.run_key or "" for r in _runs(storage, **{SENSOR_TAG: "fast"})) == [f"fast-{n}" for n in range(7)]


def test_a_sensor_past_its_limit_fails_its_tick_and_its_late_result_is_dropped(storage: Storage) -> None:
    release = threading.Event()

    @tg.sensor(job=IMPORT, minimum_interval_seconds=1, default_status=RUNNING, time_limit_seconds=0.3)
    def hangs(_context: tg.SensorEvaluationContext) -> tg.SensorResult:
        release.wait(10)
        return tg.SensorResult(run_requests=[tg.RunRequest(run_key="late")], cursor="late")

    h = Harness(_defs(sensors=[hangs]), storage, T0, synchronous_sensors=False)
    try:
        assert h.at(T0).failures == []  # started; not over its limit yet
        time.sleep(0.4)
        report = h.at(T0 + timedelta(seconds=1))
        assert report.leader, report
        [failure] = report.failures
        assert failure == "sensor 'hangs': TimeoutError: evaluation exceeded its time limit of 0.3s"
        assert h.at(T0 + timedelta(seconds=2)).sensor_ticks == []  # still hung: not started again
    finally:
        release.set()
    assert h.beat.wait_for_evaluations(10)  # the hung evaluation returned: its result is dropped
    assert [t.status for t in _ticks(storage, "hangs")] == [TickStatus.FAILURE]
    assert _runs(storage) == []
    state = storage.get_instigator("hangs")
    assert state is not None and state.cursor is None
    h.at(T0 + timedelta(seconds=3))  # evaluated afresh now that the old one is over
    assert h.beat.wait_for_evaluations(10)
    assert [t.status for t in _ticks(storage, "hangs")] == [TickStatus.SUCCESS, TickStatus.FAILURE]
    assert [r.run_key for r in _runs(storage)] == ["late"]


def test_at_most_max_concurrent_evaluations_run_at_once(storage: Storage) -> None:
    release = threading.Event()
    running: list[str] = []

    def make(name: str) -> tg.SensorDefinition:
        @tg.sensor(name=name, job=IMPORT, minimum_interval_seconds=1, default_status=RUNNING, time_limit_seconds=30)
        def blocked(context: tg.SensorEvaluationContext) -> tg.SkipReason:
            running.append(context.sensor_name)
            release.wait(10)
            return tg.SkipReason("done")

        return blocked

    sensors = [make(f"s{i}") for i in range(4)]
    config = Settings.from_dict({"beat": {"max_concurrent_evaluations": 2}})
    h = Harness(_defs(sensors=sensors), storage, T0, synchronous_sensors=False, config=config)
    try:
        h.at(T0)
        _wait(lambda: len(running) == 2, "two evaluations start")
        h.at(T0 + timedelta(seconds=0.5))
        time.sleep(0.2)
        assert len(running) == 2
    finally:
        release.set()
    assert h.beat.wait_for_evaluations(10)
    h.at(T0 + timedelta(seconds=0.6))  # collects both; the other two start
    assert h.beat.wait_for_evaluations(10)
    assert sorted(running) == ["s0", "s1", "s2", "s3"]


# -- large ticks ---------------------------------------------------------------------------------


def _outcome(keys: list[str | None], cursor: str) -> TickOutcome:
    plan = _defs().plan("import_job")
    runs = [PlannedRun(plan, key) for key in keys]
    return TickOutcome(TickStatus.SUCCESS, runs=runs, cursor_set=True, cursor=cursor)


def _commit(storage: Storage, outcome: TickOutcome, second: int, batch_size: int | None = 3) -> Any:
    state = storage.get_instigator("big")
    assert state is not None
    return storage.commit_tick(
        "big",
        "sensor",
        expected_version=state.version,
        tick_time=T0 + timedelta(seconds=second),
        started_at=T0 + timedelta(seconds=second),
        outcome=outcome,
        origin="sensor:big",
        next_tick_at=None,
        batch_size=batch_size,
    )


def test_a_large_tick_commits_in_batches_and_a_crash_between_them_loses_and_duplicates_nothing(
    storage: Storage,
) -> None:
    storage.set_cursor("big", "sensor", "0")
    keys: list[str | None] = [f"k{i}" for i in range(10)]
    # The database refuses the 8th run: batches 1 and 2 (k0..k5) are committed, the third
    # fails, as if the beat died there. The cursor has not moved, so nothing is lost.
    with _refusing(storage, "runs", "NEW.run_key = 'k7'"), pytest.raises(Exception, match="refused by the test"):
        _commit(storage, _outcome(keys, "10"), 0)
    assert sorted(r.run_key or "" for r in _runs(storage)) == [f"k{i}" for i in range(6)]
    state = storage.get_instigator("big")
    assert state is not None and state.cursor == "0"
    assert storage.get_ticks("big") == []

    # Evaluated again from the same cursor: the committed keys create nothing.
    record = _commit(storage, _outcome(keys, "10"), 1)
    assert record is not None and record.status == TickStatus.SUCCESS
    runs = _runs(storage)
    assert sorted(r.run_key or "" for r in runs) == sorted(k for k in keys if k)  # each exactly once
    assert record.new_run_keys == tuple(f"k{i}" for i in range(6, 10))
    assert record.skipped_run_keys == tuple(f"k{i}" for i in range(6))
    assert sorted(record.run_ids) == sorted(r.run_id for r in runs if r.run_key in record.new_run_keys)
    state = storage.get_instigator("big")
    assert state is not None and state.cursor == "10" and state.last_run_key == "k9"


def test_a_large_tick_lists_every_run_of_its_batches_and_a_cursor_reset_stops_it(storage: Storage) -> None:
    storage.set_cursor("big", "sensor", "0")
    record = _commit(storage, _outcome([f"k{i}" for i in range(8)], "8"), 0)
    assert record is not None and len(record.run_ids) == 8 and record.new_run_keys == tuple(f"k{i}" for i in range(8))
    assert len(_runs(storage)) == 8

    state = storage.get_instigator("big")
    assert state is not None
    storage.set_cursor("big", "sensor", "reset")  # the version moves: the next batch is not taken
    stale = storage.commit_tick(
        "big",
        "sensor",
        expected_version=state.version,
        tick_time=T0 + timedelta(seconds=1),
        started_at=T0 + timedelta(seconds=1),
        outcome=_outcome([f"n{i}" for i in range(8)], "16"),
        origin="sensor:big",
        next_tick_at=None,
        batch_size=3,
    )
    assert stale is None
    assert len(_runs(storage)) == 8
    state = storage.get_instigator("big")
    assert state is not None and state.cursor == "reset"


def test_runs_without_run_keys_commit_in_one_transaction(storage: Storage) -> None:
    storage.set_cursor("big", "sensor", "0")
    with _refusing(storage, "runs", "NEW.run_key = 'k4'"), pytest.raises(Exception, match="refused by the test"):
        _commit(storage, _outcome([None, None, None, "k3", "k4", None], "6"), 0)
    assert _runs(storage) == []  # not batched: without keys a retry could not tell what exists
    record = _commit(storage, _outcome([None, None, None, "k3", "k4", None], "6"), 1)
    assert record is not None and len(record.run_ids) == 6 and len(_runs(storage)) == 6


# -- cursors -------------------------------------------------------------------------------------


def _live_bytes(storage: Storage) -> int:
    """Bytes the database uses for live data: SQLite pages not on the freelist; PostgreSQL, the
    ticks table with its TOAST and indexes (the one table a copy per tick would grow)."""
    with storage.engine.connect() as conn:
        if storage.dialect == "sqlite":
            pages = conn.execute(text("PRAGMA page_count")).scalar_one()
            free = conn.execute(text("PRAGMA freelist_count")).scalar_one()
            size = conn.execute(text("PRAGMA page_size")).scalar_one()
            return int((pages - free) * size)
        return int(conn.execute(text("SELECT pg_total_relation_size('ticks')")).scalar_one())


def test_a_tick_stores_a_preview_of_a_large_cursor_not_a_copy(storage: Storage) -> None:
    size = 900_000  # under the cursor limit, thirteen times: 11.7 MB if every tick kept a copy

    @tg.sensor(job=IMPORT, minimum_interval_seconds=1, default_status=RUNNING)
    def heavy(context: tg.SensorEvaluationContext) -> tg.SensorResult:
        n = int((context.cursor or "0")[:4])
        return tg.SensorResult(run_requests=[], cursor=f"{n + 1:04d}" + "x" * size)

    h = Harness(_defs(sensors=[heavy]), storage, T0)
    h.at(T0)
    before = _live_bytes(storage)
    for second in range(1, 14):
        h.at(T0 + timedelta(seconds=second))
    grown = _live_bytes(storage) - before
    state = storage.get_instigator("heavy")
    assert state is not None and state.cursor == "0014" + "x" * size  # the cursor itself is whole
    newest = _ticks(storage, "heavy")[0]
    assert newest.cursor is not None and newest.cursor.startswith("0014xxx")
    assert f"[{size + 4:,} characters, sha256 " in newest.cursor
    with storage.engine.connect() as conn:
        stored = conn.execute(select(func.sum(func.length(ticks.c.cursor)))).scalar_one()
    assert stored <= 14 * TICK_CURSOR_CHARACTERS, stored
    print(f"\n{storage.dialect}: 13 ticks of a {size:,}-character cursor grew the database by {grown:,} bytes")
    assert grown < 3 * size, f"13 ticks grew the database by {grown:,} bytes"


def test_a_short_cursor_is_recorded_on_its_tick_as_is(storage: Storage) -> None:
    @tg.sensor(job=IMPORT, minimum_interval_seconds=1, default_status=RUNNING)
    def small(_context: tg.SensorEvaluationContext) -> tg.SensorResult:
        return tg.SensorResult(run_requests=[], cursor="c" * TICK_CURSOR_CHARACTERS)

    h = Harness(_defs(sensors=[small]), storage, T0)
    h.at(T0)
    assert _ticks(storage, "small")[0].cursor == "c" * TICK_CURSOR_CHARACTERS
