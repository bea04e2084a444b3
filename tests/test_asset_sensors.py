"""Asset sensors on real storage (SQLite and PostgreSQL), stepped by the beat with a fake clock:
one call per materialization in order, Dagster's latest-only mode, reported materializations,
the event log's horizon under concurrent transactions, and backlogs worked through at once."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert

import tidegate as tg
from tests.support import truncate_all
from tests.test_beat import RUNNING, T0, Harness
from tidegate.definitions import event_sensor
from tidegate.names import SENSOR_TAG, TickStatus
from tidegate.storage import events as event_log
from tidegate.storage.api import Storage
from tidegate.storage.schema import materializations

DAYS = tg.StaticPartitionsDefinition([f"2024-01-{d:02d}" for d in range(1, 11)])


@tg.asset(partitions_def=DAYS)
def upstream() -> int:
    return 1


@tg.asset
def downstream() -> int:
    return 2


DOWNSTREAM_JOB = tg.define_asset_job("downstream_job", [downstream])


def _sensor(calls: list[tuple[str | None, str | None]], **kwargs: Any) -> tg.SensorDefinition:
    @tg.asset_sensor(asset_key=tg.AssetKey("upstream"), job=DOWNSTREAM_JOB, default_status=RUNNING, **kwargs)
    def on_upstream(context: tg.SensorEvaluationContext, asset_event: tg.EventLogEntry) -> tg.RunRequest:
        partition = asset_event.dagster_event.partition if asset_event.dagster_event else None
        calls.append((partition, context.cursor))
        return tg.RunRequest(run_key=str(asset_event.storage_id), tags={"upstream_partition": partition or ""})

    return on_upstream


def _defs(sensor: tg.SensorDefinition) -> tg.Definitions:
    return tg.Definitions(assets=[upstream, downstream], jobs=[DOWNSTREAM_JOB], sensors=[sensor])


def _sensor_runs(storage: Storage, name: str) -> list[Any]:
    runs = [r for r in storage.list_runs(limit=1000) if r.tags.get(SENSOR_TAG) == name]
    return sorted(runs, key=lambda r: (r.created_at, r.run_id))


def test_ten_partitions_between_two_ticks_are_ten_calls_in_order(storage: Storage) -> None:
    calls: list[tuple[str | None, str | None]] = []
    h = Harness(_defs(_sensor(calls)), storage, T0)
    h.at(T0)  # first start, nothing materialized yet: the cursor starts at 0
    assert calls == [] and storage.get_instigator("on_upstream").cursor == "0"
    keys = DAYS.get_partition_keys()
    ids = [storage.report_materialization("upstream", partition_key=k).id for k in keys]
    h.at(T0 + timedelta(seconds=30))
    assert [c[0] for c in calls] == keys
    assert [c[1] for c in calls] == ["0", *map(str, ids[:-1])]  # context.cursor: the one before, as in Dagster
    runs = _sensor_runs(storage, "on_upstream")
    assert [r.tags["upstream_partition"] for r in runs] == keys
    assert {r.job_name for r in runs} == {"downstream_job"}
    assert storage.get_instigator("on_upstream").cursor == str(ids[-1])
    h.at(T0 + timedelta(seconds=60))  # nothing new: no call, no run
    assert len(calls) == 10 and len(_sensor_runs(storage, "on_upstream")) == 10
    assert storage.get_ticks("on_upstream", limit=1)[0].skip_reason == "no new materialization of upstream"


def test_latest_only_is_daggers_merge_to_the_newest(storage: Storage) -> None:
    calls: list[tuple[str | None, str | None]] = []
    h = Harness(_defs(_sensor(calls, latest_only=True)), storage, T0)
    h.at(T0)
    for key in DAYS.get_partition_keys():
        storage.report_materialization("upstream", partition_key=key)
    h.at(T0 + timedelta(seconds=30))
    assert [c[0] for c in calls] == ["2024-01-10"]
    assert len(_sensor_runs(storage, "on_upstream")) == 1


def test_first_start_handles_the_newest_existing_materialization_then_each_later_one(storage: Storage) -> None:
    calls: list[tuple[str | None, str | None]] = []
    storage.report_materialization("upstream", partition_key="2024-01-01")
    storage.report_materialization("upstream", partition_key="2024-01-02")
    h = Harness(_defs(_sensor(calls)), storage, T0)
    h.at(T0)
    assert calls == [("2024-01-02", None)]
    storage.report_materialization("upstream", partition_key="2024-01-03")
    h.at(T0 + timedelta(seconds=30))
    assert [c[0] for c in calls] == ["2024-01-02", "2024-01-03"]


def test_materializations_of_runs_and_metadata_reach_the_event(storage: Storage) -> None:
    seen: list[Any] = []

    @tg.asset
    def orders() -> tg.MaterializeResult:
        return tg.MaterializeResult(metadata={"rows": 42})

    @tg.asset_sensor(asset_key="orders", job=DOWNSTREAM_JOB, default_status=RUNNING)
    def on_orders(context: tg.SensorEvaluationContext, asset_event: tg.EventLogEntry) -> tg.SkipReason:
        seen.append(asset_event)
        return tg.SkipReason("seen")

    defs = tg.Definitions(assets=[orders, downstream], jobs=[DOWNSTREAM_JOB], sensors=[on_orders])
    h = Harness(defs, storage, T0)
    h.at(T0)
    run_id = tg.materialize([orders], instance=tg.DagsterInstance(storage)).run_id
    h.at(T0 + timedelta(seconds=30))
    [event] = seen
    assert (event.run_id, event.job_name, event.step_key) == (run_id, "__ASSET_JOB", "orders")
    materialization = event.dagster_event.event_specific_data.materialization
    assert materialization.metadata["rows"].value == 42 and materialization.asset_key == tg.AssetKey("orders")
    assert storage.get_ticks("on_orders", limit=1)[0].skip_reason == "seen"


def test_a_backlog_bigger_than_one_tick_is_worked_through_at_once(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_sensor, "MAX_REQUESTS_PER_TICK", 3)
    calls: list[tuple[str | None, str | None]] = []
    h = Harness(_defs(_sensor(calls, minimum_interval_seconds=3600)), storage, T0)
    h.at(T0)
    for key in DAYS.get_partition_keys():
        storage.report_materialization("upstream", partition_key=key)
    for step in range(4):  # due again at once after each full tick, not an hour later
        h.at(T0 + timedelta(seconds=3600 + step))
    assert [c[0] for c in calls] == DAYS.get_partition_keys()
    ticks = storage.get_ticks("on_upstream", limit=10)
    assert [len(t.run_ids) for t in reversed(ticks)] == [0, 3, 3, 3, 1]
    assert all(t.status == TickStatus.SUCCESS for t in ticks[:4])


def test_a_failing_call_moves_no_cursor_and_the_events_are_handled_after_the_fix(storage: Storage) -> None:
    broken = {"on": True}

    @tg.asset_sensor(asset_key="upstream", job=DOWNSTREAM_JOB, default_status=RUNNING)
    def flaky(context: tg.SensorEvaluationContext, asset_event: tg.EventLogEntry) -> tg.RunRequest:
        if broken["on"] and asset_event.dagster_event.partition == "2024-01-02":
            raise RuntimeError("downstream system is down")
        return tg.RunRequest(run_key=asset_event.dagster_event.partition)

    h = Harness(_defs(flaky), storage, T0)
    h.at(T0)
    for key in ("2024-01-01", "2024-01-02", "2024-01-03"):
        storage.report_materialization("upstream", partition_key=key)
    h.at(T0 + timedelta(seconds=30))
    assert storage.get_ticks("flaky", limit=1)[0].status == TickStatus.FAILURE
    assert storage.get_instigator("flaky").cursor == "0" and _sensor_runs(storage, "flaky") == []
    broken["on"] = False
    h.at(T0 + timedelta(seconds=60))
    assert [r.run_key for r in _sensor_runs(storage, "flaky")] == ["2024-01-01", "2024-01-02", "2024-01-03"]


def test_an_asset_sensor_function_may_take_no_arguments(storage: Storage) -> None:
    @tg.asset_sensor(asset_key=tg.AssetKey("upstream"), job_name="downstream_job", default_status=RUNNING)
    def bare() -> tg.RunRequest:
        return tg.RunRequest()

    h = Harness(_defs(bare), storage, T0)
    h.at(T0)
    storage.report_materialization("upstream", partition_key="2024-01-01")
    storage.report_materialization("upstream", partition_key="2024-01-02")
    h.at(T0 + timedelta(seconds=30))
    assert len(_sensor_runs(storage, "bare")) == 2


def test_returning_a_cursor_from_an_asset_sensor_is_a_typed_error(storage: Storage) -> None:
    @tg.asset_sensor(asset_key="upstream", job=DOWNSTREAM_JOB, default_status=RUNNING)
    def sets_cursor(context: tg.SensorEvaluationContext, asset_event: tg.EventLogEntry) -> tg.SensorResult:
        return tg.SensorResult(cursor="mine")

    h = Harness(_defs(sets_cursor), storage, T0)
    storage.report_materialization("upstream", partition_key="2024-01-01")
    h.at(T0)
    tick = storage.get_ticks("sets_cursor", limit=1)[0]
    assert tick.status == TickStatus.FAILURE and "an event sensor's cursor is the id" in (tick.error or "")


def test_get_event_records_reads_after_a_cursor_as_in_dagster(storage: Storage) -> None:
    instance = tg.DagsterInstance(storage)
    ids = [storage.report_materialization("upstream", partition_key=k).id for k in DAYS.get_partition_keys()[:4]]
    storage.report_materialization("other")
    records = instance.get_event_records(
        tg.EventRecordsFilter(
            event_type=tg.DagsterEventType.ASSET_MATERIALIZATION, asset_key=tg.AssetKey("upstream"), after_cursor=ids[0]
        ),
        ascending=True,
    )
    assert [r.storage_id for r in records] == ids[1:]
    assert [r.partition_key for r in records] == ["2024-01-02", "2024-01-03", "2024-01-04"]
    newest = instance.get_event_records(
        tg.EventRecordsFilter(event_type="ASSET_MATERIALIZATION", asset_key="upstream"), limit=1
    )
    assert [r.storage_id for r in newest] == [ids[-1]]
    page = instance.fetch_materializations(tg.AssetKey("upstream"), limit=3, ascending=True)
    assert [r.storage_id for r in page.records] == ids[:3] and page.has_more
    rest = instance.fetch_materializations(tg.AssetKey("upstream"), limit=3, cursor=page.cursor, ascending=True)
    assert [r.storage_id for r in rest.records] == ids[3:] and not rest.has_more
    with pytest.raises(tg.InvalidInvocationError, match="unknown event_type 'MATERIALISED'"):
        tg.EventRecordsFilter(event_type="MATERIALISED")


# -- the horizon -----------------------------------------------------------------------------------


def _insert_materialization(conn: Any, partition: str) -> int:
    row = conn.execute(
        insert(materializations)
        .values(asset_key="upstream", partition_key=partition, run_id="", step_key="", metadata={}, timestamp=T0)
        .returning(materializations.c.id)
    )
    return int(row.scalar_one())


def test_an_event_committed_late_with_a_smaller_id_is_not_skipped_on_postgresql(pg_url: str) -> None:
    """Two concurrent transactions: the one holding the smaller id commits last. A reader
    between the commits must not return the larger id (a cursor moved there would skip the
    smaller one for ever); after the second commit both are read, in order. (PostgreSQL only:
    SQLite has one writer at a time, so its ids commit in order.)"""
    truncate_all(pg_url)
    storage = Storage.open(pg_url, upgrade=True)
    try:
        instance = tg.DagsterInstance(storage)
        records_filter = tg.EventRecordsFilter(event_type="ASSET_MATERIALIZATION", asset_key="upstream", after_cursor=0)
        slow = storage.engine.connect()
        slow_tx = slow.begin()
        smaller = _insert_materialization(slow, "2024-01-01")
        with storage.engine.begin() as fast:
            larger = _insert_materialization(fast, "2024-01-02")
        assert smaller < larger
        assert event_log.horizon(storage.engine, "materializations", wait_seconds=0.0) < smaller
        assert list(instance.get_event_records(records_filter, ascending=True)) == []

        def commit_later() -> None:
            slow_tx.commit()

        timer = threading.Timer(0.02, commit_later)
        timer.start()
        timer.join()
        slow.close()
        records = instance.get_event_records(records_filter, ascending=True)
        assert [r.storage_id for r in records] == [smaller, larger]

    finally:
        storage.dispose()


def test_the_horizon_is_the_newest_id_when_nothing_is_in_flight(storage: Storage) -> None:
    assert event_log.horizon(storage.engine, "materializations") == 0
    ids = [storage.report_materialization("upstream", partition_key=k).id for k in DAYS.get_partition_keys()[:3]]
    assert event_log.horizon(storage.engine, "materializations") == ids[-1]
