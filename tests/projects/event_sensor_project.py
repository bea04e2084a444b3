"""A project run by real ``tidegate beat`` and worker processes (tests/test_event_sensor_processes.py).

* ``on_each_day`` (an asset sensor) requests one ``summary_job`` run per materialization of a
  partition of ``daily``; ``on_latest_day`` is the same with ``latest_only=True``.
* ``on_pair`` (a multi-asset sensor) requests one run each time both ``left`` and ``right``
  were materialized since its last run, keyed by its advanced cursor.
* ``on_failure`` (a run-failure sensor) requests one ``notify_job`` run per failed run,
  tagged with the failed run's id.

Every sensor runs by default, every ``EVENT_PROJECT_INTERVAL`` seconds (default 0.3).
"""

from __future__ import annotations

import os

import tidegate as tg

INTERVAL = float(os.environ.get("EVENT_PROJECT_INTERVAL", "0.3"))
RUNNING = tg.DefaultSensorStatus.RUNNING
DAYS = tg.StaticPartitionsDefinition([f"2024-01-{d:02d}" for d in range(1, 11)])

daily = tg.AssetSpec("daily", partitions_def=DAYS)
left = tg.AssetSpec("left")
right = tg.AssetSpec("right")


@tg.asset
def summary() -> int:
    return 1


@tg.asset
def notify() -> int:
    return 1


@tg.asset
def broken() -> int:
    raise RuntimeError("the warehouse is down")


summary_job = tg.define_asset_job("summary_job", [summary])
notify_job = tg.define_asset_job("notify_job", [notify])


@tg.asset_sensor(asset_key="daily", job=summary_job, minimum_interval_seconds=INTERVAL, default_status=RUNNING)
def on_each_day(context: tg.SensorEvaluationContext, asset_event: tg.EventLogEntry) -> tg.RunRequest:
    return tg.RunRequest(tags={"day": asset_event.dagster_event.partition})


@tg.asset_sensor(
    asset_key="daily", job=summary_job, minimum_interval_seconds=INTERVAL, default_status=RUNNING, latest_only=True
)
def on_latest_day(context: tg.SensorEvaluationContext, asset_event: tg.EventLogEntry) -> tg.RunRequest:
    return tg.RunRequest(tags={"day": asset_event.dagster_event.partition})


@tg.multi_asset_sensor(
    monitored_assets=["left", "right"], job=summary_job, minimum_interval_seconds=INTERVAL, default_status=RUNNING
)
def on_pair(context: tg.MultiAssetSensorEvaluationContext) -> tg.SensorResult | None:
    latest = context.latest_materialization_records_by_key()
    if not all(latest.values()):
        return None
    context.advance_all_cursors()
    return tg.SensorResult(run_requests=[tg.RunRequest(run_key=context.cursor)])


@tg.run_failure_sensor(request_job=notify_job, minimum_interval_seconds=INTERVAL, default_status=RUNNING)
def on_failure(context: tg.RunFailureSensorContext) -> tg.RunRequest | tg.SkipReason:
    if context.dagster_run.job_name == "notify_job":
        return tg.SkipReason("no notification about a notification")
    return tg.RunRequest(tags={"failed_run": context.dagster_run.run_id})


defs = tg.Definitions(
    assets=[daily, left, right, summary, notify, broken],
    jobs=[summary_job, notify_job],
    sensors=[on_each_day, on_latest_day, on_pair, on_failure],
)
