"""A project for fault injection (tests/test_faults.py, bench/faults.py).

Every asset appends one line ``<asset> <run_id> <attempt> <pid>`` to
``$TIDEGATE_TEST_EFFECTS/<asset>.log`` when its code starts, so that the fault injector knows
which process runs a step (the pid to kill or freeze) and can count executions independently
of what tidegate records. The "slow" assets then sleep ``$FAULT_PROJECT_STEP_SECONDS``
(default 3) so that a fault can hit them mid-step.

Jobs, each ``before -> <slow> -> after``:

* ``victim_job``: ``victim`` has no RetryPolicy (a lost worker gets ``worker_lost_retries``
  re-runs);
* ``guarded_job``: ``guarded`` has ``RetryPolicy(max_retries=1)``: one re-run;
* ``fragile_job``: ``fragile`` has ``RetryPolicy(max_retries=0)``: a lost attempt fails the
  step, its child is SKIPPED and the run ends FAILURE;
* ``gone_job``: one quick asset, ``orphan``. ``defs`` has the job; ``defs_without_gone_job``
  (load it as ``fault_project.py:defs_without_gone_job``) keeps the asset but not the job, as
  if the job had been removed from the code after runs of it were queued.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import tidegate as tg

STEP_SECONDS = float(os.environ.get("FAULT_PROJECT_STEP_SECONDS", "3"))


def effect(context: tg.AssetExecutionContext) -> None:
    directory = Path(os.environ["TIDEGATE_TEST_EFFECTS"])
    directory.mkdir(parents=True, exist_ok=True)
    line = f"{context.asset_key} {context.run_id} {context.attempt} {os.getpid()}\n"
    fd = os.open(directory / f"{context.asset_key}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _chain(name: str, retry_policy: tg.RetryPolicy | None) -> tuple[tg.AssetsDefinition, ...]:
    """``before_<name> -> <name> (sleeps) -> after_<name>``, in group ``<name>``; the edges are
    ``deps=`` (no data goes through an IO manager)."""

    def before(context: tg.AssetExecutionContext) -> None:
        effect(context)

    def slow(context: tg.AssetExecutionContext) -> None:
        effect(context)
        time.sleep(STEP_SECONDS)

    def after(context: tg.AssetExecutionContext) -> None:
        effect(context)

    first = tg.asset(name=f"before_{name}", group_name=name)(before)
    middle = tg.asset(name=name, group_name=name, deps=[first], retry_policy=retry_policy)(slow)
    last = tg.asset(name=f"after_{name}", group_name=name, deps=[middle])(after)
    return first, middle, last


VICTIM = _chain("victim", None)
GUARDED = _chain("guarded", tg.RetryPolicy(max_retries=1))
FRAGILE = _chain("fragile", tg.RetryPolicy(max_retries=0))


@tg.asset(group_name="gone")
def orphan(context: tg.AssetExecutionContext) -> None:
    effect(context)


ASSETS = [*VICTIM, *GUARDED, *FRAGILE, orphan]
JOBS = [
    tg.define_asset_job("victim_job", "group:victim"),
    tg.define_asset_job("guarded_job", "group:guarded"),
    tg.define_asset_job("fragile_job", "group:fragile"),
]

defs = tg.Definitions(assets=ASSETS, jobs=[*JOBS, tg.define_asset_job("gone_job", "group:gone")])
defs_without_gone_job = tg.Definitions(assets=ASSETS, jobs=JOBS)
