"""fault_project's assets and jobs plus a sensor that asks for one run of ``victim_job`` per
evaluation, every second (tests/test_outages.py, bench/faults.py): while the broker or the
database is away, its ticks show whether the beat keeps working.

Each evaluation's run key is the next number of its cursor, so a tick committed twice would
make no second run, and a tick never committed makes no run at all.
"""

from __future__ import annotations

import tidegate as tg
from tests.projects.fault_project import ASSETS, JOBS

SENSOR_INTERVAL = 1

victim_job = next(job for job in JOBS if job.name == "victim_job")


@tg.sensor(job=victim_job, minimum_interval_seconds=SENSOR_INTERVAL, default_status=tg.DefaultSensorStatus.RUNNING)
def every_second(context: tg.SensorEvaluationContext) -> tg.SensorResult:
    n = int(context.cursor or "0") + 1
    return tg.SensorResult(run_requests=[tg.RunRequest(run_key=f"tick-{n}")], cursor=str(n))


defs = tg.Definitions(assets=ASSETS, jobs=JOBS, sensors=[every_second])
