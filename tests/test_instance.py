"""``context.instance`` in schedules and sensors: Dagster's read methods (runs with RunsFilter,
run records, the latest materialization, dynamic partitions) on SQLite and PostgreSQL, and
sensors and schedules written as Dagster users write them that use it inside the beat."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import tidegate as dg
from tests.test_beat import Harness
from tidegate.names import SCHEDULE_TAG, SENSOR_TAG, TickStatus
from tidegate.storage.api import Storage

T0 = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)
RUNNING = dg.DefaultSensorStatus.RUNNING


@dg.asset
def daily_orders() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 42, "source": "s3://orders/2024-03-03.csv"})


@dg.asset
def broken() -> int:
    raise RuntimeError("upstream is down")


@dg.asset
def report() -> int:
    return 1


report_job = dg.define_asset_job("report_job", selection=[report])
DEFS = dg.Definitions(assets=[daily_orders, broken, report], jobs=[report_job])


def _queue(storage: Storage, job: str = "report_job", **tags: str) -> str:
    return storage.submit_run(DEFS.plan(job), origin="test", tags=tags).run_id


def _ids(runs: Sequence[Any]) -> list[str]:
    return [r.run_id for r in runs]


def test_get_runs_filters_by_job_status_tags_ids_and_creation_time(storage: Storage) -> None:
    instance = dg.DagsterInstance(storage)
    succeeded = dg.materialize([daily_orders], instance=instance, tags={"team": "sales"}).run_id
    failed = dg.materialize([broken], instance=instance, raise_on_error=False, tags={"team": "ops"}).run_id
    between = datetime.now(UTC)
    # SQLite records created_at to the millisecond: a run created in the same millisecond as
    # ``between`` would be recorded before it. Wait (a condition, at most 1 ms) for the next one.
    next_ms = between.replace(microsecond=between.microsecond // 1000 * 1000) + timedelta(milliseconds=1)
    while datetime.now(UTC) < next_ms:
        time.sleep(0.0002)
    queued = _queue(storage, team="sales", kind="nightly")
    started = _queue(storage, team="ops")
    storage.start_run(started)
    canceled = _queue(storage)
    storage.cancel_run(canceled)

    assert _ids(instance.get_runs()) == [canceled, started, queued, failed, succeeded]  # newest first
    assert _ids(instance.get_runs(limit=2)) == [canceled, started]
    report_runs = instance.get_runs(filters=dg.RunsFilter(job_name="report_job"))
    assert _ids(report_runs) == [canceled, started, queued]
    in_flight = dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTED])
    assert _ids(instance.get_runs(filters=in_flight)) == [started, queued]
    finished = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
    assert _ids(instance.get_runs(filters=dg.RunsFilter(statuses=finished))) == [canceled, failed, succeeded]
    assert _ids(instance.get_runs(filters=dg.RunsFilter(tags={"team": "sales"}))) == [queued, succeeded]
    assert _ids(instance.get_runs(filters=dg.RunsFilter(tags={"team": "sales", "kind": "nightly"}))) == [queued]
    assert _ids(instance.get_runs(filters=dg.RunsFilter(tags={"team": ["ops", "sales"]}))) == [
        started,
        queued,
        failed,
        succeeded,
    ]
    assert _ids(instance.get_runs(filters=dg.RunsFilter(run_ids=[failed, queued, "nope"]))) == [queued, failed]
    assert _ids(instance.get_runs(filters=dg.RunsFilter(created_after=between))) == [canceled, started, queued]
    assert _ids(instance.get_runs(filters=dg.RunsFilter(created_before=between))) == [failed, succeeded]
    naive = between.replace(tzinfo=None)  # naive datetimes are UTC
    assert _ids(instance.get_runs(filters=dg.RunsFilter(created_after=naive))) == [canceled, started, queued]
    assert instance.get_runs_count(dg.RunsFilter(job_name="report_job")) == 3
    assert instance.get_runs_count() == 5

    run = instance.get_run_by_id(succeeded)
    assert run is not None
    assert (run.status, run.is_success, run.is_finished) == (dg.DagsterRunStatus.SUCCESS, True, True)
    assert run.tags["team"] == "sales" and run.job_name == "__ASSET_JOB"
    stopped = instance.get_run_by_id(canceled)
    assert stopped is not None and stopped.is_failure_or_canceled and not stopped.is_failure
    assert instance.get_run_by_id("no-such-run") is None


def test_run_records_carry_timestamps_and_page_with_a_cursor(storage: Storage) -> None:
    instance = dg.DagsterInstance(storage)
    first = dg.materialize([daily_orders], instance=instance).run_id
    second = _queue(storage)
    third = _queue(storage)

    records = instance.get_run_records(filters=dg.RunsFilter(run_ids=[first]))
    assert len(records) == 1
    record = records[0]
    assert record.dagster_run.run_id == first and record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert record.start_time is not None and record.end_time is not None
    assert record.create_timestamp.timestamp() <= record.start_time <= record.end_time
    assert record.update_timestamp.timestamp() == pytest.approx(record.end_time)
    queued = instance.get_run_record_by_id(third)
    assert queued is not None and (queued.start_time, queued.end_time) == (None, None)

    assert [r.dagster_run.run_id for r in instance.get_run_records(ascending=True)] == [first, second, third]
    page = instance.get_run_records(limit=2)
    assert [r.dagster_run.run_id for r in page] == [third, second]
    rest = instance.get_run_records(limit=2, cursor=page[-1].dagster_run.run_id)
    assert [r.dagster_run.run_id for r in rest] == [first]
    assert _ids(instance.get_runs(cursor=third)) == [second, first]
    by_end = instance.get_run_records(order_by="end_time")  # runs that never ended come last
    assert [r.dagster_run.run_id for r in by_end] == [first, third, second]
    after_first = instance.get_run_records(order_by="end_time", cursor=first)
    assert [r.dagster_run.run_id for r in after_first] == [third, second]
    after_third = instance.get_run_records(order_by="end_time", cursor=third)
    assert [r.dagster_run.run_id for r in after_third] == [second]
    oldest_end_first = instance.get_run_records(order_by="end_time", ascending=True, cursor=first)
    assert [r.dagster_run.run_id for r in oldest_end_first] == [second, third]
    by_update = instance.get_run_records(order_by="update_timestamp", limit=1)
    assert [r.dagster_run.run_id for r in by_update] == [third]
    with pytest.raises(dg.InvalidInvocationError, match="cannot order by 'storage_id'"):
        instance.get_run_records(order_by="storage_id")
    with pytest.raises(dg.InvalidInvocationError, match="cursor run 'gone' not found"):
        instance.get_runs(cursor="gone")
    with pytest.raises(dg.InvalidInvocationError, match="unknown run status 'NOT_STARTED'"):
        dg.RunsFilter(statuses=["NOT_STARTED"])


def test_the_latest_materialization_event_and_dynamic_partitions(storage: Storage) -> None:
    instance = dg.DagsterInstance(storage)
    assert instance.get_latest_materialization_event(dg.AssetKey("daily_orders")) is None
    dg.materialize([daily_orders], instance=instance)
    latest = dg.materialize([daily_orders], instance=instance).run_id
    event = instance.get_latest_materialization_event(dg.AssetKey("daily_orders"))
    assert event is not None
    assert (event.run_id, event.job_name, event.step_key) == (latest, "__ASSET_JOB", "daily_orders")
    assert abs(event.timestamp - datetime.now(UTC).timestamp()) < 60
    materialization = event.asset_materialization
    assert materialization is not None
    assert materialization.asset_key == dg.AssetKey("daily_orders") and materialization.partition is None
    assert materialization.metadata["rows"].value == 42
    assert materialization.metadata["source"].value == "s3://orders/2024-03-03.csv"
    assert event.dagster_event is not None and event.dagster_event.asset_key == dg.AssetKey("daily_orders")
    both = instance.get_latest_materialization_events([dg.AssetKey("daily_orders"), "report"])
    assert both[dg.AssetKey("report")] is None and both[dg.AssetKey("daily_orders")] == event

    storage.add_dynamic_partitions("files", ["a.csv", "b.csv"])
    assert list(instance.get_dynamic_partitions("files")) == ["a.csv", "b.csv"]
    assert instance.has_dynamic_partition("files", "b.csv")
    assert not instance.has_dynamic_partition("files", "c.csv")
    assert not instance.has_dynamic_partition("other", "a.csv")
    assert list(instance.get_dynamic_partitions("other")) == []


def test_a_sensor_reads_the_latest_materialization_through_context_instance(storage: Storage) -> None:
    @dg.sensor(job=report_job, minimum_interval_seconds=30, default_status=RUNNING)
    def report_on_new_orders(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        event = context.instance.get_latest_materialization_event(dg.AssetKey("daily_orders"))
        if event is None:
            return dg.SkipReason("daily_orders was never materialized")
        if event.run_id == context.cursor:
            return dg.SkipReason("no new materialization of daily_orders")
        context.update_cursor(event.run_id)
        rows = event.asset_materialization.metadata["rows"].value
        return dg.RunRequest(run_key=event.run_id, tags={"rows": str(rows)})

    instance = dg.DagsterInstance(storage)
    h = Harness(dg.Definitions(assets=[daily_orders, report], sensors=[report_on_new_orders]), storage, T0)
    h.at(T0)
    assert storage.get_ticks("report_on_new_orders")[0].skip_reason == "daily_orders was never materialized"
    orders_run = dg.materialize([daily_orders], instance=instance).run_id
    h.at(T0 + timedelta(seconds=30))
    h.at(T0 + timedelta(seconds=60))
    sensor_runs = [r for r in storage.list_runs() if r.tags.get(SENSOR_TAG) == "report_on_new_orders"]
    assert [(r.run_key, r.job_name, r.tags["rows"]) for r in sensor_runs] == [(orders_run, "report_job", "42")]
    assert [t.status for t in storage.get_ticks("report_on_new_orders")] == [
        TickStatus.SKIPPED,
        TickStatus.SUCCESS,
        TickStatus.SKIPPED,
    ]


def test_a_schedule_skips_while_its_previous_run_is_in_flight(storage: Storage) -> None:
    @dg.schedule(cron_schedule="0 * * * *", job=report_job, default_status=dg.DefaultScheduleStatus.RUNNING)
    def hourly_unless_busy(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        in_flight = context.instance.get_run_records(
            filters=dg.RunsFilter(
                job_name="report_job", statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTED]
            ),
            limit=1,
        )
        if in_flight:
            return dg.SkipReason(f"run {in_flight[0].dagster_run.run_id} is still in flight")
        return dg.RunRequest()

    h = Harness(dg.Definitions(assets=[report], schedules=[hourly_unless_busy]), storage, T0)
    h.at(T0)
    h.at(T0 + timedelta(hours=1))
    runs = [r for r in storage.list_runs() if r.tags.get(SCHEDULE_TAG) == "hourly_unless_busy"]
    assert len(runs) == 1
    h.at(T0 + timedelta(hours=2))
    assert storage.get_ticks("hourly_unless_busy")[0].skip_reason == f"run {runs[0].run_id} is still in flight"
    storage.cancel_run(runs[0].run_id)
    h.at(T0 + timedelta(hours=3))
    assert len([r for r in storage.list_runs() if r.tags.get(SCHEDULE_TAG) == "hourly_unless_busy"]) == 2


def test_a_context_without_an_instance_says_how_to_give_one() -> None:
    context = dg.build_sensor_context()
    with pytest.raises(dg.InvalidInvocationError, match=r"build_sensor_context\(instance=...\)"):
        context.instance.get_runs()
    with pytest.raises(dg.InvalidInvocationError, match=r"build_schedule_context\(instance=...\)"):
        dg.build_schedule_context().instance.get_runs()


def test_dagster_instance_get_opens_the_configured_database(
    storage: Storage, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _queue(storage)
    monkeypatch.setenv("TIDEGATE_DATABASE_URL", database_url)
    instance = dg.DagsterInstance.get()
    try:
        assert _ids(instance.get_runs()) == [run_id]
    finally:
        instance.storage.dispose()
