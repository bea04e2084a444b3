"""The human side of an evaluation: the "why" of each node of an EvaluationRecord, e.g.
``~any_deps_missing: false — upstream 'orders' partition 2024-01-22 missing``."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from tidegate.definitions.automation_condition import DepsAutomationCondition
from tidegate.definitions.automation_records import SAMPLE_SIZE, NodeRecord, PartitionKey
from tidegate.definitions.key import AssetKey


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


SHOWN_FACTS = 3  # facts a reason names; the others are counted


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
