"""A project run by real ``tidegate beat`` processes (tests/test_beat_processes.py).

* ``counter_sensor`` keeps an integer cursor N. Each tick requests ``RunRequest(run_key=str(N))``
  (and ``N + 1`` .. ``N + B - 1`` with a batch B > 1) plus a request re-using the previous
  tick's last key ``str(N - 1)`` (which must create nothing), and moves the cursor to N + B.
  If every tick is committed exactly once, together with its cursor, the runs' keys are
  exactly 0..cursor-1, each once.
* ``minutely`` is a ``* * * * *`` schedule: at most one run per tick time.

Both run by default. Environment: ``BEAT_PROJECT_SENSOR_INTERVAL`` (seconds, default 0.2) sets
the sensor's minimum interval; ``BEAT_PROJECT_BATCH`` (default 1) the new keys per tick (a
longer commit transaction); ``BEAT_PROJECT_EVAL_JITTER`` (seconds, default 0.02) makes each
evaluation sleep a random time up to it, so a process killed at a random instant is sometimes
killed while an evaluation is in flight.
"""

from __future__ import annotations

import os
import random
import time

import tidegate as tg

SENSOR_INTERVAL = float(os.environ.get("BEAT_PROJECT_SENSOR_INTERVAL", "0.2"))
EVAL_JITTER = float(os.environ.get("BEAT_PROJECT_EVAL_JITTER", "0.02"))
BATCH = int(os.environ.get("BEAT_PROJECT_BATCH", "1"))


@tg.asset
def tiny() -> int:
    return 1


tiny_job = tg.define_asset_job("tiny_job", [tiny])


@tg.sensor(
    job=tiny_job,
    minimum_interval_seconds=SENSOR_INTERVAL,
    default_status=tg.DefaultSensorStatus.RUNNING,
)
def counter_sensor(context: tg.SensorEvaluationContext) -> tg.SensorResult:
    n = int(context.cursor or "0")
    requests = [tg.RunRequest(run_key=str(k)) for k in range(n, n + BATCH)]
    if n > 0:
        requests.append(tg.RunRequest(run_key=str(n - 1)))  # used by the previous tick: a no-op
    if EVAL_JITTER:
        time.sleep(random.uniform(0, EVAL_JITTER))
    return tg.SensorResult(run_requests=requests, cursor=str(n + BATCH))


minutely = tg.ScheduleDefinition(
    "minutely",
    cron_schedule="* * * * *",
    job=tiny_job,
    default_status=tg.DefaultScheduleStatus.RUNNING,
)

defs = tg.Definitions(assets=[tiny], jobs=[tiny_job], sensors=[counter_sensor], schedules=[minutely])
