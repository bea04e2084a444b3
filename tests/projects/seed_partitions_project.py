"""The seed lesson's dynamically partitioned pipeline (003: "a sensor to react to file system
events and drive dynamic partitions"), with only the import line changed, plus a 30-day
partitioned job for the backfill test. Paths and timings come from the environment."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import tidegate as dg

INBOX = Path(os.environ.get("SEED_INBOX", "/nonexistent"))

file_partitions = dg.DynamicPartitionsDefinition(name="source_files")


@dg.asset(partitions_def=file_partitions)
def import_file(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    lines = (INBOX / context.partition_key).read_text().splitlines()
    return dg.MaterializeResult(metadata={"rows": len(lines), "first": lines[0] if lines else ""})


import_dynamic_partition_job = dg.define_asset_job("import_dynamic_partition_job", selection=[import_file])


@dg.sensor(
    target=import_dynamic_partition_job, minimum_interval_seconds=0.2, default_status=dg.DefaultSensorStatus.RUNNING
)
def dynamic_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    previous_state = json.loads(context.cursor) if context.cursor else {}
    current_state = dict(previous_state)
    runs_to_request = []
    new_files = []
    for filename in sorted(os.listdir(INBOX)):
        if filename not in previous_state:
            current_state[filename] = os.path.getmtime(INBOX / filename)
            new_files.append(filename)
            runs_to_request.append(dg.RunRequest(run_key=filename, partition_key=filename))
    return dg.SensorResult(
        run_requests=runs_to_request,
        cursor=json.dumps(current_state),
        dynamic_partitions_requests=[file_partitions.build_add_request(new_files)] if new_files else [],
    )


days = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-31")


@dg.asset(partitions_def=days)
def daily_extract(context: dg.AssetExecutionContext) -> int:
    time.sleep(float(os.environ.get("SEED_STEP_SECONDS", "0.3")))
    return int(context.partition_key[-2:])


daily_job = dg.define_asset_job("daily_job", selection=[daily_extract])

defs = dg.Definitions(
    assets=[import_file, daily_extract], jobs=[import_dynamic_partition_job, daily_job], sensors=[dynamic_sensor]
)
