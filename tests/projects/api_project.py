"""A small project for the webserver tests: plain and partitioned assets, a failing asset,
jobs, a configured asset and an op job (run config), a schedule, a sensor and an asset sensor."""

from __future__ import annotations

import tidegate as tg

daily = tg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-06")


@tg.asset
def numbers(context: tg.AssetExecutionContext) -> list[int]:
    context.log.info("making numbers")
    return [1, 2, 3]


@tg.asset
def total(numbers: list[int]) -> int:
    return sum(numbers)


@tg.asset
def broken() -> int:
    raise ValueError("broken asset fails on purpose")


@tg.asset(partitions_def=daily)
def daily_sales(context: tg.AssetExecutionContext) -> int:
    return int(context.partition_key[-2:])


class GreetingConfig(tg.Config):
    person_name: str
    times: int = 1


@tg.asset
def greeting(config: GreetingConfig) -> str:
    return f"hello {config.person_name}" * config.times


class ScaleConfig(tg.Config):
    factor: int


@tg.op
def base_value() -> int:
    return 2


@tg.op
def scaled(config: ScaleConfig, value: int) -> int:
    return value * config.factor


@tg.job(config={"ops": {"scaled": {"config": {"factor": 3}}}})
def scale_job() -> None:
    scaled(base_value())


external = tg.AssetSpec("external_feed")

numbers_job = tg.define_asset_job("numbers_job", "numbers+")
broken_job = tg.define_asset_job("broken_job", "broken")
daily_job = tg.define_asset_job("daily_job", "daily_sales")
greet_job = tg.define_asset_job(
    "greet_job", [greeting], config=tg.RunConfig(ops={"greeting": GreetingConfig(person_name="everyone")})
)


@tg.schedule(cron_schedule="0 6 * * *", job=numbers_job)
def morning(context: tg.ScheduleEvaluationContext) -> tg.RunRequest:
    return tg.RunRequest(run_key=context.scheduled_execution_time.isoformat())


@tg.sensor(job=numbers_job, minimum_interval_seconds=30)
def every_call(context: tg.SensorEvaluationContext) -> tg.RunRequest:
    count = int(context.cursor or "0") + 1
    context.update_cursor(str(count))
    return tg.RunRequest(run_key=f"call-{count}")


@tg.asset_sensor(asset_key=tg.AssetKey("external_feed"), job=numbers_job)
def on_feed(context: tg.SensorEvaluationContext, asset_event: tg.EventLogEntry) -> tg.RunRequest:
    return tg.RunRequest()


defs = tg.Definitions(
    assets=[numbers, total, broken, daily_sales, greeting, external],
    jobs=[numbers_job, broken_job, daily_job, greet_job, scale_job],
    schedules=[morning],
    sensors=[every_call, on_feed],
)
