"""The UI's browser tests: the ETL example plus a job that runs until a file appears (to cancel
it while running), one that fails until a file appears (to re-execute from failure) and a
sensor that only skips (to stop, start and set the cursor of); a configured asset's job and an op
job (run config in the launch form)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import tidegate as tg
from examples.etl import definitions as etl

CONTROL = Path(os.environ.get("TIDEGATE_UI_TEST_DIR", ".tidegate/ui-test"))


@tg.asset(group_name="ui_test")
def slow_asset() -> int:
    """Waits (at most 60 s) for the file 'release'."""
    deadline = time.monotonic() + 60
    while not (CONTROL / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return 1


@tg.asset(group_name="ui_test")
def flaky_source() -> int:
    """Fails until the file 'fixed' exists."""
    if not (CONTROL / "fixed").exists():
        raise RuntimeError("flaky_source: the file 'fixed' is not there yet")
    return 2


@tg.asset(group_name="ui_test")
def flaky_report(flaky_source: int) -> int:
    return flaky_source * 2


@tg.asset(
    group_name="ui_test", partitions_def=tg.DailyPartitionsDefinition(start_date="2020-01-01", end_date="2026-01-01")
)
def daily_events(context: tg.AssetExecutionContext) -> str:
    """A daily partitioned asset, for the partition grid."""
    return context.partition_key


@tg.asset(group_name="ui_test", partitions_def=daily_events.partitions_def)
def daily_rollup(daily_events: str) -> str:
    return daily_events


class GreetingConfig(tg.Config):
    person_name: str
    times: int = 1


@tg.asset(group_name="ui_test")
def greeting(config: GreetingConfig) -> str:
    return f"hello {config.person_name}" * config.times


@tg.op
def scaled(config: GreetingConfig) -> int:
    return config.times


@tg.job(config={"ops": {"scaled": {"config": {"person_name": "ops", "times": 2}}}})
def scale_job() -> None:
    scaled()


greet_job = tg.define_asset_job(
    "greet_job", selection="greeting", config={"ops": {"greeting": {"config": {"person_name": "everyone"}}}}
)
slow_job = tg.define_asset_job("slow_job", selection="slow_asset")
flaky_job = tg.define_asset_job("flaky_job", selection="flaky_source+")


@tg.sensor(job=slow_job, minimum_interval_seconds=3600)
def quiet_sensor(context: tg.SensorEvaluationContext) -> tg.SkipReason:
    return tg.SkipReason(f"nothing to do (cursor {context.cursor!r})")


# The example's pipeline as its own job (the example's etl_job selects "*", which here would
# take the test assets too).
etl_job = tg.define_asset_job(
    "etl_job", selection="group:ingest,group:clean,group:aggregate,group:report", description="The whole pipeline."
)
daily_etl = tg.ScheduleDefinition(
    name="daily_etl", cron_schedule="0 6 * * *", execution_timezone="Europe/Berlin", target=etl_job
)

defs = tg.Definitions(
    assets=[*etl.defs.assets.values(), slow_asset, flaky_source, flaky_report, daily_events, daily_rollup, greeting],
    jobs=[etl_job, slow_job, flaky_job, greet_job, scale_job],
    schedules=[daily_etl],
    sensors=[quiet_sensor],
    resources=etl.defs.resources,
)
