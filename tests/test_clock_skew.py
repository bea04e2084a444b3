"""Hosts whose clocks disagree by 30 s, on SQLite and PostgreSQL (the ``storage`` fixture).

Every time one process writes and another judges (a heartbeat's age, a lease's expiry, how long
a step has been ENQUEUED, whether a schedule was stopped since the beat last looked) is the
database's clock; ``host_clock`` shifts the Python clock of the code that plays one host.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import tidegate as tg
from tests.clock_skew import host_clock
from tidegate.config import MonitorConfig
from tidegate.names import InstigatorStatus, StepStatus
from tidegate.scheduler.beat import Beat
from tidegate.scheduler.clock import FakeClock
from tidegate.scheduler.monitor import RunMonitor
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRef

SKEW = 30.0  # seconds between two hosts' clocks
CONFIG = MonitorConfig(heartbeat_timeout_seconds=20, enqueued_timeout_seconds=20)


@tg.asset
def first() -> int:
    return 1


@tg.asset
def second(first: int) -> int:
    return first


PAIR = tg.define_asset_job("pair", "*")
DEFS = tg.Definitions(assets=[first, second], jobs=[PAIR])


def _started_run(storage: Storage) -> tuple[str, list[StepRef]]:
    run_id = storage.submit_run(DEFS.plan("pair"), origin="test").run_id
    return run_id, storage.start_run(run_id)


def _step(storage: Storage, run_id: str, key: str) -> object:
    return next(s for s in storage.get_steps(run_id) if s.step_key == key)


@pytest.mark.parametrize(("worker_offset", "beat_offset"), [(-SKEW, 0.0), (0.0, SKEW)])
def test_a_live_step_is_not_declared_lost_when_worker_and_beat_clocks_disagree(
    storage: Storage, worker_offset: float, beat_offset: float
) -> None:
    run_id, _ready = _started_run(storage)
    with host_clock(worker_offset):  # the worker's host
        assert storage.claim_step(run_id, "first", 1, "worker@drifting") is not None
        assert storage.heartbeat(run_id, "first", 1)
    sent: list[StepRef] = []
    monitor = RunMonitor(storage, sent.extend, DEFS, CONFIG)
    with host_clock(beat_offset):  # the beat's host
        assert monitor.check()["lost"] == 0
    assert _step(storage, run_id, "first").status == StepStatus.RUNNING  # type: ignore[attr-defined]
    # ...while a heartbeat really older than the timeout, by the database's clock, is lost:
    assert monitor.check(now=storage.db_now() + timedelta(seconds=21))["lost"] == 1


@pytest.mark.parametrize(("sender_offset", "beat_offset"), [(-SKEW, 0.0), (0.0, SKEW)])
def test_a_step_just_sent_is_not_sent_again_when_clocks_disagree(
    storage: Storage, sender_offset: float, beat_offset: float
) -> None:
    _run_id, ready = _started_run(storage)
    with host_clock(sender_offset):  # the process that published the step
        storage.mark_enqueued(ready)
    sent: list[StepRef] = []
    monitor = RunMonitor(storage, sent.extend, DEFS, CONFIG)
    with host_clock(beat_offset):
        assert monitor.check()["republished"] == 0
    assert sent == []
    assert monitor.check(now=storage.db_now() + timedelta(seconds=21))["republished"] == 1


@pytest.mark.parametrize(("a_offset", "b_offset"), [(0.0, SKEW), (-SKEW, 0.0)])
def test_two_beats_whose_clocks_disagree_never_both_lead(storage: Storage, a_offset: float, b_offset: float) -> None:
    other = Storage(storage.url)
    a = Beat(DEFS, storage, [].extend, holder="beat-a", lease_seconds=20)
    b = Beat(DEFS, other, [].extend, holder="beat-b", lease_seconds=20)
    try:
        for _ in range(3):
            with host_clock(a_offset):
                assert a.tick().leader
            with host_clock(b_offset):
                assert not b.tick().leader
        storage.release_lease("beat", "beat-a")  # a stops: b takes over at once
        with host_clock(b_offset):
            assert b.tick().leader
        with host_clock(a_offset):
            assert not a.tick().leader
    finally:
        other.dispose()


def test_a_sensor_stopped_from_a_host_whose_clock_runs_behind_stops(storage: Storage) -> None:
    calls: list[int] = []

    @tg.sensor(job=PAIR, minimum_interval_seconds=30, default_status=tg.DefaultScheduleStatus.RUNNING)
    def polled(_context: tg.SensorEvaluationContext) -> tg.SkipReason:
        calls.append(1)
        return tg.SkipReason("nothing new")

    defs = tg.Definitions(assets=[first, second], jobs=[PAIR], sensors=[polled])
    clock = FakeClock(datetime.now(UTC))  # schedule time: the beat's clock, stepped by the test
    beat = Beat(defs, storage, [].extend, clock=clock, holder="beat")
    beat.tick()
    assert len(calls) == 1
    with host_clock(-SKEW):  # `tidegate sensor stop polled` on a host 30 s behind, as the CLI does it
        cli_now = datetime.now(UTC) - timedelta(seconds=SKEW)
        storage.set_instigator_status("polled", "sensor", InstigatorStatus.STOPPED, cli_now)
    clock.advance(60)
    beat.tick()
    assert len(calls) == 1, "the beat did not see the stop"
