"""Assets whose backfills run a range of partitions in one run (BackfillPolicy.single_run()),
and one that fails on a chosen partition, for the partition status counts."""

from __future__ import annotations

import os

import tidegate as tg

daily = tg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-11")


@tg.asset(partitions_def=daily, backfill_policy=tg.BackfillPolicy.single_run())
def events(context: tg.AssetExecutionContext) -> dict[str, int]:
    window = context.partition_time_window
    context.add_output_metadata({"keys": list(context.partition_keys), "window_days": (window.end - window.start).days})
    return {key: int(key[-2:]) for key in context.partition_keys}


@tg.asset(partitions_def=daily, backfill_policy=tg.BackfillPolicy.single_run())
def event_totals(context: tg.AssetExecutionContext, events: dict[str, int]) -> tg.MaterializeResult:
    first, last = context.partition_key_range.start, context.partition_key_range.end
    return tg.MaterializeResult(metadata={"range": f"{first}..{last}", "total": sum(events.values())})


@tg.asset(partitions_def=daily)
def fragile(context: tg.AssetExecutionContext) -> int:
    if context.partition_key == os.environ.get("RANGE_PROJECT_FAIL_ON"):
        raise ValueError(f"bad day {context.partition_key}")
    return 1


@tg.asset(partitions_def=daily, backfill_policy=tg.BackfillPolicy.single_run())
def lopsided(context: tg.AssetExecutionContext) -> dict[str, int]:
    return {context.partition_keys[0]: 1}  # one value for a range of several partitions


defs = tg.Definitions(
    assets=[events, event_totals, fragile, lopsided],
    jobs=[
        tg.define_asset_job("events_job", "events+"),
        tg.define_asset_job("fragile_job", "fragile"),
        tg.define_asset_job("lopsided_job", "lopsided"),
    ],
)
