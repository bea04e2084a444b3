"""A small project for tests/test_input_limits.py: the command line's ways in (job launch,
materialize, sensor cursor, assets report) given oversized and odd values."""

from __future__ import annotations

import tidegate as tg

files = tg.DynamicPartitionsDefinition(name="files")


@tg.asset
def raw() -> int:
    return 1


@tg.asset(partitions_def=files)
def imported(context: tg.AssetExecutionContext) -> str:
    return context.partition_key


raw_job = tg.define_asset_job("raw_job", "raw")
files_job = tg.define_asset_job("files_job", "imported")
vendor_feed = tg.AssetSpec("vendor_feed")


@tg.sensor(target=raw_job, minimum_interval_seconds=30)
def watch(context: tg.SensorEvaluationContext) -> tg.SkipReason:
    return tg.SkipReason("nothing to watch")


defs = tg.Definitions(assets=[raw, imported, vendor_feed], jobs=[raw_job, files_job], sensors=[watch])
