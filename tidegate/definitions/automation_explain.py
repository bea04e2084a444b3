"""The human side of an evaluation: the "why" of each node of an EvaluationRecord, e.g.
``~any_deps_missing: false — upstream 'orders' partition 2024-01-22 missing``.

An evaluation stores, per asset, the condition's tree once (its template) and per node only
its true and candidate counts, plus what its reason cannot be derived from: the true subset of
a partitioned asset, the reason of a dependency condition, a fact about partitions. ``explain``
rebuilds the tree of NodeRecords with every reason when a record is read (explain, history,
the API), not on every tick for every asset.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tidegate.definitions.automation_condition import (
    AndAutomationCondition,
    AutomationCondition,
    BackfillInProgressCondition,
    DepsAutomationCondition,
    ExecutionFailedCondition,
    InitialEvaluationCondition,
    InLatestTimeWindowCondition,
    MissingCondition,
    NewlyRequestedCondition,
    NewlyTrueCondition,
    NewlyUpdatedCondition,
    NotAutomationCondition,
    OrAutomationCondition,
    RunInProgressCondition,
    SinceCondition,
    WillBeRequestedCondition,
)
from tidegate.definitions.key import AssetKey

if TYPE_CHECKING:
    from tidegate.definitions.automation_records import NodeRecord

PartitionKey = str | None
SAMPLE_SIZE = 10  # partition keys quoted by a "why"
SHOWN_FACTS = 3  # facts a reason names; the others are counted
NOT_EVALUATED = "not evaluated: no candidates left"

# operand -> (reason if true, if false): a fact about the asset the node was evaluated on
FACTS: dict[type, tuple[str, str]] = {
    MissingCondition: ("never materialized", "materialized"),
    RunInProgressCondition: ("in a run in progress", "no run in progress"),
    BackfillInProgressCondition: ("in a backfill in progress", "no backfill in progress"),
    ExecutionFailedCondition: ("latest execution failed", "latest execution did not fail"),
    NewlyUpdatedCondition: ("materialized since the previous evaluation", "no new materialization"),
    NewlyRequestedCondition: ("requested on the previous evaluation", "not requested on the previous evaluation"),
    WillBeRequestedCondition: ("requested in this evaluation", "not requested in this evaluation"),
    InitialEvaluationCondition: ("first evaluation of this condition", "evaluated before"),
}
NOT_TIME_PARTITIONED = "not time-partitioned: always in the latest window"


def describe(subset: Collection[PartitionKey]) -> str:
    """``partition 2024-01-22``, ``3 partitions: a, b, c``, or for many the count and the range."""
    named = [k for k in subset if k is not None]
    if not named:
        return ""
    if len(named) == 1:
        return f"partition {named[0]}"
    if len(named) <= SAMPLE_SIZE:
        return f"{len(named)} partitions: {', '.join(sorted(named))}"
    return f"{len(named)} partitions from {min(named)} to {max(named)}"


def fact(true: Collection[PartitionKey], partitioned: bool, yes: str, no: str) -> str:
    if not partitioned:
        return yes if true else no
    return f"{describe(true)} {yes}" if true else no


def dep_fact(dep: AssetKey | str, true: Collection[PartitionKey], partitioned: bool) -> str:
    where = f" {describe(true)}" if partitioned and true else ""
    return f"upstream '{dep}'{where}"


def deps_verb(condition: DepsAutomationCondition) -> str:
    """``any_deps_missing`` -> "missing"; an unlabelled one names its operand."""
    label = condition.label or ""
    for prefix in ("any_deps_", "all_deps_"):
        if label.startswith(prefix):
            return label[len(prefix) :].replace("_", " ")
    return f"matches {condition.operand.display()}"


def first_facts(facts: Sequence[str], total: int | None = None) -> str:
    """The first SHOWN_FACTS of ``facts`` (of ``total``, when only those were built)."""
    total = len(facts) if total is None else total
    more = f"; and {total - SHOWN_FACTS} more" if total > SHOWN_FACTS else ""
    return "; ".join(facts[:SHOWN_FACTS]) + more


def title(record: NodeRecord | None) -> str:
    """How a node is named in its parent's reason: its label, else its expression."""
    if record is None:
        return "?"
    return record.label or record.why.split(": ", 1)[0]


def or_why(children: Sequence[NodeRecord | None]) -> str:
    held = [title(c) for c in children if c is not None and c.true_count]
    return f"'{held[0]}' is true" if held else "no operand true"


def not_why(child: NodeRecord | None) -> str:
    """A NOT is explained by its operand: ``~any_deps_missing: false — upstream 'orders' … missing``."""
    why = child.why if child is not None else ""
    return why.split(" — ", 1)[1] if " — " in why else title(child)


# -- rendering a stored evaluation -----------------------------------------------------------------

# A node's stored values: ``[true count, candidate count]``, and a third item, a mapping, when
# something cannot be derived from the tree and the counts: "r" the true subset as runs
# (partitioned; absent: none, or the unpartitioned asset's one partition when the count is 1),
# "x" the runs were cut, "w" the reason, "h" whether the reset (SINCE) or the operand
# (NEWLY_TRUE) held on the candidates (partitioned), "d" the dependencies whose subtrees follow.
Values = Sequence[Any]


def explain(condition: AutomationCondition, nodes: Sequence[Values], asset: str) -> NodeRecord:
    """The NodeRecord tree of an evaluation of ``condition`` on ``asset`` from its stored
    ``nodes`` (in pre-order: a node, then its children's nodes)."""
    return _render(condition, iter(nodes), asset)


def _render(condition: AutomationCondition, nodes: Iterator[Values], asset: str) -> NodeRecord:
    from tidegate.definitions.automation_records import NodeRecord  # records import this module

    values = next(nodes)
    true_count, candidate_count = values[0], values[1]
    extra: Mapping[str, Any] = values[2] if len(values) > 2 else {}
    children: list[NodeRecord] = []
    reason: str | None = extra.get("w")
    if candidate_count == 0 and not condition.is_stateful:
        reason = NOT_EVALUATED
    elif isinstance(condition, DepsAutomationCondition):
        children = [_render(condition.operand, nodes, dep) for dep in extra.get("d", ())]
    else:
        children = [_render(child, nodes, asset) for child in condition.children]
    if reason is None:
        reason = _reason(condition, true_count, candidate_count, extra, children)
    runs = extra.get("r")
    if runs is None:
        runs = [[None, None]] if true_count else []
    prefix = "true" if true_count else "false"
    return NodeRecord(
        label=condition.label,
        name=condition.name,
        description=condition.description,
        asset=asset,
        true_count=true_count,
        candidate_count=candidate_count,
        true_runs=runs,
        truncated=bool(extra.get("x", False)),
        why=f"{condition.display()}: {prefix} — {reason}",
        children=children,
    )


def _reason(
    condition: AutomationCondition,
    true_count: int,
    candidate_count: int,
    extra: Mapping[str, Any],
    children: Sequence[NodeRecord],
) -> str:
    """The reason derived from the node's kind, counts and children (when not stored)."""
    texts = FACTS.get(type(condition))
    if texts is not None:
        return texts[0] if true_count else texts[1]
    if isinstance(condition, InLatestTimeWindowCondition):
        return NOT_TIME_PARTITIONED
    if isinstance(condition, AndAutomationCondition):
        if true_count:
            return "every operand true"
        for i, child in enumerate(children):  # the operand after which no candidate was left
            after = children[i + 1].candidate_count if i + 1 < len(children) else true_count
            if not after:
                return f"'{title(child)}' is false"
        return "no candidates"
    if isinstance(condition, OrAutomationCondition):
        return or_why(children)
    if isinstance(condition, NotAutomationCondition):
        return not_why(children[0] if children else None)
    if isinstance(condition, SinceCondition):
        trigger, reset = children
        if true_count:
            return f"'{title(trigger)}' has been true since '{title(reset)}' was last true"
        if extra.get("h", bool(reset.true_count and candidate_count)):
            return f"reset by '{title(reset)}'"
        return f"'{title(trigger)}' not true since '{title(reset)}' was last true"
    if isinstance(condition, NewlyTrueCondition):
        if true_count:
            return "became true on this evaluation"
        held = extra.get("h", bool(children[0].true_count and candidate_count))
        return "still true, not newly" if held else "operand false"
    return "?"  # a reason the evaluation stored (a dependency condition, a cron) is always there
