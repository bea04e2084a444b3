"""The code location of the beat benchmark (bench/beat.py).

* ``defs`` (loaded by the worker of the latency scenario and by the bench itself): one tiny
  asset, ``tiny_job``, and ``every_minute``, a ``* * * * *`` schedule running by default.
* ``many_schedules(daily, slotted)`` builds the tick-cost scenario's definitions: ``daily``
  schedules at ``0 3 * * *`` (never due while the bench's fake clock stays between 04:59 and
  05:51) and ``slotted`` schedules at ``S-59/10 5 * * *`` with ``S = i % 10``: each minute
  05:00 .. 05:59 exactly ``slotted / 10`` of them are due, one slot per minute.
"""

from __future__ import annotations

import tidegate as tg

SLOTS = 10


@tg.asset
def tiny() -> None:
    return None


tiny_job = tg.define_asset_job("tiny_job", [tiny])

every_minute = tg.ScheduleDefinition(
    "every_minute",
    cron_schedule="* * * * *",
    job=tiny_job,
    default_status=tg.DefaultScheduleStatus.RUNNING,
)

defs = tg.Definitions(assets=[tiny], jobs=[tiny_job], schedules=[every_minute])


def many_schedules(daily: int, slotted: int, *, slotted_cron: str | None = None) -> tg.Definitions:
    """``daily + slotted`` schedules on ``tiny_job``, all running by default.

    ``slotted_cron`` replaces the slotted schedules' crons (e.g. ``* * * * *``: all of them
    are due every minute)."""
    schedules = [
        tg.ScheduleDefinition(
            f"daily_{i:05d}",
            cron_schedule="0 3 * * *",
            job=tiny_job,
            default_status=tg.DefaultScheduleStatus.RUNNING,
        )
        for i in range(daily)
    ]
    schedules += [
        tg.ScheduleDefinition(
            f"slot{i % SLOTS}_{i:05d}",
            cron_schedule=slotted_cron or f"{i % SLOTS}-59/{SLOTS} 5 * * *",
            job=tiny_job,
            default_status=tg.DefaultScheduleStatus.RUNNING,
        )
        for i in range(slotted)
    ]
    return tg.Definitions(assets=[tiny], jobs=[tiny_job], schedules=schedules)
