"""A project run by real ``tidegate beat`` and worker processes (tests/test_automation_processes.py).

``source`` is an external asset (the test reports its materializations); ten eager assets
below it (each on the previous one, every third also on the one three back) are run by the
automation condition sensor ``automation``, every ``AUTOMATION_PROJECT_INTERVAL`` seconds
(default 0.2).
"""

from __future__ import annotations

import os

import tidegate as tg

INTERVAL = float(os.environ.get("AUTOMATION_PROJECT_INTERVAL", "0.2"))
EAGER = tg.AutomationCondition.eager()
CHAIN = [f"a{i}" for i in range(10)]

source = tg.AssetSpec("source")


def _eager(index: int) -> tg.AssetsDefinition:
    deps = ["source"] if index == 0 else [CHAIN[index - 1]]
    if index >= 3 and index % 3 == 0:
        deps.append(CHAIN[index - 3])

    def body() -> int:
        return index

    return tg.asset(name=CHAIN[index], deps=deps, automation_condition=EAGER)(body)


automation = tg.AutomationConditionSensorDefinition(
    "automation",
    target=tg.AssetSelection.all(),
    minimum_interval_seconds=INTERVAL,
    default_status=tg.DefaultSensorStatus.RUNNING,
)

defs = tg.Definitions(assets=[source, *(_eager(i) for i in range(10))], sensors=[automation])
