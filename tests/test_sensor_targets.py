"""Which job a schedule's or sensor's RunRequest runs, by Dagster's rules: ``jobs=[...]``,
``job_name=``, no target at all, and ``RunRequest(job_name=...)``. Each sensor is written as a
Dagster user writes it (``import tidegate as dg``) and run by the beat on real storage with a
fake clock; a request that does not fit fails its own tick, and the beat goes on."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import tidegate as dg
from tests.test_beat import Harness
from tidegate.names import SENSOR_TAG, TickStatus
from tidegate.storage.api import Storage

T0 = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)
RUNNING = dg.DefaultSensorStatus.RUNNING


@dg.asset
def orders() -> int:
    return 1


@dg.asset
def customers() -> int:
    return 2


@dg.asset
def report() -> int:
    return 3


orders_job = dg.define_asset_job("orders_job", selection=[orders])
customers_job = dg.define_asset_job("customers_job", selection=[customers])
report_job = dg.define_asset_job("report_job", selection=[report])


def _defs(*, sensors: Sequence[Any] = (), schedules: Sequence[Any] = ()) -> dg.Definitions:
    return dg.Definitions(
        assets=[orders, customers, report], jobs=[report_job, customers_job], sensors=sensors, schedules=schedules
    )


def _jobs_of_runs(storage: Storage, sensor: str) -> list[tuple[str | None, str]]:
    found = [r for r in storage.list_runs(limit=1000) if r.tags.get(SENSOR_TAG) == sensor]
    return sorted((r.run_key, r.job_name) for r in found)


def _last_tick(storage: Storage, name: str) -> tuple[str, str]:
    tick = storage.get_ticks(name)[0]
    return tick.status, tick.error or ""


def test_a_sensor_with_several_jobs_runs_the_job_each_request_names(storage: Storage) -> None:
    @dg.sensor(jobs=[orders_job, customers_job], minimum_interval_seconds=30, default_status=RUNNING)
    def new_rows_sensor(context: dg.SensorEvaluationContext) -> Iterator[dg.RunRequest]:
        yield dg.RunRequest(run_key="o1", job_name="orders_job")
        yield dg.RunRequest(run_key="c1", job_name="customers_job")

    defs = _defs(sensors=[new_rows_sensor])
    assert "orders_job" in defs.jobs  # a targeted job joins Definitions
    Harness(defs, storage, T0).at(T0)
    assert _jobs_of_runs(storage, "new_rows_sensor") == [("c1", "customers_job"), ("o1", "orders_job")]
    assert _last_tick(storage, "new_rows_sensor")[0] == TickStatus.SUCCESS


def test_a_request_without_job_name_to_a_sensor_with_several_jobs_fails_its_tick_and_the_beat_goes_on(
    storage: Storage,
) -> None:
    @dg.sensor(jobs=[orders_job, customers_job], minimum_interval_seconds=30, default_status=RUNNING)
    def ambiguous_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key="x")

    @dg.sensor(job=report_job, minimum_interval_seconds=30, default_status=RUNNING)
    def healthy_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key="r1")

    h = Harness(_defs(sensors=[ambiguous_sensor, healthy_sensor]), storage, T0)
    report = h.at(T0)
    status, error = _last_tick(storage, "ambiguous_sensor")
    assert status == TickStatus.FAILURE
    assert "RunRequestTargetError: sensor 'ambiguous_sensor': targets several jobs (orders_job, customers_job)" in error
    assert "must set job_name" in error
    assert any("ambiguous_sensor" in f for f in report.failures)
    assert _jobs_of_runs(storage, "ambiguous_sensor") == []
    assert _jobs_of_runs(storage, "healthy_sensor") == [("r1", "report_job")]
    h.at(T0 + timedelta(seconds=30))  # evaluated again at its next interval, failing again
    assert [t.status for t in storage.get_ticks("ambiguous_sensor")] == [TickStatus.FAILURE] * 2


def test_a_request_naming_a_job_the_sensor_does_not_target_fails_its_tick(storage: Storage) -> None:
    @dg.sensor(jobs=[orders_job, customers_job], minimum_interval_seconds=30, default_status=RUNNING)
    def wrong_job_sensor(context: dg.SensorEvaluationContext) -> list[dg.RunRequest]:
        return [dg.RunRequest(run_key="o1", job_name="orders_job"), dg.RunRequest(run_key="r1", job_name="report_job")]

    @dg.sensor(job=orders_job, minimum_interval_seconds=30, default_status=RUNNING)
    def single_job_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key="c1", job_name="customers_job")

    @dg.sensor(job=orders_job, minimum_interval_seconds=30, default_status=RUNNING)
    def unknown_job_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key="n1", job_name="no_such_job")

    defs = _defs(sensors=[wrong_job_sensor, single_job_sensor, unknown_job_sensor])
    Harness(defs, storage, T0).at(T0)
    status, error = _last_tick(storage, "wrong_job_sensor")
    assert status == TickStatus.FAILURE
    assert (
        "RunRequestTargetError: sensor 'wrong_job_sensor': RunRequest names job 'report_job', which it does not "
        "target (targets: orders_job, customers_job)"
    ) in error
    assert _jobs_of_runs(storage, "wrong_job_sensor") == []  # the tick's other request is not run either
    status, error = _last_tick(storage, "single_job_sensor")
    assert status == TickStatus.FAILURE
    assert "sensor 'single_job_sensor': RunRequest names job 'customers_job', which it does not target" in error
    status, error = _last_tick(storage, "unknown_job_sensor")
    assert status == TickStatus.FAILURE
    assert "UnknownJobError: sensor 'unknown_job_sensor': RunRequest names job 'no_such_job', which is not" in error


def test_a_sensor_may_target_a_job_by_name_and_a_request_may_repeat_it(storage: Storage) -> None:
    @dg.sensor(job_name="report_job", minimum_interval_seconds=30, default_status=RUNNING)
    def by_name_sensor(context: dg.SensorEvaluationContext) -> Iterator[dg.RunRequest]:
        yield dg.RunRequest(run_key="a")
        yield dg.RunRequest(run_key="b", job_name="report_job")

    assert by_name_sensor.job_name == "report_job"
    Harness(_defs(sensors=[by_name_sensor]), storage, T0).at(T0)
    assert _jobs_of_runs(storage, "by_name_sensor") == [("a", "report_job"), ("b", "report_job")]


def test_a_sensor_without_a_target_may_skip_but_not_request_runs(storage: Storage) -> None:
    notified: list[str] = []

    @dg.sensor(minimum_interval_seconds=30, default_status=RUNNING)
    def notify_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        notified.append(context.cursor or "")
        context.update_cursor("seen")
        return dg.SkipReason("only sends notifications")

    @dg.sensor(target=None, minimum_interval_seconds=30, default_status=RUNNING)
    def targetless_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key="x", job_name="report_job")

    h = Harness(_defs(sensors=[notify_sensor, targetless_sensor]), storage, T0)
    h.at(T0)
    h.at(T0 + timedelta(seconds=30))
    assert notified == ["", "seen"]
    assert _last_tick(storage, "notify_sensor")[0] == TickStatus.SKIPPED
    status, error = _last_tick(storage, "targetless_sensor")
    assert status == TickStatus.FAILURE
    assert "sensor 'targetless_sensor': requested a run but targets no job" in error
    assert storage.list_runs() == []


def test_a_schedule_runs_its_job_named_by_job_name_and_refuses_a_request_for_another(storage: Storage) -> None:
    @dg.schedule(cron_schedule="0 * * * *", job_name="report_job", default_status=RUNNING)
    def hourly_report(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(job_name="report_job")

    @dg.schedule(cron_schedule="0 * * * *", job=orders_job, default_status=RUNNING)
    def hourly_orders(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(job_name="customers_job")

    assert (hourly_report.job_name, hourly_orders.job_name) == ("report_job", "orders_job")
    defs = _defs(schedules=[hourly_report, hourly_orders])
    h = Harness(defs, storage, T0)
    h.at(T0)
    report = h.at(T0 + timedelta(hours=1))
    assert sorted(report.schedule_ticks) == sorted(
        [
            f"hourly_report@{(T0 + timedelta(hours=1)).isoformat()}",
            f"hourly_orders@{(T0 + timedelta(hours=1)).isoformat()}",
        ]
    )
    assert [r.job_name for r in storage.list_runs()] == ["report_job"]
    status, error = _last_tick(storage, "hourly_orders")
    assert status == TickStatus.FAILURE
    assert "schedule 'hourly_orders': RunRequest names job 'customers_job', which it does not target" in error


def test_a_request_may_select_a_subset_of_its_target_but_nothing_outside_it(storage: Storage) -> None:
    sales_job = dg.define_asset_job("sales_job", selection=[orders, customers])

    @dg.sensor(job=sales_job, minimum_interval_seconds=30, default_status=RUNNING)
    def subset_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key="s1", asset_selection=[dg.AssetKey("customers")])

    @dg.sensor(job=sales_job, minimum_interval_seconds=30, default_status=RUNNING)
    def overreaching_job_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key="o1", asset_selection=[dg.AssetKey("customers"), dg.AssetKey("report")])

    @dg.sensor(target=[orders, customers], minimum_interval_seconds=30, default_status=RUNNING)
    def overreaching_selection_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key="o2", asset_selection=[dg.AssetKey("report")])

    sensors = [subset_sensor, overreaching_job_sensor, overreaching_selection_sensor]
    Harness(_defs(sensors=sensors), storage, T0).at(T0)
    [run] = [r for r in storage.list_runs() if r.tags.get(SENSOR_TAG) == "subset_sensor"]
    assert (run.job_name, run.asset_selection) == ("sales_job", ("customers",))
    status, error = _last_tick(storage, "overreaching_job_sensor")
    assert status == TickStatus.FAILURE
    assert "sensor 'overreaching_job_sensor': RunRequest selects 'report', outside job 'sales_job'" in error
    status, error = _last_tick(storage, "overreaching_selection_sensor")
    assert status == TickStatus.FAILURE
    assert "sensor 'overreaching_selection_sensor': RunRequest selects 'report', outside its target selection" in error
    assert len(storage.list_runs()) == 1


def test_a_sensor_may_target_an_asset_selection_by_asset_selection(storage: Storage) -> None:
    @dg.sensor(asset_selection=dg.AssetSelection.assets(orders, customers), default_status=RUNNING)
    def selection_sensor(context: dg.SensorEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key="a")

    Harness(_defs(sensors=[selection_sensor]), storage, T0).at(T0)
    [run] = [r for r in storage.list_runs() if r.tags.get(SENSOR_TAG) == "selection_sensor"]
    assert sorted(run.asset_selection or ()) == ["customers", "orders"]
