"""Which QUEUED runs may start now: priority order within the configured limits.

Runs are considered highest ``tidegate/priority`` first, then oldest. A run held back by a
tag limit does not block the runs behind it; the global ``max_concurrent_runs`` does (nothing
else can start once it is reached).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from tidegate.config import RunQueueConfig
from tidegate.storage.records import RunRecord


@dataclass(frozen=True)
class QueueDecision:
    run: RunRecord
    start: bool
    reason: str  # why it waits ("" when it starts)


def decide(
    config: RunQueueConfig, queued: Sequence[RunRecord], in_progress: Sequence[RunRecord]
) -> list[QueueDecision]:
    total = len(in_progress)
    counts: Counter[str] = Counter()
    for run in in_progress:
        for limit in config.tag_concurrency_limits:
            if limit.matches(run.tags):
                counts[limit.bucket(run.tags)] += 1
    decisions = []
    for run in queued:
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
