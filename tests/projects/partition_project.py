"""A daily-partitioned job for the backfill tests."""

from __future__ import annotations

import tidegate as tg

daily = tg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-11")


@tg.asset(partitions_def=daily)
def daily_sales(context: tg.AssetExecutionContext) -> int:
    return int(context.partition_key[-2:])


@tg.asset(partitions_def=daily)
def daily_report(context: tg.AssetExecutionContext, daily_sales: int) -> tg.MaterializeResult:
    return tg.MaterializeResult(metadata={"sales": daily_sales, "partition": context.partition_key})


defs = tg.Definitions(assets=[daily_sales, daily_report], jobs=[tg.define_asset_job("daily_job", "daily_sales+")])
