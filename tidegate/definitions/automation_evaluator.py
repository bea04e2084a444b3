"""The pure evaluator of automation conditions: a snapshot in, requests, cursor and records out."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from tidegate.definitions.automation_records import (
    AssetSlice,
    AutomationCursor,
    AutomationResult,
    AutomationRunGroup,
    EvaluationRecord,
    PartitionKey,
)
from tidegate.definitions.graph import AssetGraph
from tidegate.definitions.key import AssetKey

__all__ = [
    "AssetSlice",
    "AutomationCursor",
    "AutomationInputs",
    "AutomationResult",
    "AutomationRunGroup",
    "EvaluationRecord",
    "evaluate_automation",
    "group_requests",
]


class AutomationInputs(Protocol):
    """What the evaluator reads: one snapshot of the event log (a fixed upper event id)."""

    def slice(self, key: AssetKey) -> AssetSlice: ...

    def partition_keys(self, key: AssetKey) -> Sequence[PartitionKey]:
        """Every partition of ``key`` now, in order; ``[None]`` for an unpartitioned asset."""
        ...


def evaluate_automation(
    graph: AssetGraph,
    targets: Collection[AssetKey],
    inputs: AutomationInputs,
    evaluation_time: datetime,
    cursor: AutomationCursor | None,
    changed: Collection[AssetKey] | None,
) -> AutomationResult:
    """Evaluate the conditions of ``targets`` (assets without a condition are left out) in
    topological order. ``changed``: assets whose AssetSlice may differ from the previous
    evaluation's (None: treat every asset as changed)."""
    raise NotImplementedError  # implemented in the next commit


def group_requests(
    graph: AssetGraph, requested: Mapping[AssetKey, Collection[PartitionKey]]
) -> list[AutomationRunGroup]:
    """The runs (and backfills) to create for ``requested``."""
    raise NotImplementedError  # implemented in the next commit
