"""An unpartitioned asset's own condition, compiled once into nested closures.

On an unpartitioned asset every subset of partitions is its one "partition" (``None``) or
nothing, so each node's result is a bool. ``compile_plain`` turns a condition tree into one
closure per node, made once per condition object (most assets of a graph share a few, such as
``eager()``), that evaluates the node the way ``_Evaluation.node`` does: the same results, the
same stored values (pre-order, as ``automation_explain`` reads them), the same ``since`` and
``newly_true`` memories and the same volatility, without dispatching on the node's kind,
formatting child node ids or building a set per node on every asset. Facts of the snapshot
(missing, in progress, failed, newly updated, newly requested, will be requested, initial
evaluation) are read as one membership test; dependency conditions and the other operands
go to the evaluator's general code. A dependency condition's operand on an unpartitioned
dependency compiles too: its result alone (``compile_dep_operand``), and with the values a
record shows of it (``compile_dep_values``).

``tests/test_automation_plain.py`` compares it with the general evaluation on random graphs,
conditions and histories.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tidegate.definitions.automation_condition import (
    AndAutomationCondition,
    AutomationCondition,
    BackfillInProgressCondition,
    CronTickPassedCondition,
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
from tidegate.definitions.automation_records import AssetCursor, AssetSlice, NodeCursor, PartitionKey
from tidegate.definitions.key import AssetKey

if TYPE_CHECKING:
    Values = Sequence[object]

__all__ = [
    "PLAIN_FALSE",
    "PLAIN_RUN",
    "PLAIN_TRUE",
    "DepProgram",
    "PlainProgram",
    "compile_dep_operand",
    "compile_dep_values",
    "compile_plain",
    "leaf_values",
]

PLAIN_RUN = (None, None)
PLAIN_TRUE = NodeCursor((PLAIN_RUN,))  # a stateful node's memory on an unpartitioned asset
PLAIN_FALSE = NodeCursor(())  # ... and its memory when false
NOT_EVALUATED: tuple[int, int] = (0, 0)
# Operands whose truth is an event of this evaluation (see the evaluator): true, the asset's
# evaluation is not stable.
EVENT_OPERANDS = (
    NewlyUpdatedCondition,
    NewlyRequestedCondition,
    WillBeRequestedCondition,
    InitialEvaluationCondition,
    CronTickPassedCondition,
)
_COUNTS = {(t, c): (int(t), int(c)) for t in (False, True) for c in (False, True)}


class PlainRoot(Protocol):
    """What the closures read and write of the asset being evaluated (``_Root``)."""

    key: AssetKey
    previous: AssetCursor | None
    nodes: dict[str, NodeCursor]
    volatile: bool


class PlainEvaluation(Protocol):
    """What the closures read of the evaluation (``_Evaluation``)."""

    @property
    def requested(self) -> Mapping[AssetKey, Collection[PartitionKey]]: ...

    def slice(self, key: AssetKey) -> AssetSlice: ...

    def previous_request(self, key: AssetKey) -> AssetCursor | None: ...

    def leaf(
        self,
        condition: AutomationCondition,
        node_id: str,
        key: AssetKey,
        candidates: frozenset[PartitionKey],
        root: Any,  # the evaluator's own root (a PlainRoot)
        out: list[Values] | None,
    ) -> tuple[frozenset[PartitionKey], dict[str, object] | None]: ...

    def plain_full(self, key: AssetKey) -> frozenset[PartitionKey]: ...

    def joins(self, dep: AssetKey, key: AssetKey) -> bool:
        """Whether requests of ``dep`` and ``key`` can share a run (``runs_together``)."""
        ...


# A node: (evaluation, asset, candidates, root, stored values) -> whether it held.
PlainProgram = Callable[[PlainEvaluation, AssetKey, bool, PlainRoot, list["Values"]], bool]

_Made = TypeVar("_Made")
_PROGRAMS: dict[int, tuple[AutomationCondition, PlainProgram]] = {}
_EMPTY: frozenset[PartitionKey] = frozenset()


def _once(
    cache: dict[int, tuple[AutomationCondition, _Made]],
    condition: AutomationCondition,
    build: Callable[[AutomationCondition], _Made],
) -> _Made:
    """``build(condition)``, once per condition object: ``cache`` holds it by the condition's
    id beside the condition (kept alive, so that its id stays its own), and is emptied past
    256 entries (definitions reloaded many times)."""
    found = cache.get(id(condition))
    if found is not None and found[0] is condition:
        return found[1]
    made = build(condition)
    if len(cache) > 256:
        cache.clear()
    cache[id(condition)] = (condition, made)
    return made


def compile_plain(condition: AutomationCondition) -> PlainProgram:
    """The program of ``condition`` as an asset's own condition (its root node id ``0``),
    compiled once per condition object."""
    return _once(_PROGRAMS, condition, lambda c: _compile(c, "0"))


def leaf_values(true: bool, candidates: bool, extra: dict[str, object] | None) -> Values:
    """A leaf's stored values on an unpartitioned asset."""
    counts = _COUNTS[true, candidates]
    return counts if extra is None else (*counts, extra)


def _child_id(node_id: str, index: int, child: AutomationCondition) -> str:
    return f"{node_id}.{index}" if child.is_stateful else ""


def _state(root: PlainRoot, node_id: str) -> bool:
    """Whether a stateful node's memory holds the one partition."""
    if root.previous is None:
        return False
    node = root.previous.nodes.get(node_id)
    return node is not None and PLAIN_RUN in node.subset


def _compile(condition: AutomationCondition, node_id: str) -> PlainProgram:
    kind = type(condition)
    if kind is AndAutomationCondition:
        return _and(condition, node_id)  # type: ignore[arg-type]
    if kind is OrAutomationCondition:
        return _or(condition, node_id)  # type: ignore[arg-type]
    if kind is NotAutomationCondition:
        return _not(condition, node_id)  # type: ignore[arg-type]
    if kind is SinceCondition:
        return _since(condition, node_id)  # type: ignore[arg-type]
    if kind is NewlyTrueCondition:
        return _newly_true(condition, node_id)  # type: ignore[arg-type]
    fact = _fact(kind)
    if fact is not None:
        return fact
    return _leaf(condition, node_id)


def _and(condition: AndAutomationCondition, node_id: str) -> PlainProgram:
    parts = tuple(_compile(op, _child_id(node_id, i, op)) for i, op in enumerate(condition.operands))
    return _all(parts, condition.is_stateful)


def _all(parts: Sequence[PlainProgram], stateful: bool) -> PlainProgram:
    def run(ev: PlainEvaluation, key: AssetKey, candidates: bool, root: PlainRoot, out: list[Values]) -> bool:
        slot = len(out)
        out.append(NOT_EVALUATED)
        if not candidates and not stateful:
            return False
        true = candidates
        for part in parts:  # every operand runs, even on no candidates: stateful ones must stay current
            true = part(ev, key, true, root, out) and true
        out[slot] = _COUNTS[true, candidates]
        return true

    return run


def _or(condition: OrAutomationCondition, node_id: str) -> PlainProgram:
    parts = tuple(_compile(op, _child_id(node_id, i, op)) for i, op in enumerate(condition.operands))
    return _any(parts, condition.is_stateful)


def _any(parts: Sequence[PlainProgram], stateful: bool) -> PlainProgram:
    def run(ev: PlainEvaluation, key: AssetKey, candidates: bool, root: PlainRoot, out: list[Values]) -> bool:
        slot = len(out)
        out.append(NOT_EVALUATED)
        if not candidates and not stateful:
            return False
        true = False
        for part in parts:
            if part(ev, key, candidates, root, out):
                true = candidates
        out[slot] = _COUNTS[true, candidates]
        return true

    return run


def _not(condition: NotAutomationCondition, node_id: str) -> PlainProgram:
    return _negated(_compile(condition.operand, _child_id(node_id, 0, condition.operand)), condition.is_stateful)


def _negated(part: PlainProgram, stateful: bool) -> PlainProgram:
    def run(ev: PlainEvaluation, key: AssetKey, candidates: bool, root: PlainRoot, out: list[Values]) -> bool:
        slot = len(out)
        out.append(NOT_EVALUATED)
        if not candidates and not stateful:
            return False
        held = part(ev, key, candidates, root, out)  # runs on no candidates too: its state stays current
        true = candidates and not held
        out[slot] = _COUNTS[true, candidates]
        return true

    return run


def _since(condition: SinceCondition, node_id: str) -> PlainProgram:
    trigger = _compile(condition.trigger_condition, f"{node_id}.0")
    reset = _compile(condition.reset_condition, _child_id(node_id, 1, condition.reset_condition))

    def run(ev: PlainEvaluation, key: AssetKey, candidates: bool, root: PlainRoot, out: list[Values]) -> bool:
        slot = len(out)
        out.append(NOT_EVALUATED)
        triggered = trigger(ev, key, True, root, out)
        was_reset = reset(ev, key, True, root, out)
        state = (_state(root, node_id) or triggered) and not was_reset
        root.nodes[node_id] = PLAIN_TRUE if state else PLAIN_FALSE
        true = state and candidates
        out[slot] = _COUNTS[true, candidates]
        return true

    return run


def _newly_true(condition: NewlyTrueCondition, node_id: str) -> PlainProgram:
    part = _compile(condition.operand, _child_id(node_id, 0, condition.operand))

    def run(ev: PlainEvaluation, key: AssetKey, candidates: bool, root: PlainRoot, out: list[Values]) -> bool:
        slot = len(out)
        out.append(NOT_EVALUATED)
        held = part(ev, key, True, root, out)
        before = _state(root, node_id)
        root.nodes[node_id] = PLAIN_TRUE if held else PLAIN_FALSE
        true = held and not before and candidates
        out[slot] = _COUNTS[true, candidates]
        return true

    return run


def _leaf(condition: AutomationCondition, node_id: str) -> PlainProgram:
    """A dependency condition or an operand without a shortcut: the evaluator's own code, on
    the asset's one partition or nothing."""
    stateful = condition.is_stateful

    def run(ev: PlainEvaluation, key: AssetKey, candidates: bool, root: PlainRoot, out: list[Values]) -> bool:
        slot = len(out)
        out.append(NOT_EVALUATED)
        if not candidates and not stateful:
            return False
        found, extra = ev.leaf(condition, node_id, key, ev.plain_full(key) if candidates else _EMPTY, root, out)
        true = bool(found)
        out[slot] = leaf_values(true, candidates, extra)
        return true

    return run


_SLICE_FACTS: dict[type, str] = {  # operand -> the AssetSlice set whose membership it tests
    RunInProgressCondition: "run_in_progress",
    BackfillInProgressCondition: "backfill_in_progress",
    ExecutionFailedCondition: "failed",
    NewlyUpdatedCondition: "updated",
}


def _fact(kind: type) -> PlainProgram | None:
    """An operand read as one membership test (the evaluator gives an unpartitioned asset's
    fact no reason: explain derives it from the counts)."""
    event = issubclass(kind, EVENT_OPERANDS)
    if kind is MissingCondition:

        def held(ev: PlainEvaluation, key: AssetKey, root: PlainRoot) -> bool:
            return None not in ev.slice(key).materialized

    elif kind in _SLICE_FACTS:
        attribute = _SLICE_FACTS[kind]

        def held(ev: PlainEvaluation, key: AssetKey, root: PlainRoot) -> bool:
            facts: frozenset[PartitionKey] = getattr(ev.slice(key), attribute)
            return None in facts

    elif kind is NewlyRequestedCondition:

        def held(ev: PlainEvaluation, key: AssetKey, root: PlainRoot) -> bool:
            own = ev.previous_request(key)
            return own is not None and PLAIN_RUN in own.requested

    elif kind is WillBeRequestedCondition:

        def held(ev: PlainEvaluation, key: AssetKey, root: PlainRoot) -> bool:
            return bool(ev.requested.get(key))  # its own condition: key is the root's

    elif kind is InitialEvaluationCondition:

        def held(ev: PlainEvaluation, key: AssetKey, root: PlainRoot) -> bool:
            return root.previous is None

    else:
        return None

    def run(ev: PlainEvaluation, key: AssetKey, candidates: bool, root: PlainRoot, out: list[Values]) -> bool:
        if not candidates:
            out.append(NOT_EVALUATED)
            return False
        true = held(ev, key, root)
        if true and event:
            root.volatile = True
        out.append(_COUNTS[true, True])
        return true

    return run


# -- a dependency operand on an unpartitioned dependency, with its stored values ---------------------

_DEP_VALUE_PROGRAMS: dict[int, tuple[AutomationCondition, PlainProgram | None]] = {}


def compile_dep_values(condition: AutomationCondition) -> PlainProgram | None:
    """The program of a dependency condition's operand on an unpartitioned dependency with
    its stored values (``_Evaluation.node`` with ``out``: the subtree a record shows under the
    dependency condition), run with the dependency as its asset; None when the operand has a
    node without a shortcut here (state, dependency conditions, crons, the evaluated asset's
    history): the evaluator's general code then evaluates it."""
    return _once(_DEP_VALUE_PROGRAMS, condition, _dep_values)


def _dep_values(condition: AutomationCondition) -> PlainProgram | None:
    kind = type(condition)
    if condition.is_stateful:
        return None
    if kind is AndAutomationCondition or kind is OrAutomationCondition:
        parts = [_dep_values(op) for op in condition.operands]  # type: ignore[attr-defined]
        if any(p is None for p in parts):
            return None
        programs = tuple(p for p in parts if p is not None)
        return _all(programs, False) if kind is AndAutomationCondition else _any(programs, False)
    if kind is NotAutomationCondition:
        inner = _dep_values(condition.operand)  # type: ignore[attr-defined]
        return None if inner is None else _negated(inner, False)
    if kind is WillBeRequestedCondition:
        return _dep_will_be_requested
    if kind is InLatestTimeWindowCondition:
        return _leaf(condition, "")  # the evaluator's code: true, not time-partitioned
    if kind is InitialEvaluationCondition:
        return None  # the evaluated asset's history
    return _fact(kind)


def _dep_will_be_requested(
    ev: PlainEvaluation, dep: AssetKey, candidates: bool, root: PlainRoot, out: list[Values]
) -> bool:
    """``will_be_requested`` of a dependency: requested now, in a run the evaluated asset can
    join (or it is that asset); requested in a run it cannot join, false with the reason."""
    if not candidates:
        out.append(NOT_EVALUATED)
        return False
    if not ev.requested.get(dep):
        out.append(_COUNTS[False, True])
        return False
    if dep != root.key and not ev.joins(dep, root.key):
        out.append((0, 1, {"w": f"requested, but in a run '{root.key}' cannot join (other partitions)"}))
        return False
    root.volatile = True  # an event operand that held
    out.append(_COUNTS[True, True])
    return True


# -- a dependency operand on an unpartitioned dependency ---------------------------------------------

# (evaluation, dependency, root) -> whether the operand held on the dependency's one partition
DepProgram = Callable[[PlainEvaluation, AssetKey, PlainRoot], bool]
_DEP_PROGRAMS: dict[int, tuple[AutomationCondition, DepProgram | None]] = {}


def compile_dep_operand(condition: AutomationCondition) -> DepProgram | None:
    """The program of a dependency condition's operand evaluated on an unpartitioned
    dependency with nothing stored (``_Evaluation.node`` without stored values), or None
    when the operand has a node without a shortcut (state, dependency conditions, crons,
    the evaluated asset's history): the evaluator's general code then evaluates it."""
    return _once(_DEP_PROGRAMS, condition, _dep)


def _dep(condition: AutomationCondition) -> DepProgram | None:
    kind = type(condition)
    if kind is AndAutomationCondition or kind is OrAutomationCondition:
        operands = condition.operands  # type: ignore[attr-defined]
        parts = [_dep(op) for op in operands]
        if any(p is None for p in parts):
            return None
        programs = tuple(p for p in parts if p is not None)
        if kind is AndAutomationCondition:

            def all_of(ev: PlainEvaluation, dep: AssetKey, root: PlainRoot) -> bool:
                true = True
                for part in programs:  # after a false operand no candidate is left: not evaluated
                    true = part(ev, dep, root) if true else False
                return true

            return all_of

        def any_of(ev: PlainEvaluation, dep: AssetKey, root: PlainRoot) -> bool:
            true = False
            for part in programs:
                if part(ev, dep, root):
                    true = True
            return true

        return any_of
    if kind is NotAutomationCondition:
        inner = _dep(condition.operand)  # type: ignore[attr-defined]
        if inner is None:
            return None

        def negated(ev: PlainEvaluation, dep: AssetKey, root: PlainRoot) -> bool:
            return not inner(ev, dep, root)

        return negated
    if kind is InLatestTimeWindowCondition:
        return _always
    held = _dep_fact(kind)
    if held is None:
        return None
    event = issubclass(kind, EVENT_OPERANDS)

    def fact(ev: PlainEvaluation, dep: AssetKey, root: PlainRoot) -> bool:
        true = held(ev, dep, root)
        if true and event:
            root.volatile = True
        return true

    return fact


def _always(ev: PlainEvaluation, dep: AssetKey, root: PlainRoot) -> bool:
    return True  # in_latest_time_window of an asset that is not time-partitioned


def _dep_fact(kind: type) -> Callable[[PlainEvaluation, AssetKey, PlainRoot], bool] | None:
    if kind is MissingCondition:
        return lambda ev, dep, root: None not in ev.slice(dep).materialized
    if kind in _SLICE_FACTS:
        attribute = _SLICE_FACTS[kind]
        return lambda ev, dep, root: None in getattr(ev.slice(dep), attribute)
    if kind is NewlyRequestedCondition:

        def requested(ev: PlainEvaluation, dep: AssetKey, root: PlainRoot) -> bool:
            own = ev.previous_request(dep)
            return own is not None and PLAIN_RUN in own.requested

        return requested
    if kind is WillBeRequestedCondition:
        # requested now, and able to share a run with the evaluated asset (or is it)
        return lambda ev, dep, root: bool(ev.requested.get(dep)) and (dep == root.key or ev.joins(dep, root.key))
    return None
