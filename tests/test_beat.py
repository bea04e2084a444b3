"""The beat on real storage (SQLite and PostgreSQL via the ``storage`` fixture), stepped with a
fake clock: schedules, catch-up, DST, sensors and their cursors, error boundaries, the leader
lease and two beats racing.

``publish`` is a list's ``extend``: no worker is needed to see which runs a tick created.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

import tidegate as tg
from tidegate.names import SCHEDULE_TAG, SENSOR_TAG, TICK_TAG, InstigatorStatus, TickStatus
from tidegate.scheduler.beat import LEASE_NAME, Beat
from tidegate.scheduler.clock import FakeClock
from tidegate.storage.api import Storage
from tidegate.storage.instigators import PlannedRun, TickOutcome
from tidegate.storage.records import RunRecord, StepRef

RUNNING = tg.DefaultScheduleStatus.RUNNING
T0 = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)  # a Monday, far from any DST transition


@tg.asset
def raw() -> int:
    return 1


@tg.asset
def cleaned(raw: int) -> int:
    return raw


IMPORT = tg.define_asset_job("import_job", [raw, cleaned])


def _defs(*, schedules: Any = (), sensors: Any = (), resources: Any = None) -> tg.Definitions:
    return tg.Definitions(
        assets=[raw, cleaned], jobs=[IMPORT], schedules=schedules, sensors=sensors, resources=resources
    )


def _hourly(name: str = "hourly", **kwargs: Any) -> tg.ScheduleDefinition:
    return tg.ScheduleDefinition(name, cron_schedule="0 * * * *", job=IMPORT, default_status=RUNNING, **kwargs)


class Harness:
    """One beat with its own fake clock and the step refs it published."""

    def __init__(self, defs: tg.Definitions, storage: Storage, start: datetime, **kwargs: Any) -> None:
        self.clock = FakeClock(start)
        self.published: list[StepRef] = []
        kwargs.setdefault("holder", "beat-a")
        self.beat = Beat(defs, storage, self.published.extend, clock=self.clock, **kwargs)

    def at(self, when: datetime) -> Any:
        self.clock.set(when)
        return self.beat.tick()

    def after(self, **delta: float) -> Any:
        return self.at(self.clock.now() + timedelta(**delta))

    def gone(self) -> None:
        """This beat died hours ago (in fake time): its lease, which runs on the database's
        real clock, is over."""
        self.beat.storage.release_lease(LEASE_NAME, self.beat.holder)


def _runs(storage: Storage, **tags: str) -> list[RunRecord]:
    found = storage.list_runs(limit=10_000)
    return sorted(
        (r for r in found if all(r.tags.get(k) == v for k, v in tags.items())), key=lambda r: (r.created_at, r.run_id)
    )


def _tick_tags(storage: Storage, schedule: str) -> list[str]:
    return sorted(r.tags[TICK_TAG] for r in _runs(storage, **{SCHEDULE_TAG: schedule}))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- schedules ---------------------------------------------------------------------------------


def test_a_schedule_creates_one_run_per_tick_and_none_before_it_started(storage: Storage) -> None:
    h = Harness(_defs(schedules=[_hourly()]), storage, T0 + timedelta(minutes=10))
    report = h.at(T0 + timedelta(minutes=10))
    assert report.leader and report.schedule_ticks == []
    assert _runs(storage) == []  # 00:00 was before the beat first saw the schedule

    report = h.at(T0 + timedelta(hours=1))
    assert report.schedule_ticks == ["hourly@2024-03-04T01:00:00+00:00"]
    [run] = _runs(storage)
    assert run.job_name == "import_job"
    assert run.tags[SCHEDULE_TAG] == "hourly" and run.tags[TICK_TAG] == "2024-03-04T01:00:00+00:00"
    assert [(p.run_id, p.step_key) for p in h.published] == [(run.run_id, "raw")]  # the root step, started
    assert report.published == 1

    for minutes in (60, 61, 90, 119):  # the same tick again, and times before the next one
        assert h.at(T0 + timedelta(minutes=minutes)).schedule_ticks == []
    assert len(_runs(storage)) == 1

    h.at(T0 + timedelta(hours=2))
    assert _tick_tags(storage, "hourly") == ["2024-03-04T01:00:00+00:00", "2024-03-04T02:00:00+00:00"]
    [newest, older] = storage.get_ticks("hourly")
    assert newest.status == TickStatus.SUCCESS and newest.tick_time == T0 + timedelta(hours=2)
    assert len(newest.run_ids) == 1 and newest.run_ids[0] in {r.run_id for r in _runs(storage)}
    assert older.tick_time == T0 + timedelta(hours=1)


def test_the_database_refuses_a_second_commit_of_the_same_tick(storage: Storage) -> None:
    defs = _defs(schedules=[_hourly()])
    h = Harness(defs, storage, T0 + timedelta(minutes=10))
    h.at(T0 + timedelta(minutes=10))
    h.at(T0 + timedelta(hours=1))
    state = storage.get_instigator("hourly")
    assert state is not None
    # Even with the current version (so the compare-and-set passes), UNIQUE(instigator,
    # tick_time) refuses the tick and the whole transaction, its run included, rolls back.
    plan = defs.plan("import_job")
    again = storage.commit_tick(
        "hourly",
        "schedule",
        expected_version=state.version,
        tick_time=T0 + timedelta(hours=1),
        started_at=T0 + timedelta(hours=1, minutes=1),
        outcome=TickOutcome(TickStatus.SUCCESS, runs=[PlannedRun(plan, "other-key")]),
        origin="schedule:hourly",
        next_tick_at=None,
    )
    assert again is None
    assert len(_runs(storage)) == 1
    assert storage.get_instigator("hourly") == state


def test_a_schedule_function_gets_the_scheduled_time_in_its_timezone(storage: Storage) -> None:
    seen: list[str] = []

    @tg.schedule("0 6 * * *", job=IMPORT, execution_timezone="Asia/Kolkata", default_status=RUNNING)
    def morning(context: tg.ScheduleEvaluationContext) -> tg.RunRequest | tg.SkipReason:
        when = context.scheduled_execution_time
        seen.append(when.isoformat())
        if when.weekday() >= 5:
            return tg.SkipReason(f"{when:%A}: no import at weekends")
        return tg.RunRequest(run_key="import", tags={"day": when.date().isoformat()})

    h = Harness(_defs(schedules=[morning]), storage, _at("2024-03-08 00:00"))  # Friday
    for day in ("2024-03-08", "2024-03-09", "2024-03-10", "2024-03-11"):
        h.at(_at(f"{day} 00:00"))
        h.at(_at(f"{day} 00:30"))  # 06:00 in Kolkata
    assert seen == [
        "2024-03-08T06:00:00+05:30",
        "2024-03-09T06:00:00+05:30",
        "2024-03-10T06:00:00+05:30",
        "2024-03-11T06:00:00+05:30",
    ]
    assert [r.tags["day"] for r in _runs(storage)] == ["2024-03-08", "2024-03-11"]
    ticks = storage.get_ticks("morning")
    assert [(t.status, t.skip_reason) for t in ticks] == [
        (TickStatus.SUCCESS, None),
        (TickStatus.SKIPPED, "Sunday: no import at weekends"),
        (TickStatus.SKIPPED, "Saturday: no import at weekends"),
        (TickStatus.SUCCESS, None),
    ]


def test_a_failing_schedule_ends_its_tick_failure_and_runs_again_at_the_next(storage: Storage) -> None:
    @tg.schedule("0 * * * *", job=IMPORT, default_status=RUNNING)
    def flaky(context: tg.ScheduleEvaluationContext) -> Any:
        hour = context.scheduled_execution_time.hour
        if hour == 1:
            raise TimeoutError("warehouse did not answer")
        if hour == 2:
            return "2024-03-04"  # not a RunRequest
        return tg.RunRequest()

    h = Harness(_defs(schedules=[flaky, _hourly("steady")]), storage, T0)
    h.at(T0)
    reports = [h.at(T0 + timedelta(hours=hour)) for hour in (1, 2, 3)]
    assert [len(r.failures) for r in reports] == [1, 1, 0]
    assert reports[0].failures == ["schedule 'flaky': TimeoutError: warehouse did not answer"]
    ticks = storage.get_ticks("flaky")
    assert [t.status for t in ticks] == [TickStatus.SUCCESS, TickStatus.FAILURE, TickStatus.FAILURE]
    assert "Traceback" in (ticks[2].error or "") and "TimeoutError: warehouse did not answer" in (ticks[2].error or "")
    assert "schedule 'flaky': returned str" in (ticks[1].error or "")
    assert _tick_tags(storage, "flaky") == ["2024-03-04T03:00:00+00:00"]
    assert len(_tick_tags(storage, "steady")) == 3  # the other schedule ran at every tick


def test_a_schedule_definition_puts_its_tags_on_its_runs(storage: Storage) -> None:
    tagged = tg.ScheduleDefinition(
        "tagged",
        cron_schedule="*/15 * * * *",
        target=[raw],
        tags={"team": "ops"},
        description="every quarter hour",
        default_status=RUNNING,
    )
    h = Harness(_defs(schedules=[tagged]), storage, T0)
    h.at(T0)
    h.at(T0 + timedelta(minutes=15))
    [run] = _runs(storage)
    assert run.tags["team"] == "ops"
    assert run.asset_selection == ("raw",)  # the asset selection target, not the whole job


def test_a_stopped_schedule_does_nothing_until_started_and_never_runs_older_ticks(storage: Storage) -> None:
    lazy = tg.ScheduleDefinition("lazy", cron_schedule="0 * * * *", job=IMPORT, max_catchup_ticks=10)
    h = Harness(_defs(schedules=[lazy]), storage, T0)
    for hour in range(4):
        h.at(T0 + timedelta(hours=hour, minutes=1))
    assert _runs(storage) == []  # STOPPED by default

    storage.set_instigator_status("lazy", "schedule", InstigatorStatus.RUNNING, T0 + timedelta(hours=3, minutes=10))
    h.at(T0 + timedelta(hours=6, minutes=30))  # ticks 04:00, 05:00 and 06:00 were missed
    assert _tick_tags(storage, "lazy") == [
        "2024-03-04T04:00:00+00:00",
        "2024-03-04T05:00:00+00:00",
        "2024-03-04T06:00:00+00:00",
    ]

    storage.set_instigator_status("lazy", "schedule", InstigatorStatus.STOPPED, T0 + timedelta(hours=6, minutes=40))
    h.at(T0 + timedelta(hours=7))
    h.at(T0 + timedelta(hours=8))
    assert len(_runs(storage)) == 3
    storage.set_instigator_status("lazy", "schedule", InstigatorStatus.RUNNING, T0 + timedelta(hours=9, minutes=20))
    h.at(T0 + timedelta(hours=9, minutes=30))
    assert len(_runs(storage)) == 3  # 07:00, 08:00 and 09:00 were before the restart
    h.at(T0 + timedelta(hours=10))
    assert _tick_tags(storage, "lazy")[3:] == ["2024-03-04T10:00:00+00:00"]


# -- missed ticks ------------------------------------------------------------------------------


def test_missed_ticks_run_only_the_latest_by_default(storage: Storage) -> None:
    defs = _defs(schedules=[_hourly()])
    first = Harness(defs, storage, T0 + timedelta(minutes=10))
    first.at(T0 + timedelta(minutes=10))
    first.at(T0 + timedelta(hours=1))
    # no beat from 01:00 to 05:20; a new beat process starts then
    first.gone()
    second = Harness(defs, storage, T0 + timedelta(hours=5, minutes=20), holder="beat-b")
    second.at(T0 + timedelta(hours=5, minutes=20))
    assert _tick_tags(storage, "hourly") == ["2024-03-04T01:00:00+00:00", "2024-03-04T05:00:00+00:00"]
    second.at(T0 + timedelta(hours=6))
    assert _tick_tags(storage, "hourly")[-1] == "2024-03-04T06:00:00+00:00"
    assert len(_runs(storage)) == 3


def test_max_catchup_ticks_runs_up_to_the_n_most_recent_missed_ticks(storage: Storage) -> None:
    defs = _defs(schedules=[_hourly(max_catchup_ticks=3)])
    first = Harness(defs, storage, T0 + timedelta(minutes=10))
    first.at(T0 + timedelta(minutes=10))
    first.at(T0 + timedelta(hours=1))
    first.gone()
    second = Harness(defs, storage, T0 + timedelta(hours=5, minutes=20), holder="beat-b")
    report = second.at(T0 + timedelta(hours=5, minutes=20))
    assert report.schedule_ticks == [
        "hourly@2024-03-04T03:00:00+00:00",
        "hourly@2024-03-04T04:00:00+00:00",
        "hourly@2024-03-04T05:00:00+00:00",
    ]
    assert _tick_tags(storage, "hourly") == [
        "2024-03-04T01:00:00+00:00",
        "2024-03-04T03:00:00+00:00",
        "2024-03-04T04:00:00+00:00",
        "2024-03-04T05:00:00+00:00",
    ]
    # fewer missed ticks than N: all of them, never one from before the schedule started
    third = Harness(_defs(schedules=[_hourly("late", max_catchup_ticks=50)]), storage, T0, holder="beat-b")
    third.at(T0 + timedelta(hours=7, minutes=30))
    third.at(T0 + timedelta(hours=9, minutes=5))
    assert _tick_tags(storage, "late") == ["2024-03-04T08:00:00+00:00", "2024-03-04T09:00:00+00:00"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_max_catchup_ticks_must_be_a_positive_integer(bad: Any) -> None:
    with pytest.raises(tg.InvalidDefinitionError, match="schedule 'hourly': max_catchup_ticks"):
        _hourly(max_catchup_ticks=bad)


def test_changing_the_cron_never_replays_an_old_tick(storage: Storage) -> None:
    old = Harness(_defs(schedules=[_hourly(max_catchup_ticks=5)]), storage, T0 + timedelta(minutes=10))
    for at in (timedelta(minutes=10), timedelta(hours=1), timedelta(hours=2)):
        old.at(T0 + at)
    assert len(_tick_tags(storage, "hourly")) == 2

    # Redeployed at 04:45 with a new cron: its ticks 02:30, 03:30 and 04:30 are in the past and
    # belong to a cron that was not deployed then; none of them may run.
    new_cron = tg.ScheduleDefinition(
        "hourly", cron_schedule="30 * * * *", job=IMPORT, default_status=RUNNING, max_catchup_ticks=5
    )
    new = Harness(_defs(schedules=[new_cron]), storage, T0 + timedelta(hours=4, minutes=45))
    assert new.at(T0 + timedelta(hours=4, minutes=45)).schedule_ticks == []
    # The first tick of the new cron runs even when the beat gets to it a little late.
    assert new.at(T0 + timedelta(hours=5, minutes=30, seconds=40)).schedule_ticks == [
        "hourly@2024-03-04T05:30:00+00:00"
    ]
    new.at(T0 + timedelta(hours=6, minutes=30))
    assert _tick_tags(storage, "hourly") == [
        "2024-03-04T01:00:00+00:00",
        "2024-03-04T02:00:00+00:00",
        "2024-03-04T05:30:00+00:00",
        "2024-03-04T06:30:00+00:00",
    ]


def test_changing_the_cron_does_not_rerun_a_tick_the_old_cron_ran(storage: Storage) -> None:
    old = Harness(_defs(schedules=[_hourly()]), storage, T0 + timedelta(minutes=10))
    for hours in (0.2, 1, 2, 3, 4):
        old.at(T0 + timedelta(hours=hours))
    every_two = tg.ScheduleDefinition("hourly", cron_schedule="0 */2 * * *", job=IMPORT, default_status=RUNNING)
    new = Harness(_defs(schedules=[every_two]), storage, T0 + timedelta(hours=4, seconds=20))
    new.at(T0 + timedelta(hours=4, seconds=20))  # 04:00 ran under the old cron twenty seconds ago
    new.at(T0 + timedelta(hours=5))
    new.at(T0 + timedelta(hours=6))
    assert _tick_tags(storage, "hourly")[-3:] == [
        "2024-03-04T03:00:00+00:00",
        "2024-03-04T04:00:00+00:00",
        "2024-03-04T06:00:00+00:00",
    ]
    assert len(_runs(storage)) == 5


# -- DST in the beat ---------------------------------------------------------------------------


DST_CASES = {
    "berlin-spring": (
        "Europe/Berlin",
        "30 2 * * *",
        "0 * * * *",
        "2024-03-30 23:30",
        "2024-03-31 03:00",
        ["2024-03-31T03:00:00+02:00"],
        [
            "2024-03-31T01:00:00+01:00",
            "2024-03-31T03:00:00+02:00",
            "2024-03-31T04:00:00+02:00",
            "2024-03-31T05:00:00+02:00",
        ],
    ),
    "berlin-fall": (
        "Europe/Berlin",
        "30 2 * * *",
        "0 * * * *",
        "2024-10-26 22:15",
        "2024-10-27 02:00",
        ["2024-10-27T02:30:00+01:00"],  # the later 02:30, as Dagster
        [
            "2024-10-27T01:00:00+02:00",
            "2024-10-27T02:00:00+02:00",
            "2024-10-27T02:00:00+01:00",
            "2024-10-27T03:00:00+01:00",
        ],
    ),
    "new-york-spring": (
        "America/New_York",
        "30 2 * * *",
        "0 * * * *",
        "2024-03-10 05:15",
        "2024-03-10 08:00",
        ["2024-03-10T03:00:00-04:00"],
        ["2024-03-10T01:00:00-05:00", "2024-03-10T03:00:00-04:00", "2024-03-10T04:00:00-04:00"],
    ),
    "new-york-fall": (
        "America/New_York",
        "30 1 * * *",
        "0 * * * *",
        "2024-11-03 03:45",
        "2024-11-03 07:00",
        ["2024-11-03T01:30:00-05:00"],  # the later 01:30, as Dagster
        [
            "2024-11-03T00:00:00-04:00",
            "2024-11-03T01:00:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T02:00:00-05:00",
        ],
    ),
    "kolkata": (
        "Asia/Kolkata",
        "0 6 * * *",
        "30 * * * *",  # on the hour in UTC
        "2024-03-31 00:15",
        "2024-03-31 03:00",
        ["2024-03-31T06:00:00+05:30"],
        ["2024-03-31T06:30:00+05:30", "2024-03-31T07:30:00+05:30", "2024-03-31T08:30:00+05:30"],
    ),
}


@pytest.mark.parametrize("case", list(DST_CASES))
def test_the_beat_follows_daylight_saving_time(storage: Storage, case: str) -> None:
    tz, daily_cron, hourly_cron, start, end, expected_daily, expected_hourly = DST_CASES[case]
    seen: dict[str, list[str]] = {"daily": [], "hourly": []}

    def record(context: tg.ScheduleEvaluationContext) -> tg.RunRequest:
        seen[context.schedule_name].append(context.scheduled_execution_time.isoformat())
        return tg.RunRequest()

    daily = tg.schedule(daily_cron, name="daily", job=IMPORT, execution_timezone=tz, default_status=RUNNING)(record)
    hourly = tg.schedule(hourly_cron, name="hourly", job=IMPORT, execution_timezone=tz, default_status=RUNNING)(record)
    h = Harness(_defs(schedules=[daily, hourly]), storage, _at(start))
    now = _at(start)
    while now <= _at(end):
        h.at(now)
        now += timedelta(minutes=15)
    assert seen["daily"] == expected_daily
    assert seen["hourly"] == expected_hourly
    assert len(_runs(storage)) == len(expected_daily) + len(expected_hourly)


# -- sensors -----------------------------------------------------------------------------------


class Warehouse:
    def __init__(self, name: str) -> None:
        self.name = name


def test_sensor_and_schedule_options_are_validated_at_definition_time() -> None:
    @tg.sensor(job=IMPORT, name="renamed", description="watches", minimum_interval_seconds=5, time_limit_seconds=0.5)
    def original(_context: tg.SensorEvaluationContext) -> None:
        return None

    assert (original.name, original.description) == ("renamed", "watches")
    assert (original.minimum_interval_seconds, original.time_limit_seconds) == (5.0, 0.5)
    assert original.default_status is tg.DefaultSensorStatus.STOPPED
    cases: list[tuple[Any, str]] = [
        (lambda: tg.sensor(job=IMPORT, minimum_interval_seconds=0)(original.evaluation_fn), "minimum_interval_seconds"),
        (lambda: tg.sensor(job=IMPORT, time_limit_seconds=-1)(original.evaluation_fn), "time_limit_seconds"),
        (lambda: tg.sensor(job=IMPORT, target=[raw])(original.evaluation_fn), "give only one of target=, job="),
        (lambda: tg.sensor(jobs=[IMPORT], job_name="x")(original.evaluation_fn), "give only one of jobs=, job_name="),
        (lambda: tg.sensor(jobs=[])(original.evaluation_fn), "jobs= must be a non-empty list"),
        (lambda: tg.sensor(jobs=[IMPORT, "import_job"])(original.evaluation_fn), "names job 'import_job' twice"),
        (lambda: tg.sensor(job_name="no such name")(original.evaluation_fn), "invalid job name"),
        (lambda: tg.ScheduleDefinition("s", cron_schedule="0 * * * *"), "no target"),
        (lambda: tg.ScheduleDefinition("s", cron_schedule="0 * * * *", job=IMPORT, target="*"), "only one of"),
        (lambda: tg.ScheduleDefinition("s", cron_schedule="0 * * * *", job=IMPORT, job_name="x"), "only one of"),
    ]
    for build, fragment in cases:
        with pytest.raises(tg.InvalidDefinitionError, match=fragment):
            build()


def test_a_sensor_sees_its_cursor_previous_tick_and_resources(storage: Storage) -> None:
    seen: list[tuple[Any, ...]] = []

    @tg.sensor(job=IMPORT, minimum_interval_seconds=30, default_status=RUNNING)
    def counter(context: tg.SensorEvaluationContext, warehouse: Warehouse) -> tg.RunRequest:
        seen.append(
            (context.cursor, context.last_tick_completion_time, context.last_run_key, context.resources.warehouse.name)
        )
        assert warehouse is context.resources.warehouse
        context.log.info("cursor %s", context.cursor)
        n = int(context.cursor or 0)
        context.update_cursor(str(n + 1))
        return tg.RunRequest(run_key=f"k{n}", tags={"n": str(n)})

    h = Harness(_defs(sensors=[counter], resources={"warehouse": Warehouse("wh")}), storage, T0)
    assert h.at(T0).sensor_ticks == [f"counter@{T0.isoformat()}"]
    assert h.at(T0 + timedelta(seconds=10)).sensor_ticks == []  # within minimum_interval_seconds
    h.at(T0 + timedelta(seconds=30))
    h.at(T0 + timedelta(seconds=75))
    assert seen == [
        (None, None, None, "wh"),
        ("1", T0, "k0", "wh"),
        ("2", T0 + timedelta(seconds=30), "k1", "wh"),
    ]
    assert [r.run_key for r in _runs(storage, **{SENSOR_TAG: "counter"})] == ["k0", "k1", "k2"]
    state = storage.get_instigator("counter")
    assert state is not None and state.cursor == "3" and state.last_run_key == "k2"
    newest = storage.get_ticks("counter")[0]
    assert newest.cursor == "3" and newest.new_run_keys == ("k2",) and newest.status == TickStatus.SUCCESS


def test_a_sensor_may_yield_requests_or_return_a_sensor_result(storage: Storage) -> None:
    @tg.sensor(job=IMPORT, minimum_interval_seconds=30, default_status=RUNNING)
    def yielding(context: tg.SensorEvaluationContext) -> Iterator[tg.RunRequest]:
        context.update_cursor("yielded")
        yield tg.RunRequest(run_key="y1")
        yield tg.RunRequest(run_key="y2", asset_selection=["raw"])

    @tg.sensor(target=[cleaned], minimum_interval_seconds=30, default_status=RUNNING)
    def resulting(context: tg.SensorEvaluationContext) -> tg.SensorResult:
        if context.cursor:
            return tg.SensorResult(cursor=context.cursor + "+", skip_reason="nothing new")
        return tg.SensorResult(run_requests=[tg.RunRequest(run_key="r1")], cursor="c1")

    h = Harness(_defs(sensors=[yielding, resulting]), storage, T0)
    h.at(T0)
    h.at(T0 + timedelta(seconds=30))
    yielded = {r.run_key: r for r in _runs(storage, **{SENSOR_TAG: "yielding"})}
    assert sorted(yielded) == ["y1", "y2"]
    assert yielded["y2"].asset_selection == ("raw",) and yielded["y1"].asset_selection is None
    [resulted] = _runs(storage, **{SENSOR_TAG: "resulting"})
    assert resulted.run_key == "r1" and resulted.asset_selection == ("cleaned",)
    state = storage.get_instigator("resulting")
    assert state is not None and state.cursor == "c1+"
    skipped = storage.get_ticks("resulting")[0]
    assert (skipped.status, skipped.skip_reason, skipped.cursor) == (TickStatus.SKIPPED, "nothing new", "c1+")


def test_a_run_key_is_used_once_for_the_life_of_a_sensor(storage: Storage) -> None:
    keys: list[str] = []

    @tg.sensor(job=IMPORT, minimum_interval_seconds=30, default_status=RUNNING)
    def keyed(_context: tg.SensorEvaluationContext) -> list[tg.RunRequest]:
        return [tg.RunRequest(run_key=k) for k in keys]

    h = Harness(_defs(sensors=[keyed]), storage, T0)
    keys[:] = ["a", "b"]
    h.at(T0)
    keys[:] = ["b", "c"]
    h.after(seconds=30)
    newest = storage.get_ticks("keyed")[0]
    assert (newest.new_run_keys, newest.skipped_run_keys, newest.status) == (("c",), ("b",), TickStatus.SUCCESS)

    keys[:] = ["a"]
    h.after(seconds=30)
    newest = storage.get_ticks("keyed")[0]
    assert (newest.new_run_keys, newest.skipped_run_keys, newest.status) == ((), ("a",), TickStatus.SKIPPED)
    assert "used before" in (newest.skip_reason or "")

    # neither a cursor reset nor a stop and restart makes a key new again
    storage.set_cursor("keyed", "sensor", None)
    storage.set_instigator_status("keyed", "sensor", InstigatorStatus.STOPPED, T0 + timedelta(seconds=62))
    storage.set_instigator_status("keyed", "sensor", InstigatorStatus.RUNNING, T0 + timedelta(seconds=63))
    keys[:] = ["a", "b", "c", "d"]
    h.after(seconds=30)
    assert sorted(r.run_key or "" for r in _runs(storage)) == ["a", "b", "c", "d"]
    assert storage.get_ticks("keyed")[0].skipped_run_keys == ("a", "b", "c")


def test_failing_sensors_end_their_tick_failure_and_everything_else_keeps_running(storage: Storage) -> None:
    release = threading.Event()

    def moving(context: tg.SensorEvaluationContext) -> None:
        context.update_cursor("moved")

    @tg.sensor(job=IMPORT, minimum_interval_seconds=60, default_status=RUNNING)
    def a_raises(context: tg.SensorEvaluationContext) -> tg.RunRequest:
        moving(context)
        raise ConnectionError("source unreachable")

    @tg.sensor(job=IMPORT, minimum_interval_seconds=60, default_status=RUNNING, time_limit_seconds=0.3)
    def b_hangs(context: tg.SensorEvaluationContext) -> tg.RunRequest:
        moving(context)
        release.wait(10)
        return tg.RunRequest(run_key="late")

    @tg.sensor(job=IMPORT, minimum_interval_seconds=60, default_status=RUNNING)
    def c_wrong_type(context: tg.SensorEvaluationContext) -> Any:
        moving(context)
        return {"run_key": "x"}

    @tg.sensor(job=IMPORT, minimum_interval_seconds=60, default_status=RUNNING)
    def d_unknown_job(context: tg.SensorEvaluationContext) -> tg.RunRequest:
        moving(context)
        return tg.RunRequest(run_key="x", job_name="no_such_job")

    @tg.sensor(job=IMPORT, minimum_interval_seconds=60, default_status=RUNNING)
    def e_yields_junk(context: tg.SensorEvaluationContext) -> Iterator[Any]:
        moving(context)
        yield tg.RunRequest(run_key="ok")
        yield "not a request"

    @tg.sensor(job=IMPORT, minimum_interval_seconds=60, default_status=RUNNING)
    def z_healthy(context: tg.SensorEvaluationContext) -> tg.RunRequest:
        moving(context)
        return tg.RunRequest(run_key="healthy")

    failing = ["a_raises", "b_hangs", "c_wrong_type", "d_unknown_job", "e_yields_junk"]
    defs = _defs(
        schedules=[_hourly()], sensors=[a_raises, b_hangs, c_wrong_type, d_unknown_job, e_yields_junk, z_healthy]
    )
    for name in failing:
        storage.set_cursor(name, "sensor", "start")
    storage.set_instigator_status("hourly", "schedule", InstigatorStatus.RUNNING, T0 - timedelta(minutes=1))
    h = Harness(defs, storage, T0 + timedelta(seconds=5))
    try:
        report = h.at(T0 + timedelta(seconds=5))  # the schedule's 00:00 tick and every sensor: one beat tick
    finally:
        release.set()
    assert report.schedule_ticks == ["hourly@2024-03-04T00:00:00+00:00"]
    when = (T0 + timedelta(seconds=5)).isoformat()
    assert sorted(report.sensor_ticks) == [f"{n}@{when}" for n in [*failing, "z_healthy"]]
    assert len(report.failures) == len(failing)
    errors = {name: storage.get_ticks(name)[0] for name in failing}
    assert all(t.status == TickStatus.FAILURE for t in errors.values()), {n: t.status for n, t in errors.items()}
    assert "Traceback" in (errors["a_raises"].error or "")
    assert "ConnectionError: source unreachable" in (errors["a_raises"].error or "")
    assert "TimeoutError: evaluation exceeded its time limit of 0.3s" in (errors["b_hangs"].error or "")
    assert "sensor 'c_wrong_type': returned dict" in (errors["c_wrong_type"].error or "")
    assert "job 'no_such_job'" in (errors["d_unknown_job"].error or "")
    assert "sensor 'e_yields_junk': returned str" in (errors["e_yields_junk"].error or "")
    for name in failing:
        state = storage.get_instigator(name)
        assert state is not None and state.cursor == "start", name  # the cursor did not move
        assert errors[name].run_ids == () and errors[name].cursor is None
    healthy = storage.get_ticks("z_healthy")[0]
    assert healthy.status == TickStatus.SUCCESS and healthy.new_run_keys == ("healthy",)
    assert [r.run_key for r in _runs(storage, **{SENSOR_TAG: "z_healthy"})] == ["healthy"]
    assert len(_runs(storage)) == 2  # and the schedule's


def test_failures_are_reported_by_the_tick_that_evaluated_them(storage: Storage) -> None:
    @tg.sensor(job=IMPORT, minimum_interval_seconds=60, default_status=RUNNING)
    def broken(_context: tg.SensorEvaluationContext) -> tg.RunRequest:
        raise ValueError("bad row 17")

    h = Harness(_defs(schedules=[_hourly()], sensors=[broken]), storage, T0 - timedelta(seconds=30))
    h.at(T0 - timedelta(seconds=30))
    report = h.at(T0 + timedelta(seconds=30))
    assert report.schedule_ticks == ["hourly@2024-03-04T00:00:00+00:00"]
    assert report.sensor_ticks == [f"broken@{(T0 + timedelta(seconds=30)).isoformat()}"]
    assert report.failures == ["sensor 'broken': ValueError: bad row 17"]
    assert len(storage.get_ticks("broken")) == 2


def test_a_sensor_that_hung_past_its_limit_is_evaluated_again_once_it_returns(storage: Storage) -> None:
    release, returned = threading.Event(), threading.Event()
    calls: list[int] = []

    @tg.sensor(job=IMPORT, minimum_interval_seconds=30, default_status=RUNNING, time_limit_seconds=0.2)
    def slow_once(_context: tg.SensorEvaluationContext) -> tg.RunRequest:
        calls.append(len(calls))
        try:
            if len(calls) == 1:
                release.wait(10)
            return tg.RunRequest(run_key=f"call-{len(calls)}")
        finally:
            returned.set()

    h = Harness(_defs(sensors=[slow_once]), storage, T0)
    try:
        [failure] = h.at(T0).failures
        assert failure.startswith("sensor 'slow_once'") and "exceeded its time limit of 0.2s" in failure
        for seconds in (30, 60, 90):  # still hung: never a second evaluation at once
            h.at(T0 + timedelta(seconds=seconds))
        assert calls == [0]
    finally:
        release.set()
    assert returned.wait(5)
    for seconds in (120, 150, 180):
        h.at(T0 + timedelta(seconds=seconds))
    assert calls == [0, 1, 2, 3]
    assert sorted(r.run_key or "" for r in _runs(storage)) == ["call-2", "call-3", "call-4"]  # never "call-1"


def test_cursor_ticks_and_runs_commit_together_or_not_at_all(storage: Storage) -> None:
    """An operator resets the cursor while the sensor evaluates: the evaluation's cursor,
    tick and runs must all be dropped, not half of them."""
    store = storage

    @tg.sensor(job=IMPORT, minimum_interval_seconds=30, default_status=RUNNING)
    def racing(context: tg.SensorEvaluationContext) -> tg.SensorResult:
        n = int(context.cursor or 0)
        if n == 1:  # the reset happens between reading the cursor and committing
            store.set_cursor("racing", "sensor", "100")
        return tg.SensorResult(run_requests=[tg.RunRequest(run_key=f"n{n}")], cursor=str(n + 1))

    h = Harness(_defs(sensors=[racing]), storage, T0)
    h.at(T0)
    h.at(T0 + timedelta(seconds=30))  # evaluated from "1", superseded by the reset to "100"
    state = storage.get_instigator("racing")
    assert state is not None and state.cursor == "100"
    assert [r.run_key for r in _runs(storage)] == ["n0"]
    assert [t.cursor for t in storage.get_ticks("racing")] == ["1"]
    h.at(T0 + timedelta(seconds=60))
    assert [r.run_key for r in _runs(storage)] == ["n0", "n100"]
    state = storage.get_instigator("racing")
    assert state is not None and state.cursor == "101"


def test_a_run_key_too_long_to_store_fails_the_tick_on_every_database(storage: Storage) -> None:
    @tg.sensor(job=IMPORT, minimum_interval_seconds=30, default_status=RUNNING)
    def long_keys(_context: tg.SensorEvaluationContext) -> tg.SensorResult:
        return tg.SensorResult(run_requests=[tg.RunRequest(run_key="k" * 5000)], cursor="moved")

    storage.set_cursor("long_keys", "sensor", "start")
    h = Harness(_defs(sensors=[long_keys]), storage, T0)
    h.at(T0)
    [failed] = storage.get_ticks("long_keys")
    assert failed.status == TickStatus.FAILURE
    assert "run_key 'kkkk" in (failed.error or "") and "5000 characters long" in (failed.error or "")
    state = storage.get_instigator("long_keys")
    assert state is not None and state.cursor == "start"
    assert _runs(storage) == []


@contextmanager
def _refusing(storage: Storage, table: str, condition: str) -> Iterator[None]:
    """Make the database refuse inserts into ``table`` of rows matching ``condition`` (on
    ``NEW``): a trigger, so the refusal comes from the database itself, mid-transaction."""
    name = f"refuse_{table}"
    if storage.dialect == "sqlite":
        create = [
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} WHEN {condition} "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ]
        drop = [f"DROP TRIGGER {name}"]
    else:
        create = [
            f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN IF {condition} THEN "
            "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()",
        ]
        drop = [f"DROP TRIGGER {name} ON {table}", f"DROP FUNCTION {name}()"]
    with storage.engine.begin() as conn:
        for statement in create:
            conn.execute(text(statement))
    try:
        yield
    finally:
        with storage.engine.begin() as conn:
            for statement in drop:
                conn.execute(text(statement))


def test_a_tick_the_database_refuses_is_recorded_failure_with_nothing_else(storage: Storage) -> None:
    @tg.sensor(job=IMPORT, minimum_interval_seconds=30, default_status=RUNNING)
    def poisoned(_context: tg.SensorEvaluationContext) -> tg.SensorResult:
        requests = [tg.RunRequest(run_key="fine"), tg.RunRequest(run_key="poison")]
        return tg.SensorResult(run_requests=requests, cursor="moved")

    @tg.sensor(job=IMPORT, minimum_interval_seconds=30, default_status=RUNNING)
    def z_other(_context: tg.SensorEvaluationContext) -> tg.RunRequest:
        return tg.RunRequest(run_key="other")

    h = Harness(_defs(schedules=[_hourly()], sensors=[poisoned, z_other]), storage, T0 - timedelta(minutes=1))
    with _refusing(storage, "runs", "NEW.run_key = 'poison'"):
        report = h.at(T0 - timedelta(minutes=1))
        assert any(f.startswith("sensor 'poisoned'") for f in report.failures), report.failures
        [failed] = storage.get_ticks("poisoned")
        assert failed.status == TickStatus.FAILURE and "refused by the test" in (failed.error or "")
        assert failed.run_ids == () and failed.cursor is None
        state = storage.get_instigator("poisoned")
        assert state is not None and state.cursor is None  # not "moved": the run "fine" rolled back with it
        assert [r.run_key for r in _runs(storage)] == ["other"]
        h.at(T0 + timedelta(seconds=1))  # still refused: FAILURE again, and the schedule runs
        assert [t.status for t in storage.get_ticks("poisoned")] == [TickStatus.FAILURE] * 2
        assert _tick_tags(storage, "hourly") == ["2024-03-04T00:00:00+00:00"]
    h.at(T0 + timedelta(seconds=31))
    assert sorted(r.run_key for r in _runs(storage, **{SENSOR_TAG: "poisoned"})) == ["fine", "poison"]
    state = storage.get_instigator("poisoned")
    assert state is not None and state.cursor == "moved"


def test_an_instigator_whose_tick_cannot_be_recorded_at_all_is_retried(storage: Storage) -> None:
    calls: list[int] = []

    @tg.sensor(job=IMPORT, minimum_interval_seconds=30, default_status=RUNNING)
    def unrecorded(_context: tg.SensorEvaluationContext) -> tg.RunRequest:
        calls.append(1)
        return tg.RunRequest(run_key=f"call-{len(calls)}")

    h = Harness(_defs(schedules=[_hourly()], sensors=[unrecorded]), storage, T0 - timedelta(minutes=1))
    h.at(T0 - timedelta(minutes=1))
    with _refusing(storage, "ticks", "NEW.instigator IS NOT NULL"):  # no tick, not even a FAILURE
        report = h.at(T0 - timedelta(seconds=20))
        assert [f.split(":")[0] for f in report.failures] == ["sensor 'unrecorded'"]
        assert "tick not recorded" in report.failures[0] and "refused by the test" in report.failures[0]
        report = h.at(T0 + timedelta(seconds=5))  # the schedule's 00:00 tick is due
        assert [f.split(":")[0] for f in report.failures] == ["schedule 'hourly'"]
        report = h.at(T0 + timedelta(seconds=10))  # both are tried again
        assert sorted(f.split(":")[0] for f in report.failures) == ["schedule 'hourly'", "sensor 'unrecorded'"]
    assert len(calls) == 3
    assert [r.run_key for r in _runs(storage)] == ["call-1"]
    h.at(T0 + timedelta(seconds=15))  # the database takes ticks again: the 00:00 tick runs now
    assert _tick_tags(storage, "hourly") == ["2024-03-04T00:00:00+00:00"]
    assert len(calls) == 3
    h.at(T0 + timedelta(seconds=40))  # and the sensor at its next interval
    assert len(calls) == 4
    assert [r.run_key for r in _runs(storage, **{SENSOR_TAG: "unrecorded"})] == ["call-1", "call-4"]


def test_stopping_a_sensor_takes_effect_at_the_next_tick(storage: Storage) -> None:
    calls: list[datetime] = []

    @tg.sensor(job=IMPORT, minimum_interval_seconds=30, default_status=RUNNING)
    def polled(_context: tg.SensorEvaluationContext) -> tg.SkipReason:
        calls.append(datetime.now(UTC))
        return tg.SkipReason("nothing")

    h = Harness(_defs(sensors=[polled]), storage, T0)
    h.at(T0)
    storage.set_instigator_status("polled", "sensor", InstigatorStatus.STOPPED, T0 + timedelta(seconds=5))
    for seconds in (30, 60, 90):
        h.at(T0 + timedelta(seconds=seconds))
    assert len(calls) == 1
    storage.set_instigator_status("polled", "sensor", InstigatorStatus.RUNNING, T0 + timedelta(seconds=95))
    h.at(T0 + timedelta(seconds=100))
    assert len(calls) == 2


# -- retention ---------------------------------------------------------------------------------


def test_skipped_ticks_older_than_the_retention_are_purged(storage: Storage) -> None:
    @tg.sensor(job=IMPORT, minimum_interval_seconds=3600, default_status=RUNNING)
    def idle(_context: tg.SensorEvaluationContext) -> tg.SkipReason:
        return tg.SkipReason("nothing")

    @tg.sensor(job=IMPORT, minimum_interval_seconds=3600, default_status=RUNNING)
    def busy(context: tg.SensorEvaluationContext) -> tg.RunRequest:
        if context.cursor == "fail":
            raise RuntimeError("boom")
        context.update_cursor("fail")
        return tg.RunRequest(run_key="once")

    h = Harness(_defs(sensors=[idle, busy]), storage, T0, skipped_tick_retention=timedelta(days=1))
    for hours in range(4):  # 00:00 .. 03:00
        h.at(T0 + timedelta(hours=hours))
    assert len(storage.get_ticks("idle")) == 4
    h.at(T0 + timedelta(days=1, hours=1, minutes=30))  # keeps SKIPPED ticks from 01:30 on
    assert [t.tick_time for t in storage.get_ticks("idle")] == [
        T0 + timedelta(days=1, hours=1, minutes=30),
        T0 + timedelta(hours=3),
        T0 + timedelta(hours=2),
    ]
    busy_ticks = storage.get_ticks("busy", limit=100)
    assert [t.status for t in busy_ticks][-2:] == [TickStatus.FAILURE, TickStatus.SUCCESS]  # never purged
    assert len(busy_ticks) == 5


# -- the leader lease and two beats ------------------------------------------------------------


def test_one_beat_leads_and_the_other_takes_over_when_its_lease_expires(storage: Storage) -> None:
    @tg.sensor(job=IMPORT, minimum_interval_seconds=10, default_status=RUNNING)
    def per_minute(_context: tg.SensorEvaluationContext) -> tg.SkipReason:
        return tg.SkipReason("idle")

    defs = _defs(schedules=[_hourly()], sensors=[per_minute])
    # The lease runs on the database's clock (real seconds), the schedules on the fake one.
    lease = 3.0
    a = Harness(defs, storage, T0, holder="beat-a", lease_seconds=lease)
    b = Harness(defs, storage, T0, holder="beat-b", lease_seconds=lease)
    assert a.at(T0).leader
    assert not b.at(T0 + timedelta(seconds=1)).leader
    assert a.at(T0 + timedelta(seconds=15)).leader  # renews for another `lease` seconds
    assert not b.at(T0 + timedelta(seconds=30)).leader
    assert not b.at(T0 + timedelta(seconds=34)).leader
    # a stops ticking (crashed): b takes over once the lease has expired
    time.sleep(lease + 0.1)
    report = b.at(T0 + timedelta(seconds=36))
    assert report.leader and report.sensor_ticks == [f"per_minute@{(T0 + timedelta(seconds=36)).isoformat()}"]
    assert not a.at(T0 + timedelta(seconds=40)).leader
    assert b.at(T0 + timedelta(hours=1)).schedule_ticks == ["hourly@2024-03-04T01:00:00+00:00"]
    assert not a.at(T0 + timedelta(hours=1, seconds=1)).leader
    assert len(_runs(storage)) == 1
    ticks = storage.get_ticks("per_minute", limit=100)
    assert [t.tick_time for t in ticks][-3:] == [
        T0 + timedelta(seconds=36),
        T0 + timedelta(seconds=15),
        T0,
    ]  # only the leader ticked


def test_a_beat_that_stops_releases_its_lease_at_once(storage: Storage) -> None:
    @tg.sensor(job=IMPORT, minimum_interval_seconds=3600, default_status=RUNNING)
    def hourly_check(_context: tg.SensorEvaluationContext) -> tg.SkipReason:
        return tg.SkipReason("idle")

    defs = _defs(sensors=[hourly_check])
    a = Harness(defs, storage, T0, holder="beat-a", lease_seconds=600)
    stop = threading.Event()
    thread = threading.Thread(target=a.beat.run_forever, args=(stop,))
    thread.start()
    try:
        for _ in range(200):  # until its first tick is recorded
            if storage.get_ticks("hourly_check"):
                break
            threading.Event().wait(0.02)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive() and len(storage.get_ticks("hourly_check")) == 1
    b = Harness(defs, storage, T0 + timedelta(seconds=1), holder="beat-b", lease_seconds=600)
    assert b.at(T0 + timedelta(seconds=1)).leader  # without waiting out a's ten-minute lease


@pytest.mark.parametrize("mode", ["shared-holder", "tiny-lease"])
def test_two_beats_racing_create_one_run_per_tick_and_per_key(storage: Storage, mode: str) -> None:
    """Both beats believe they lead (same holder name, or a lease so short that each takes it
    from the other) and tick at the same moments in two threads."""
    events: list[str] = []

    @tg.sensor(job=IMPORT, minimum_interval_seconds=60, default_status=RUNNING)
    def with_cursor(context: tg.SensorEvaluationContext) -> tg.SensorResult:
        seen = int(context.cursor or 0)
        return tg.SensorResult(run_requests=[tg.RunRequest(run_key=e) for e in events[seen:]], cursor=str(len(events)))

    @tg.sensor(job=IMPORT, minimum_interval_seconds=60, default_status=RUNNING)
    def everything(_context: tg.SensorEvaluationContext) -> list[tg.RunRequest]:
        return [tg.RunRequest(run_key=e) for e in list(events)]

    every_minute = tg.ScheduleDefinition(
        "every_minute", cron_schedule="* * * * *", job=IMPORT, default_status=RUNNING, max_catchup_ticks=5
    )
    defs = _defs(schedules=[every_minute], sensors=[with_cursor, everything])
    other = Storage(storage.url)
    holders = ("shared", "shared") if mode == "shared-holder" else ("beat-a", "beat-b")
    lease = 20.0 if mode == "shared-holder" else 1e-6
    a = Harness(defs, storage, T0, holder=holders[0], lease_seconds=lease)
    b = Harness(defs, other, T0, holder=holders[1], lease_seconds=lease)
    steps = 12
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []
    leaders = {"a": 0, "b": 0}

    def run(name: str, harness: Harness, offset: timedelta) -> None:
        try:
            for step in range(steps):
                barrier.wait()
                if name == "a":
                    events.append(f"e{step}")
                barrier.wait()
                if harness.at(T0 + timedelta(minutes=step) + offset).leader:
                    leaders[name] += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=run, args=("a", a, timedelta(0))),
        threading.Thread(target=run, args=("b", b, timedelta(milliseconds=500))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    other.dispose()
    assert not errors, errors
    assert leaders["a"] + leaders["b"] >= steps and min(leaders.values()) > 0, leaders  # both did lead

    # one more beat tick to collect the last events' runs
    a.at(T0 + timedelta(minutes=steps, seconds=1))
    expected_ticks = [(T0 + timedelta(minutes=m)).isoformat() for m in range(1, steps + 1)]
    assert _tick_tags(storage, "every_minute") == expected_ticks
    for sensor_name in ("with_cursor", "everything"):
        keys = [r.run_key for r in _runs(storage, **{SENSOR_TAG: sensor_name})]
        assert sorted(keys) == sorted(f"e{i}" for i in range(steps)), sensor_name  # each exactly once
    published_runs = {p.run_id for p in [*a.published, *b.published]}
    assert published_runs == {r.run_id for r in _runs(storage)}


def test_two_beats_taking_turns_never_run_a_tick_twice(storage: Storage) -> None:
    @tg.sensor(job=IMPORT, minimum_interval_seconds=1, default_status=RUNNING)
    def same_keys(_context: tg.SensorEvaluationContext) -> list[tg.RunRequest]:
        return [tg.RunRequest(run_key="x"), tg.RunRequest(run_key="y")]

    defs = _defs(schedules=[_hourly()], sensors=[same_keys])
    a = Harness(defs, storage, T0, holder="beat-a", lease_seconds=0.001)
    b = Harness(defs, storage, T0, holder="beat-b", lease_seconds=0.001)
    for minute in range(0, 190, 10):
        now = T0 + timedelta(minutes=minute)
        assert a.at(now).leader
        assert b.at(now + timedelta(seconds=1)).leader
    assert _tick_tags(storage, "hourly") == [
        "2024-03-04T01:00:00+00:00",
        "2024-03-04T02:00:00+00:00",
        "2024-03-04T03:00:00+00:00",
    ]
    assert sorted(r.run_key or "" for r in _runs(storage, **{SENSOR_TAG: "same_keys"})) == ["x", "y"]
