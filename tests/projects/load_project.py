"""A project for real ``tidegate beat`` processes under load (tests/test_beat_load.py and
bench/faults.py): a 1 s sensor beside a slow sensor or a sensor with a huge tick.

* ``fast`` (always): every ``LOAD_PROJECT_FAST_INTERVAL`` seconds (default 1), skips. Its
  tick times show whether the beat kept its cadence.
* ``slow`` (if ``LOAD_PROJECT_SLOW_SECONDS`` is set): each evaluation sleeps that long (its time
  limit is 60 s), then skips.
* ``huge`` (if ``LOAD_PROJECT_HUGE`` is set to N): its first tick requests N runs with run keys
  ``r0`` .. ``r{N-1}`` and sets the cursor ``done``; later ticks skip.
"""

from __future__ import annotations

import os
import time

import tidegate as tg

FAST_INTERVAL = float(os.environ.get("LOAD_PROJECT_FAST_INTERVAL", "1"))
SLOW_SECONDS = float(os.environ.get("LOAD_PROJECT_SLOW_SECONDS", "0"))
HUGE = int(os.environ.get("LOAD_PROJECT_HUGE", "0"))
RUNNING = tg.DefaultSensorStatus.RUNNING


@tg.asset
def tiny() -> int:
    return 1


tiny_job = tg.define_asset_job("tiny_job", [tiny])


@tg.sensor(job=tiny_job, minimum_interval_seconds=FAST_INTERVAL, default_status=RUNNING)
def fast(_context: tg.SensorEvaluationContext) -> tg.SkipReason:
    return tg.SkipReason("nothing new")


@tg.sensor(job=tiny_job, minimum_interval_seconds=1, default_status=RUNNING, time_limit_seconds=60)
def slow(_context: tg.SensorEvaluationContext) -> tg.SkipReason:
    time.sleep(SLOW_SECONDS)
    return tg.SkipReason(f"slept {SLOW_SECONDS:g} s")


@tg.sensor(job=tiny_job, minimum_interval_seconds=1, default_status=RUNNING, time_limit_seconds=60)
def huge(context: tg.SensorEvaluationContext) -> tg.SensorResult | tg.SkipReason:
    if context.cursor == "done":
        return tg.SkipReason("requested already")
    return tg.SensorResult(run_requests=[tg.RunRequest(run_key=f"r{i}") for i in range(HUGE)], cursor="done")


sensors = [fast, *([slow] if SLOW_SECONDS else []), *([huge] if HUGE else [])]
defs = tg.Definitions(assets=[tiny], jobs=[tiny_job], sensors=sensors)
