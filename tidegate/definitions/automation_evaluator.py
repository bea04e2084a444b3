"""The pure evaluator of automation conditions: a snapshot in, requests, cursor and records out.

``evaluate_automation`` walks the target assets in topological order, so ``will_be_requested()``
sees what upstream assets requested earlier in the same evaluation. Every node is evaluated on
a *candidate* subset of partitions: ``&`` narrows the candidates for the operands after it,
``since`` and ``newly_true`` evaluate their operands on every partition (a state transition on
a partition outside today's candidates must not be missed), and ``any_deps_match`` /
``all_deps_match`` evaluate their operand on each dependency's own partitions and map the
result back through the partition mapping (a child partition matches when any of its parent
partitions does).

Cost follows what changed: an asset is skipped (its previous state and "requested nothing"
stand) when its last evaluation was *stable* (evaluating again with the same inputs would
give the same result and state), neither it nor a dependency is in ``changed``, no
dependency was requested on this or the previous evaluation, its and its dependencies'
partitions are the same, and no tick of a cron in its condition passed since.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from tidegate.definitions.automation_condition import (
    AllDepsCondition,
    AndAutomationCondition,
    AutomationCondition,
    BackfillInProgressCondition,
    CronTickPassedCondition,
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
from tidegate.definitions.automation_records import (
    MAX_RUNS,
    SAMPLE_SIZE,
    AssetCursor,
    AssetSlice,
    AutomationCursor,
    AutomationResult,
    AutomationRunGroup,
    EvaluationRecord,
    NodeCursor,
    NodeRecord,
    PartitionKey,
    decode_subset,
)
from tidegate.definitions.cron import ticks_between, validate_timezone
from tidegate.definitions.graph import AssetGraph
from tidegate.definitions.key import AssetKey
from tidegate.definitions.partitions import (
    AllPartitionMapping,
    IdentityPartitionMapping,
    PartitionsDefinition,
    TimeWindowPartitionsDefinition,
)
from tidegate.definitions.selection import AssetSelection

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

Subset = frozenset[PartitionKey]
EMPTY: Subset = frozenset()
# Operands whose truth is an event of this evaluation: next time, with nothing new, they are
# false again, so an evaluation that saw one of them true is not stable.
_EVENT_OPERANDS = (
    NewlyUpdatedCondition,
    NewlyRequestedCondition,
    WillBeRequestedCondition,
    InitialEvaluationCondition,
    CronTickPassedCondition,
)


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
    """Evaluate the conditions of ``targets`` in topological order (targets without a
    condition, or external, are left out).

    ``changed``: the assets whose AssetSlice may differ from the previous evaluation's (any of
    its five sets); None treats every asset as changed. ``evaluations`` holds a record for
    each asset whose condition ran; an asset left out was skipped and its latest record stands.
    """
    return _Evaluation(graph, inputs, evaluation_time, cursor or AutomationCursor(), changed).run(targets)


# -- one evaluation ------------------------------------------------------------------------------


@dataclass
class _Root:
    """The asset whose condition is being evaluated, and what its evaluation collects."""

    key: AssetKey
    previous: AssetCursor | None  # None on the first evaluation of this condition
    nodes: dict[str, NodeCursor] = field(default_factory=dict)
    volatile: bool = False  # an event operand was true: the next evaluation may differ


@dataclass(frozen=True)
class _Result:
    true: Subset
    record: NodeRecord


class _Evaluation:
    def __init__(
        self,
        graph: AssetGraph,
        inputs: AutomationInputs,
        now: datetime,
        cursor: AutomationCursor,
        changed: Collection[AssetKey] | None,
    ) -> None:
        self.graph = graph
        self.inputs = inputs
        self.now = now
        self.cursor = cursor
        self.changed = None if changed is None else set(changed)
        self.requested: dict[AssetKey, Subset] = {}
        self._keys: dict[AssetKey, tuple[PartitionKey, ...]] = {}
        self._index: dict[AssetKey, dict[PartitionKey, int]] = {}
        self._slices: dict[AssetKey, AssetSlice] = {}
        self._selections: dict[int, set[AssetKey]] = {}

    # -- inputs, memoized ----------------------------------------------------------------------

    def keys(self, key: AssetKey) -> tuple[PartitionKey, ...]:
        found = self._keys.get(key)
        if found is None:
            found = self._keys[key] = tuple(self.inputs.partition_keys(key))
        return found

    def full(self, key: AssetKey) -> Subset:
        return frozenset(self.keys(key))

    def slice(self, key: AssetKey) -> AssetSlice:
        found = self._slices.get(key)
        if found is None:
            found = self._slices[key] = self.inputs.slice(key)
        return found

    def encode(self, key: AssetKey, subset: Collection[PartitionKey]) -> list[list[PartitionKey]]:
        """Runs of consecutive keys, via an index (cheap for the small subsets that dominate)."""
        if not subset:
            return []
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = {k: i for i, k in enumerate(self.keys(key))}
        positions = sorted(index[k] for k in subset if k in index)
        ordered = self.keys(key)
        runs: list[list[PartitionKey]] = []
        start = previous = -2
        for pos in positions:
            if pos != previous + 1:
                if start >= 0:
                    runs.append([ordered[start], ordered[previous]])
                start = pos
            previous = pos
        if start >= 0:
            runs.append([ordered[start], ordered[previous]])
        return runs

    def fingerprint(self, key: AssetKey) -> str:
        keys = self.keys(key)
        return f"{len(keys)}:{keys[0] if keys else ''}:{keys[-1] if keys else ''}"

    # -- the walk ------------------------------------------------------------------------------

    def run(self, targets: Collection[AssetKey]) -> AutomationResult:
        wanted = set(targets)
        cursors: dict[AssetKey, AssetCursor] = {}
        evaluations: dict[AssetKey, EvaluationRecord] = {}
        for key in self.graph.order:
            asset = self.graph.assets[key]
            condition = asset.automation_condition
            if key not in wanted or condition is None or asset.is_external:
                continue
            previous = self.cursor.assets.get(key)
            if previous is not None and previous.condition_hash != condition.fingerprint():
                previous = None
            fingerprint = "|".join(self.fingerprint(k) for k in (key, *sorted(self.graph.upstream[key])))
            if previous is not None and self._can_skip(key, condition, previous, fingerprint):
                cursors[key] = previous
                continue
            root = _Root(key, previous)
            result = self.node(condition, "0", key, self.full(key), root)
            requested = result.true
            if requested:
                self.requested[key] = requested
            previous_nodes = previous.nodes if previous is not None else None
            stable = (
                previous is not None and not root.volatile and not requested and previous_nodes == root.nodes
            )
            cursors[key] = AssetCursor(
                condition_hash=condition.fingerprint(),
                evaluation_time=self.now.timestamp(),
                requested=_as_runs(self.encode(key, requested)),
                nodes=root.nodes,
                stable=stable,
                partitions_fingerprint=fingerprint,
            )
            evaluations[key] = EvaluationRecord(
                asset_key=key,
                evaluation_time=self.now,
                requested=sorted(requested, key=_sort_key),
                root=result.record,
            )
        return AutomationResult(
            requested=dict(self.requested),
            cursor=AutomationCursor(evaluation_time=self.now.timestamp(), assets=cursors),
            evaluations=evaluations,
            evaluated=len(evaluations),
        )

    def _can_skip(self, key: AssetKey, condition: AutomationCondition, previous: AssetCursor, fingerprint: str) -> bool:
        if self.changed is None or not previous.stable or previous.partitions_fingerprint != fingerprint:
            return False
        deps = self.graph.upstream[key]
        if key in self.changed or any(d in self.changed for d in deps):
            return False
        for dep in deps:
            if self.requested.get(dep):
                return False
            dep_cursor = self.cursor.assets.get(dep)
            if dep_cursor is not None and dep_cursor.requested:
                return False
        since = datetime.fromtimestamp(previous.evaluation_time, tz=self.now.tzinfo)
        for node in condition.walk():
            if isinstance(node, DepsAutomationCondition) and any(
                isinstance(n, DepsAutomationCondition) for n in node.operand.walk()
            ):
                return False  # a dependency's dependencies: their changes are not tracked here
            if isinstance(node, CronTickPassedCondition) and _ticks_passed(node, since, self.now):
                return False
        return True

    # -- nodes -----------------------------------------------------------------------------------

    def node(self, condition: AutomationCondition, node_id: str, key: AssetKey, candidates: Subset, root: _Root) -> _Result:
        if isinstance(condition, AndAutomationCondition):
            return self._and(condition, node_id, key, candidates, root)
        if isinstance(condition, OrAutomationCondition):
            children = [self.node(c, f"{node_id}.{i}", key, candidates, root) for i, c in enumerate(condition.operands)]
            true = frozenset().union(*(c.true for c in children)) & candidates
            return self._record(condition, key, candidates, true, _or_why(children, true), children)
        if isinstance(condition, NotAutomationCondition):
            child = self.node(condition.operand, f"{node_id}.0", key, candidates, root)
            true = candidates - child.true
            return self._record(condition, key, candidates, true, _not_why(child, candidates), [child])
        if isinstance(condition, SinceCondition):
            return self._since(condition, node_id, key, candidates, root)
        if isinstance(condition, NewlyTrueCondition):
            full = self.full(key)
            child = self.node(condition.operand, f"{node_id}.0", key, full, root)
            before = self._state(root, node_id, key)
            root.nodes[node_id] = NodeCursor(_as_runs(self.encode(key, child.true)))
            true = (child.true - before) & candidates
            why = "became true" if true else ("still true, not newly" if child.true & candidates else "operand false")
            return self._record(condition, key, candidates, true, why, [child])
        if isinstance(condition, DepsAutomationCondition):
            return self._deps(condition, node_id, key, candidates, root)
        true, why = self._operand(condition, key, candidates, root)
        if true and isinstance(condition, _EVENT_OPERANDS):
            root.volatile = True
        return self._record(condition, key, candidates, true, why, [])

    def _and(self, condition: AndAutomationCondition, node_id: str, key: AssetKey, candidates: Subset, root: _Root) -> _Result:
        current = candidates
        children: list[_Result] = []
        first_false: _Result | None = None
        for i, operand in enumerate(condition.operands):
            child = self.node(operand, f"{node_id}.{i}", key, current, root)  # every operand runs: state stays current
            children.append(child)
            current = current & child.true
            if not current and first_false is None:
                first_false = child
        why = "every operand true" if current else f"'{_title(first_false)}' is false" if first_false else "no candidates"
        return self._record(condition, key, candidates, current, why, children)

    def _since(self, condition: SinceCondition, node_id: str, key: AssetKey, candidates: Subset, root: _Root) -> _Result:
        full = self.full(key)
        trigger = self.node(condition.trigger_condition, f"{node_id}.0", key, full, root)
        reset = self.node(condition.reset_condition, f"{node_id}.1", key, full, root)
        state = (self._state(root, node_id, key) | trigger.true) - reset.true
        root.nodes[node_id] = NodeCursor(_as_runs(self.encode(key, state)))
        true = state & candidates
        if true:
            why = f"'{_title(trigger)}' has been true since '{_title(reset)}' was last true"
        elif reset.true & candidates:
            why = f"reset by '{_title(reset)}'"
        else:
            why = f"'{_title(trigger)}' not true since '{_title(reset)}' was last true"
        return self._record(condition, key, candidates, true, why, [trigger, reset])

    def _deps(self, condition: DepsAutomationCondition, node_id: str, key: AssetKey, candidates: Subset, root: _Root) -> _Result:
        deps = sorted(self._selected_deps(condition, key))
        is_all = isinstance(condition, AllDepsCondition)
        true = candidates if is_all else EMPTY
        children: list[_Result] = []
        matched: list[str] = []
        unmatched: list[str] = []
        for dep in deps:
            parents = self._parents(key, dep, candidates)
            child = self.node(condition.operand, f"{node_id}[{dep.to_user_string()}]", dep, parents, root)
            children.append(child)
            mapped = self._children_matching(key, dep, child.true, candidates)
            true = true & mapped if is_all else true | mapped
            if mapped:
                shown = child.true & self._parents(key, dep, mapped)
                matched.append(_dep_fact(dep, shown, self._is_partitioned(dep)))
            else:
                unmatched.append(f"upstream '{dep}'")
        what = _deps_verb(condition)
        if not deps:
            why = "no dependencies (after allow/ignore)"
        elif is_all and true:
            why = f"every dependency {what}"
        elif is_all:
            why = f"not {what}: {', '.join(unmatched)}" if unmatched else f"dependencies {what} only for other partitions"
        else:
            why = "; ".join(f"{m} {what}" for m in matched) if true else f"no dependency {what}"
        return self._record(condition, key, candidates, true, why, children)

    def _parents(self, child: AssetKey, parent: AssetKey, children: Subset) -> Subset:
        """Partitions of ``parent`` that partitions ``children`` of ``child`` depend on."""
        if not children:
            return EMPTY
        child_def = self.graph.assets[child].partitions_def
        parent_def = self.graph.assets[parent].partitions_def
        if parent_def is None or child_def is None:
            return self.full(parent)
        mapping = self.graph.assets[child].partition_mappings.get(parent)
        if mapping is None or isinstance(mapping, IdentityPartitionMapping):
            return children & self.full(parent)
        if isinstance(mapping, AllPartitionMapping):
            return self.full(parent)
        found: set[PartitionKey] = set()
        for c in children:
            found.update(mapping.upstream_keys(c, child_def, parent_def, current_time=self.now))
        return frozenset(found) & self.full(parent)

    def _selected_deps(self, condition: DepsAutomationCondition, key: AssetKey) -> set[AssetKey]:
        deps = set(self.graph.upstream[key])
        if condition.allow_selection is not None:
            deps &= self._resolve(condition.allow_selection)
        if condition.ignore_selection is not None:
            deps -= self._resolve(condition.ignore_selection)
        return deps

    def _resolve(self, selection: AssetSelection) -> set[AssetKey]:
        found = self._selections.get(id(selection))
        if found is None:
            found = self._selections[id(selection)] = selection.resolve(self.graph)
        return found

    def _is_partitioned(self, key: AssetKey) -> bool:
        return self.graph.assets[key].partitions_def is not None

    def _children_matching(self, child: AssetKey, parent: AssetKey, parents: Subset, candidates: Subset) -> Subset:
        """Partitions of ``child`` among ``candidates`` with at least one parent partition in ``parents``."""
        if not parents or not candidates:
            return EMPTY
        child_def = self.graph.assets[child].partitions_def
        parent_def = self.graph.assets[parent].partitions_def
        if parent_def is None or child_def is None:
            return candidates  # one side unpartitioned: every partition depends on every partition
        mapping = self.graph.assets[child].partition_mappings.get(parent)
        if mapping is None or isinstance(mapping, IdentityPartitionMapping):
            return candidates & parents
        if isinstance(mapping, AllPartitionMapping):
            return candidates
        return frozenset(
            c
            for c in candidates
            if any(p in parents for p in mapping.upstream_keys(c, child_def, parent_def, current_time=self.now))
        )

    def _state(self, root: _Root, node_id: str, key: AssetKey) -> Subset:
        if root.previous is None:
            return EMPTY
        node = root.previous.nodes.get(node_id)
        return decode_subset(node.subset, self.keys(key)) if node is not None else EMPTY

    # -- operands --------------------------------------------------------------------------------

    def _operand(self, condition: AutomationCondition, key: AssetKey, candidates: Subset, root: _Root) -> tuple[Subset, str]:
        facts = self.slice(key)
        partitioned = self._is_partitioned(key)
        if isinstance(condition, MissingCondition):
            true = candidates - facts.materialized
            return true, _fact(true, partitioned, "never materialized", "materialized")
        if isinstance(condition, RunInProgressCondition):
            true = candidates & facts.run_in_progress
            return true, _fact(true, partitioned, "in a run in progress", "no run in progress")
        if isinstance(condition, BackfillInProgressCondition):
            true = candidates & facts.backfill_in_progress
            return true, _fact(true, partitioned, "in a backfill in progress", "no backfill in progress")
        if isinstance(condition, ExecutionFailedCondition):
            true = candidates & facts.failed
            return true, _fact(true, partitioned, "latest execution failed", "latest execution did not fail")
        if isinstance(condition, NewlyUpdatedCondition):
            true = candidates & facts.updated
            return true, _fact(true, partitioned, "materialized since the previous evaluation", "no new materialization")
        if isinstance(condition, NewlyRequestedCondition):
            own = self.cursor.assets.get(key)
            before = decode_subset(own.requested, self.keys(key)) if own is not None else EMPTY
            true = candidates & before
            return true, _fact(true, partitioned, "requested on the previous evaluation", "not requested on the previous evaluation")
        if isinstance(condition, WillBeRequestedCondition):
            return self._will_be_requested(key, candidates, root, partitioned)
        if isinstance(condition, InitialEvaluationCondition):
            first = root.previous is None
            return (candidates if first else EMPTY), ("first evaluation of this condition" if first else "evaluated before")
        if isinstance(condition, CronTickPassedCondition):
            return self._cron_tick_passed(condition, candidates, root)
        if isinstance(condition, InLatestTimeWindowCondition):
            return self._in_latest_time_window(condition, key, candidates)
        raise TypeError(f"automation: no evaluation for condition {condition!r}")  # a new node kind without a case

    def _will_be_requested(self, key: AssetKey, candidates: Subset, root: _Root, partitioned: bool) -> tuple[Subset, str]:
        requested = self.requested.get(key, EMPTY) & candidates
        if requested and key != root.key and not _runs_together(
            self.graph.assets[key].partitions_def, self.graph.assets[root.key].partitions_def
        ):
            return EMPTY, f"requested, but in a run '{root.key}' cannot join (other partitions)"
        return requested, _fact(requested, partitioned, "requested in this evaluation", "not requested in this evaluation")

    def _cron_tick_passed(self, condition: CronTickPassedCondition, candidates: Subset, root: _Root) -> tuple[Subset, str]:
        if root.previous is None:
            return EMPTY, "first evaluation: no previous evaluation to count ticks from"
        since = datetime.fromtimestamp(root.previous.evaluation_time, tz=self.now.tzinfo)
        ticks = _ticks_passed(condition, since, self.now)
        if ticks:
            return candidates, f"tick {ticks[-1].isoformat()} passed"
        return EMPTY, f"no tick since {since.isoformat()}"

    def _in_latest_time_window(self, condition: InLatestTimeWindowCondition, key: AssetKey, candidates: Subset) -> tuple[Subset, str]:
        definition = self.graph.assets[key].partitions_def
        if not isinstance(definition, TimeWindowPartitionsDefinition):
            return candidates, "not time-partitioned: always in the latest window"
        keys = self.keys(key)
        if not keys:
            return EMPTY, "no partition exists yet"
        latest = definition.time_window_for_key(str(keys[-1]))
        inside = {keys[-1]}
        if condition.lookback_delta is not None:
            start = latest.end - condition.lookback_delta
            for partition in reversed(keys[:-1]):
                if definition.time_window_for_key(str(partition)).start < start:
                    break
                inside.add(partition)
        true = candidates & frozenset(inside)
        return true, f"latest window ends {latest.end.isoformat()}; " + (
            _describe(true) if true else "candidates are older"
        )

    # -- records ---------------------------------------------------------------------------------

    def _record(
        self,
        condition: AutomationCondition,
        key: AssetKey,
        candidates: Subset,
        true: Subset,
        why: str,
        children: Sequence[_Result],
    ) -> _Result:
        runs = self.encode(key, true)
        record = NodeRecord(
            label=condition.label,
            name=condition.name,
            description=condition.description,
            asset=key.to_user_string(),
            true_count=len(true),
            candidate_count=len(candidates),
            true_runs=runs[:MAX_RUNS],
            truncated=len(runs) > MAX_RUNS,
            why=f"{condition.display()}: {'true' if true else 'false'} — {why}",
            children=[c.record for c in children],
        )
        return _Result(true, record)


# -- small pieces ------------------------------------------------------------------------------


def _ticks_passed(condition: CronTickPassedCondition, since: datetime, now: datetime) -> list[datetime]:
    if now <= since:
        return []
    tz = validate_timezone("cron_tick_passed", condition.cron_timezone)
    from tidegate.definitions.cron import validate_cron

    cron = validate_cron("cron_tick_passed", condition.cron_schedule)
    # the latest tick is what matters; look back no further than needed
    return ticks_between(cron, tz, max(since, now - timedelta(days=400)), now)[-1:]


def _runs_together(a: PartitionsDefinition | None, b: PartitionsDefinition | None) -> bool:
    """Requests of two assets can share a run when they have the same partitions (or none)."""
    return a == b


def _as_runs(runs: list[list[PartitionKey]]) -> tuple[tuple[PartitionKey, PartitionKey], ...]:
    return tuple((first, last) for first, last in runs)


def _sort_key(partition: PartitionKey) -> str:
    return "" if partition is None else partition


def _title(result: _Result | None) -> str:
    if result is None:
        return "?"
    return result.record.label or result.record.why.split(": ", 1)[0]


def _describe(subset: Collection[PartitionKey]) -> str:
    keys = sorted((k for k in subset if k is not None))
    if not keys:
        return ""
    if len(keys) == 1:
        return f"partition {keys[0]}"
    shown = ", ".join(keys[:SAMPLE_SIZE])
    more = f", … ({len(keys)} in all)" if len(keys) > SAMPLE_SIZE else ""
    return f"{len(keys)} partitions: {shown}{more}"


def _fact(true: Subset, partitioned: bool, yes: str, no: str) -> str:
    if not partitioned:
        return yes if true else no
    return f"{_describe(true)} {yes}" if true else no


def _dep_fact(dep: AssetKey, true: Subset, partitioned: bool) -> str:
    where = f" {_describe(true)}" if partitioned and true else ""
    return f"upstream '{dep}'{where}"


def _dep_name(fact: str) -> str:
    return fact.split("'")[1]


def _deps_verb(condition: DepsAutomationCondition) -> str:
    """``any_deps_missing`` -> "missing"; an unlabelled one names its operand."""
    label = condition.label or ""
    for prefix in ("any_deps_", "all_deps_"):
        if label.startswith(prefix):
            return label[len(prefix) :].replace("_", " ")
    return f"matches {condition.operand.display()}"


def _or_why(children: Sequence[_Result], true: Subset) -> str:
    held = [_title(c) for c in children if c.true]
    return f"'{held[0]}' is true" if held else "no operand true"


def _not_why(child: _Result, candidates: Subset) -> str:
    """A NOT is explained by its operand: ``~any_deps_missing: false — upstream 'orders' … missing``."""
    return child.record.why.split(" — ", 1)[1] if " — " in child.record.why else _title(child)


def _walk_groups(graph: AssetGraph, requested: Mapping[AssetKey, Collection[PartitionKey]]) -> Iterator[AssetKey]:
    for key in graph.order:
        if requested.get(key):
            yield key


def group_requests(graph: AssetGraph, requested: Mapping[AssetKey, Collection[PartitionKey]]) -> list[AutomationRunGroup]:
    """The runs (and backfills) to create for ``requested``.

    One run per (partitions definition, partition key): every unpartitioned request of the
    tick shares one run, so an eager chain runs in one run in dependency order; requests of
    one partition key of assets with the same partitions share one. An asset requested for
    several partitions becomes a backfill (shared with the assets requested for exactly the
    same partitions of the same definition).
    """
    runs: dict[tuple[object, PartitionKey], list[AssetKey]] = {}
    backfills: dict[tuple[object, tuple[str, ...]], list[AssetKey]] = {}
    for key in _walk_groups(graph, requested):
        definition = graph.assets[key].partitions_def
        partitions = sorted(requested[key], key=_sort_key)
        token = _definition_token(definition)
        if len(partitions) > 1:
            backfills.setdefault((token, tuple(str(p) for p in partitions)), []).append(key)
        else:
            runs.setdefault((token, partitions[0]), []).append(key)
    groups = [
        AutomationRunGroup(asset_keys=tuple(keys), partition_key=partition, is_backfill=False)
        for (_, partition), keys in runs.items()
    ]
    groups += [
        AutomationRunGroup(asset_keys=tuple(keys), partition_key=None, is_backfill=True, partition_keys=partitions)
        for (_, partitions), keys in backfills.items()
    ]
    return sorted(groups, key=lambda g: (g.is_backfill, _sort_key(g.partition_key), g.partition_keys, g.asset_keys))


def _definition_token(definition: PartitionsDefinition | None) -> object:
    try:
        hash(definition)
    except TypeError:
        return id(definition)
    return definition
