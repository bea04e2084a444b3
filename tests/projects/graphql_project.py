"""The project served by the GraphQL tests (tests/test_graphql.py): a two-asset job, a
partitioned job, a job whose asset takes config, a sensor and a schedule."""

from __future__ import annotations

import tidegate as tg

regions = tg.StaticPartitionsDefinition(["eu", "us"])


@tg.asset
def orders() -> list[int]:
    return [1, 2, 3]


@tg.asset
def order_total(orders: list[int]) -> int:
    return sum(orders)


@tg.asset(partitions_def=regions)
def regional_sales(context: tg.AssetExecutionContext) -> str:
    return context.partition_key


class DiscountConfig(tg.Config):
    rate: float
    label: str = "sale"


@tg.asset
def discount(config: DiscountConfig) -> float:
    return config.rate


orders_job = tg.define_asset_job("orders_job", ["orders", "order_total"])
regional_job = tg.define_asset_job("regional_job", "regional_sales")
discount_job = tg.define_asset_job("discount_job", "discount", config={"ops": {"discount": {"config": {"rate": 0.1}}}})


@tg.sensor(job=orders_job, minimum_interval_seconds=30)
def orders_sensor(context: tg.SensorEvaluationContext) -> tg.SkipReason:
    return tg.SkipReason("nothing new")


nightly = tg.ScheduleDefinition(name="nightly", cron_schedule="0 2 * * *", job=orders_job)

defs = tg.Definitions(
    assets=[orders, order_total, regional_sales, discount],
    jobs=[orders_job, regional_job, discount_job],
    sensors=[orders_sensor],
    schedules=[nightly],
)
