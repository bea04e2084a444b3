"""Which QUEUED runs may start now: priority order within the configured limits.

Runs are considered highest ``tidegate/priority`` first, then oldest. A run held back by a
tag limit does not block the runs behind it; the global ``max_concurrent_runs`` does (nothing
else can start once it is reached).

A run of a job that a launcher's loaded code does not define, tagged with another code
location, waits for a launcher of its own code location (``location_hold``): only that one may
fail it as "job not defined". It takes no slot meanwhile.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from tidegate.config import RunQueueConfig
from tidegate.names import CODE_LOCATION_TAG
from tidegate.storage.records import RunRecord


@dataclass(frozen=True)
class QueueDecision:
    run: RunRecord
    start: bool
    reason: str  # why it waits ("" when it starts)


def location_hold(run: RunRecord, jobs: Collection[str], location: str | None) -> str:
    """Why a launcher that loaded code location ``location`` (defining ``jobs``) must leave
    ``run`` queued, or "": the run's job is not in that code and the run was planned by another
    code location (or by one this launcher cannot name), whose own launcher judges it."""
    owner = run.tags.get(CODE_LOCATION_TAG)
    if run.job_name in jobs or owner is None or owner == location:
        return ""
    here = f"'{location}'" if location is not None else "an unnamed Definitions"
    return f"a launcher of code location '{owner}' (job '{run.job_name}' is not in {here})"


def decide(
    config: RunQueueConfig,
    queued: Sequence[RunRecord],
    in_progress: Sequence[RunRecord],
    *,
    hold: Callable[[RunRecord], str] | None = None,
) -> list[QueueDecision]:
    """Which of ``queued`` start now; ``hold(run)``, when given, names a reason to leave a run
    queued whatever the limits (it then takes no slot)."""
    total = len(in_progress)
    counts: Counter[str] = Counter()
    for run in in_progress:
        for limit in config.tag_concurrency_limits:
            if limit.matches(run.tags):
                counts[limit.bucket(run.tags)] += 1
    decisions = []
    for run in queued:
        held = hold(run) if hold is not None else ""
        if held:
            decisions.append(QueueDecision(run, False, held))
            continue
        if config.max_concurrent_runs is not None and total >= config.max_concurrent_runs:
            decisions.append(QueueDecision(run, False, f"max_concurrent_runs={config.max_concurrent_runs} reached"))
            continue
        blocking = [
            limit
            for limit in config.tag_concurrency_limits
            if limit.matches(run.tags) and counts[limit.bucket(run.tags)] >= limit.limit
        ]
        if blocking:
            limit = blocking[0]
            decisions.append(
                QueueDecision(run, False, f"tag limit {limit.describe_for(run.tags)}: {limit.limit} run(s) in progress")
            )
            continue
        decisions.append(QueueDecision(run, True, ""))
        total += 1
        for limit in config.tag_concurrency_limits:
            if limit.matches(run.tags):
                counts[limit.bucket(run.tags)] += 1
    return decisions
