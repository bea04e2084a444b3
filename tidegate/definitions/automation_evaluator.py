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
dependency was requested on this or the previous evaluation, no partitions definition gained
a partition (for an asset with partitions on either side), and no tick of a cron in its
condition passed since. A dependency condition without state is evaluated once per
dependency per tick, whatever the number of dependents.

Fast paths (``automation_plain``): an unpartitioned asset's own condition runs as a program
compiled once per condition object (closures, every subset a bool), as does a dependency
condition's operand on an unpartitioned dependency (its result, and the subtree of values a
record shows under the dependency condition), and assets whose new states are equal share
one AssetCursor; ``fast_paths=False`` turns them off.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, cast

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
from tidegate.definitions.automation_explain import (
    FACTS,
    SHOWN_FACTS,
    dep_fact,
    deps_verb,
    describe,
    first_facts,
)
from tidegate.definitions.automation_plain import EVENT_OPERANDS, compile_dep_operand, compile_dep_values, compile_plain
from tidegate.definitions.automation_plan import (
    GraphPlan,
    definition_token,
    graph_plan,
    group_requests,
    partition_mapping,
    runs_together,
    sort_key,
)
from tidegate.definitions.automation_records import (
    MAX_RUNS,
    AssetCursor,
    AssetSlice,
    AutomationCursor,
    AutomationResult,
    AutomationRunGroup,
    EvaluationRecord,
    NodeCursor,
    PartitionKey,
)
from tidegate.definitions.cron import next_tick, validate_cron, validate_timezone
from tidegate.definitions.graph import AssetGraph
from tidegate.definitions.key import AssetKey
from tidegate.definitions.partitions import (
    AllPartitionMapping,
    IdentityPartitionMapping,
    PartitionMapping,
    TimeWindow,
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
Values = Sequence[object]  # a node's stored values (see automation_explain)
EXPLAINED_DEPS = 3  # dependency subtrees kept in a record (those that decided the outcome)


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
    *,
    fast_paths: bool = True,
) -> AutomationResult:
    """Evaluate the conditions of ``targets`` in topological order (targets without a
    condition, or external, are left out).

    ``changed``: the assets whose AssetSlice may differ from the previous evaluation's (any of
    its five sets); None treats every asset as changed. ``evaluations`` holds a record for
    each asset whose condition ran; an asset left out was skipped and its latest record stands.
    ``fast_paths=False`` evaluates with the general code only: an unpartitioned asset's
    condition and a dependency operand on an unpartitioned dependency not by their compiled
    programs (``automation_plain``), an unpartitioned dependent's dependencies not by their
    shortcut loop. The results are the same: what the tests compare the fast paths against.
    """
    evaluation = _Evaluation(graph, inputs, evaluation_time, cursor or AutomationCursor(), changed)
    evaluation.fast_paths = fast_paths
    return evaluation.run(targets)


# -- one evaluation ------------------------------------------------------------------------------


@dataclass
class _Root:
    """The asset whose condition is being evaluated, and what its evaluation collects."""

    key: AssetKey
    previous: AssetCursor | None  # None on the first evaluation of this condition
    nodes: dict[str, NodeCursor] = field(default_factory=dict)
    volatile: bool = False  # an event operand was true: the next evaluation may differ


_MISSING = object()


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
        self.fast_paths = True
        self.requested: dict[AssetKey, Subset] = {}
        self._keys: dict[AssetKey, tuple[PartitionKey, ...]] = {}
        self._index: dict[AssetKey, dict[PartitionKey, int]] = {}
        self._slices: dict[AssetKey, AssetSlice] = {}
        self._selections: dict[int, set[AssetKey]] = {}
        self._deps_cache: dict[tuple[int, AssetKey], list[AssetKey]] = {}
        self._sorted_upstream: dict[AssetKey, list[AssetKey]] = {}
        self._canonical: dict[AssetKey, AssetKey] = {}
        self._full: dict[AssetKey, Subset] = {}
        # per shared key sequence (its id; the sequence is kept alive in ``_shared``/``_keys``)
        self._shared: dict[int, tuple[Sequence[PartitionKey], tuple[PartitionKey, ...]]] = {}
        self._full_of: dict[int, Subset] = {}
        self._index_of: dict[int, dict[PartitionKey, int]] = {}
        self._windows: dict[tuple[int, object, object], tuple[TimeWindow, Subset]] = {}
        self._names: dict[AssetKey, str] = {}
        self._dep_results: dict[object, tuple[Subset, bool]] = {}  # (operand, dep, parents, token)
        self._dep_full: dict[tuple[str, int], dict[AssetKey, tuple[Subset, bool]]] = {}
        self._token_ids: dict[object, int] = {}
        self._together: dict[tuple[int, int], bool] = {}
        self._mappings: dict[tuple[AssetKey, AssetKey], PartitionMapping] = {}
        self._missing: dict[AssetKey, Subset] = {}  # per asset: its missing partitions, of all
        self._dep_records: dict[tuple[str, AssetKey, Subset, object, AssetKey | None], tuple[list[Values], bool]] = {}
        self._nested: dict[int, bool] = {}  # per operand (id): whether it has dependency conditions inside
        self._cron_cache: dict[tuple[str, str, float], bool] = {}
        self._tokens: dict[AssetKey, int] = {}  # per asset: its partitions definition's token's number
        self._plains: dict[AssetKey, bool] = {}
        self._verbs: dict[int, str] = {}  # per dependency condition (id): its verb in reasons
        self._kept: list[AutomationCondition] = []  # the conditions keyed by id above, kept alive
        self._asset_cursors: dict[tuple[object, ...], AssetCursor] = {}  # by content: see _asset_cursor

    # -- inputs, memoized ----------------------------------------------------------------------

    def keys(self, key: AssetKey) -> tuple[PartitionKey, ...]:
        found = self._keys.get(key)
        if found is None:
            raw = self.inputs.partition_keys(key)
            # Assets of one partitions definition get the same sequence from the inputs: its
            # tuple, set and index are built once per definition, not once per asset.
            shared = self._shared.get(id(raw))
            if shared is None or shared[0] is not raw:
                shared = self._shared[id(raw)] = (raw, tuple(raw))
            found = self._keys[key] = shared[1]
        return found

    def full(self, key: AssetKey) -> Subset:
        found = self._full.get(key)
        if found is None:
            keys = self.keys(key)
            found = self._full_of.get(id(keys))
            if found is None:
                found = self._full_of[id(keys)] = frozenset(keys)
            self._full[key] = found
        return found

    def index(self, key: AssetKey) -> dict[PartitionKey, int]:
        found = self._index.get(key)
        if found is None:
            keys = self.keys(key)
            found = self._index_of.get(id(keys))
            if found is None:
                found = self._index_of[id(keys)] = {k: i for i, k in enumerate(keys)}
            self._index[key] = found
        return found

    def decode(self, key: AssetKey, runs: Sequence[Sequence[PartitionKey]]) -> Subset:
        """The keys covered by ``runs`` (a run whose ends no longer exist is dropped)."""
        if not runs:
            return EMPTY
        index, ordered = self.index(key), self.keys(key)
        found: set[PartitionKey] = set()
        for first, last in runs:
            i, j = index.get(first), index.get(last)
            if i is not None and j is not None and i <= j:
                found.update(ordered[i : j + 1])
        return frozenset(found)

    def slice(self, key: AssetKey) -> AssetSlice:
        found = self._slices.get(key)
        if found is None:
            found = self._slices[key] = self.inputs.slice(key)
        return found

    def encode(self, key: AssetKey, subset: Collection[PartitionKey]) -> list[list[PartitionKey]]:
        """Runs of consecutive keys. Sorts only the smaller of the subset and its complement:
        "every partition but three" costs as little as "three partitions"."""
        if not subset:
            return []
        ordered = self.keys(key)
        if len(ordered) == 1:  # an unpartitioned asset: its one "partition", or nothing
            return [[ordered[0], ordered[0]]] if ordered[0] in subset else []
        index = self.index(key)
        if len(subset) * 2 <= len(ordered):
            return _runs_of(sorted(index[k] for k in subset if k in index), ordered)
        gaps = sorted(index[k] for k in self.full(key).difference(subset))
        runs: list[list[PartitionKey]] = []
        start = 0
        for gap in [*gaps, len(ordered)]:
            if gap > start:
                runs.append([ordered[start], ordered[gap - 1]])
            start = gap + 1
        return runs

    def partitions_fingerprint(self, plan: GraphPlan) -> str:
        """One string that changes when any partitions definition gains or loses a partition
        (a new day, a dynamic key): computed once per definition, not per asset."""
        parts = []
        for representative in plan.definition_representatives:
            keys = self.keys(representative)
            parts.append(f"{len(keys)}:{keys[0] if keys else ''}:{keys[-1] if keys else ''}")
        return "|".join(parts)

    # -- the walk ------------------------------------------------------------------------------

    def run(self, targets: Collection[AssetKey]) -> AutomationResult:
        plan = graph_plan(self.graph)
        domain = _domain(self.graph, plan, targets)
        self._sorted_upstream = domain.sorted_upstream
        self._canonical = domain.canonical
        partitions = self.partitions_fingerprint(plan)
        partitions_changed = partitions != self.cursor.partitions_fingerprint
        previous_assets = self.cursor.assets
        # The new cursor starts as the previous one (restricted to the targets): an asset not
        # evaluated keeps its entry.
        if self.cursor.__dict__.get("_domain") is domain:  # its keys are exactly the domain's
            cursors: dict[AssetKey, AssetCursor] = dict(previous_assets)
        else:
            cursors = {k: previous_assets[k] for k in domain.order if k in previous_assets}
        # Which assets to evaluate, without walking the graph: those whose inputs may have
        # changed (changed assets and their children, the children of assets requested on the
        # previous evaluation: newly_requested flips), those whose last evaluation was not
        # stable (or never happened, or was of another condition), those reading beyond their
        # dependencies, with a cron (evaluated when a tick passed), or partition-sensitive
        # when a partitions definition gained a partition. Evaluated in topological order;
        # an asset requested now makes its children due (will_be_requested).
        settled_not = _unsettled(self.cursor, domain, self.graph) if self.changed is not None else frozenset()
        due: set[AssetKey]
        if self.changed is None:
            due = set(domain.order)
        else:
            due = set(settled_not)
            due.update(domain.always)
            for key in self.changed:
                due.add(key)
                due.update(self.graph.downstream.get(key, ()))
            for key in _requested_keys(self.cursor):
                due.add(key)
                due.update(self.graph.downstream.get(key, ()))
            if partitions_changed:
                due.update(plan.partition_sensitive)
            for key in domain.crons:
                stored = previous_assets.get(key)
                condition = self.graph.assets[key].automation_condition
                if stored is not None and condition is not None and self._cron_due(condition, stored):
                    due.add(key)
        position = domain.position
        heap = [position[k] for k in due if k in position]
        heapq.heapify(heap)
        seen: set[int] = set()
        evaluations: dict[AssetKey, EvaluationRecord] = {}
        unsettled: set[AssetKey] = (
            set(_unsettled(self.cursor, domain, self.graph)) if self.changed is not None else set()
        )
        while heap:
            at = heapq.heappop(heap)
            if at in seen:
                continue
            seen.add(at)
            key = domain.order[at]
            condition = self.graph.assets[key].automation_condition
            assert condition is not None
            previous = previous_assets.get(key)
            if previous is not None and previous.condition_hash != condition.fingerprint():
                previous = None
            cursors[key], evaluations[key] = self._evaluate_asset(key, condition, previous)
            if cursors[key].stable:
                unsettled.discard(key)
            else:
                unsettled.add(key)
            if key in self.requested:
                for child in self.graph.downstream.get(key, ()):
                    found = position.get(child)
                    if found is not None and found not in seen:
                        heapq.heappush(heap, found)
        cursor = AutomationCursor(
            evaluation_time=self.now.timestamp(), assets=cursors, partitions_fingerprint=partitions
        )
        cursor.__dict__["_domain"] = domain  # caches beside the frozen fields: the next evaluation's start
        cursor.__dict__["_unsettled"] = (domain, frozenset(unsettled))
        cursor.__dict__["_requested_keys"] = frozenset(self.requested)
        return AutomationResult(
            requested=dict(self.requested),
            cursor=cursor,
            evaluations=evaluations,
            evaluated=len(evaluations),
        )

    def _evaluate_asset(
        self, key: AssetKey, condition: AutomationCondition, previous: AssetCursor | None
    ) -> tuple[AssetCursor, EvaluationRecord]:
        root = _Root(key, previous)
        values: list[Values] = []
        if self.fast_paths and self._plain(key) and self.keys(key) == _PLAIN_KEYS:
            # every subset is the one partition or nothing: the condition's compiled program
            requested = self.full(key) if compile_plain(condition)(self, key, True, root, values) else EMPTY
        else:
            requested = self.node(condition, "0", key, self.full(key), root, values)
        if requested:
            self.requested[key] = requested
        stable = previous is not None and not root.volatile and not requested and previous.nodes == root.nodes
        cursor = self._asset_cursor(condition.fingerprint(), _as_runs(self.encode(key, requested)), root.nodes, stable)
        record = EvaluationRecord(
            asset_key=key,
            evaluation_time=self.now,
            requested=sorted(requested, key=sort_key),
            condition=condition,
            nodes=values,
        )
        return cursor, record

    def _asset_cursor(
        self,
        condition_hash: str,
        requested: tuple[tuple[PartitionKey, PartitionKey], ...],
        nodes: dict[str, NodeCursor],
        stable: bool,
    ) -> AssetCursor:
        """An asset's new state. Assets whose states are equal share one AssetCursor (it is
        frozen), so its JSON (``json_fragment``) is serialized once: on the bench's 1%-updated
        tick the 4,418 assets evaluated have 6 distinct states. ``fast_paths=False`` builds
        one per asset, what the tests compare the shared ones against."""
        time = self.now.timestamp()
        if not self.fast_paths:
            return AssetCursor(condition_hash, time, requested, nodes, stable)
        shape = (condition_hash, requested, stable, *[(node_id, node.subset) for node_id, node in nodes.items()])
        found = self._asset_cursors.get(shape)
        if found is None:
            found = self._asset_cursors[shape] = AssetCursor(condition_hash, time, requested, nodes, stable)
        return found

    def _cron_due(self, condition: AutomationCondition, previous: AssetCursor) -> bool:
        """Whether a tick of a cron in ``condition`` passed since ``previous`` was evaluated."""
        for node in condition.cron_nodes:
            cache_key = (node.cron_schedule, node.cron_timezone, previous.evaluation_time)
            due = self._cron_cache.get(cache_key)
            if due is None:
                since = datetime.fromtimestamp(previous.evaluation_time, tz=self.now.tzinfo)
                due = self._cron_cache[cache_key] = _first_tick_after(node, since, self.now) is not None
            if due:
                return True
        return False

    # -- nodes -----------------------------------------------------------------------------------

    def node(
        self,
        condition: AutomationCondition,
        node_id: str,
        key: AssetKey,
        candidates: Subset,
        root: _Root,
        out: list[Values] | None = None,
    ) -> Subset:
        """Evaluate one node on ``candidates`` of ``key``: its true subset. With ``out``, its
        stored values are appended there, then its children's (see ``automation_explain``)."""
        slot = -1
        if out is not None:
            slot = len(out)
            out.append(_NOT_EVALUATED)
        if not candidates and not condition.is_stateful:
            return EMPTY  # its values: _NOT_EVALUATED
        extra: dict[str, object] | None = None
        kind = type(condition)
        # the kind is known: its attributes are read without cast() (a function call per node)
        if kind is AndAutomationCondition:
            true = candidates
            operands: tuple[AutomationCondition, ...] = condition.operands  # type: ignore[attr-defined]
            for i, operand in enumerate(operands):
                # every operand runs, even on no candidates: stateful ones must stay current
                true = true & self.node(operand, _child_id(node_id, i, operand), key, true, root, out)
        elif kind is OrAutomationCondition:
            operands = condition.operands  # type: ignore[attr-defined]
            found = [self.node(c, _child_id(node_id, i, c), key, candidates, root, out) for i, c in enumerate(operands)]
            true = frozenset().union(*found) & candidates
        elif kind is NotAutomationCondition:
            operand = condition.operand  # type: ignore[attr-defined]
            true = candidates - self.node(operand, _child_id(node_id, 0, operand), key, candidates, root, out)
        elif kind is SinceCondition:
            true, extra = self._since(condition, node_id, key, candidates, root, out)  # type: ignore[arg-type]
        elif kind is NewlyTrueCondition:
            true, extra = self._newly_true(condition, node_id, key, candidates, root, out)  # type: ignore[arg-type]
        else:
            true, extra = self.leaf(condition, node_id, key, candidates, root, out)
        if out is not None:
            if extra is None and (not true or self._plain(key)):
                out[slot] = (len(true), len(candidates))
            else:
                out[slot] = self._values(key, candidates, true, extra)
        return true

    def leaf(
        self,
        condition: AutomationCondition,
        node_id: str,
        key: AssetKey,
        candidates: Subset,
        root: _Root,
        out: list[Values] | None,
    ) -> tuple[Subset, dict[str, object] | None]:
        """A node without operands of its own kind: a dependency condition, or an operand
        (its true subset, and what its stored values need beside the counts)."""
        if isinstance(condition, DepsAutomationCondition):
            return self._deps(condition, node_id, key, candidates, root, out)
        true, reason = self._operand(condition, key, candidates, root)
        if true and isinstance(condition, EVENT_OPERANDS):
            root.volatile = True
        return true, None if reason is None else {"w": reason}

    def plain_full(self, key: AssetKey) -> Subset:
        """``full`` of an unpartitioned asset (what the compiled plain program asks)."""
        return self.full(key)

    def joins(self, dep: AssetKey, key: AssetKey) -> bool:
        """Whether requests of ``dep`` and ``key`` can share a run (what will_be_requested checks)."""
        return self._runs_together(dep, key)

    def previous_request(self, key: AssetKey) -> AssetCursor | None:
        """The previous evaluation's state of ``key`` (its ``requested``: newly_requested)."""
        return self.cursor.assets.get(key)

    def _values(self, key: AssetKey, candidates: Subset, true: Subset, extra: dict[str, object] | None) -> Values:
        """A node's stored values: the counts, and what explain cannot derive (the true
        subset of a partitioned asset as runs, a reason)."""
        if true and not self._plain(key):
            runs = self.encode(key, true)
            if extra is None:
                extra = {}
            if len(runs) > MAX_RUNS:
                extra["r"], extra["x"] = runs[:MAX_RUNS], 1
            else:
                extra["r"] = runs
        if extra is None:
            return (len(true), len(candidates))
        return (len(true), len(candidates), extra)

    def _since(
        self,
        condition: SinceCondition,
        node_id: str,
        key: AssetKey,
        candidates: Subset,
        root: _Root,
        out: list[Values] | None,
    ) -> tuple[Subset, dict[str, object] | None]:
        full = self.full(key)
        trigger = self.node(condition.trigger_condition, f"{node_id}.0", key, full, root, out)
        reset = self.node(
            condition.reset_condition, _child_id(node_id, 1, condition.reset_condition), key, full, root, out
        )
        state = (self._state(root, node_id, key) | trigger) - reset
        root.nodes[node_id] = NodeCursor(_as_runs(self.encode(key, state)))
        true = state & candidates
        if out is None or self._plain(key):
            return true, None  # explain derives whether the reset held on the candidates
        return true, {"h": 1 if reset & candidates else 0}

    def _newly_true(
        self,
        condition: NewlyTrueCondition,
        node_id: str,
        key: AssetKey,
        candidates: Subset,
        root: _Root,
        out: list[Values] | None,
    ) -> tuple[Subset, dict[str, object] | None]:
        child = self.node(condition.operand, _child_id(node_id, 0, condition.operand), key, self.full(key), root, out)
        before = self._state(root, node_id, key)
        root.nodes[node_id] = NodeCursor(_as_runs(self.encode(key, child)))
        true = (child - before) & candidates
        if out is None or self._plain(key):
            return true, None
        return true, {"h": 1 if child & candidates else 0}

    def _deps(
        self,
        condition: DepsAutomationCondition,
        node_id: str,
        key: AssetKey,
        candidates: Subset,
        root: _Root,
        out: list[Values] | None,
    ) -> tuple[Subset, dict[str, object] | None]:
        deps = self._selected_deps(condition, key)
        is_all = isinstance(condition, AllDepsCondition)
        true = candidates if is_all else EMPTY
        # dep, its candidates (None: all its partitions), its true, mapped
        outcomes: list[tuple[AssetKey, Subset | None, Subset, Subset]] = []
        decided = not condition.operand.is_stateful  # without state, stop once the outcome is known
        plain = self._plain(key)  # every partition of each dependency maps to it
        operand = condition.operand
        shared = None if operand.is_stateful or operand.reads_evaluation_state else operand.fingerprint()
        token = self._token(root.key)
        if plain and candidates and shared is not None and self.fast_paths:
            # An unpartitioned dependent: each dependency's operand on all of its partitions,
            # whose result (once per evaluation) decides alone.
            memo = self._dep_full_results(shared, token)
            fulls = self._full
            for dep in deps:
                hit = memo.get(dep)
                if hit is None:
                    dep_true = self._dep_operand(operand, "", dep, fulls.get(dep) or self.full(dep), root)
                else:
                    if hit[1]:
                        root.volatile = True
                    dep_true = hit[0]
                if dep_true:
                    mapped = candidates
                    if not is_all:
                        true = candidates
                else:
                    mapped = EMPTY
                    if is_all:
                        true = EMPTY
                outcomes.append((dep, None, dep_true, mapped))
                if not true if is_all else true:
                    break
        else:
            for dep in deps:
                parents = self._parents(key, dep, candidates)
                dep_id = self._dep_node_id(node_id, dep) if operand.is_stateful else ""
                dep_true = self._dep_operand(operand, dep_id, dep, parents, root)
                if plain:  # _children_matching, inline for an unpartitioned dependent
                    mapped = candidates if dep_true and candidates else EMPTY
                    if is_all:
                        true = mapped if true else EMPTY
                    elif mapped:
                        true = mapped
                else:
                    mapped = self._children_matching(key, dep, dep_true, candidates)
                    true = true & mapped if is_all else true | mapped
                outcomes.append((dep, parents, dep_true, mapped))
                if decided and (not true if is_all else len(true) == len(candidates)):
                    break
        if out is None:
            return true, None
        # The record keeps the subtrees that explain the outcome (the dependencies that
        # matched, or for ALL those that did not), evaluated again with their values.
        telling = [o for o in outcomes if bool(o[3]) != is_all] or outcomes[:1]
        shown = telling[:EXPLAINED_DEPS]
        extra: dict[str, object] = {"w": self._deps_why(condition, key, deps, outcomes, true, is_all)}
        if shown:
            extra["d"] = [self.name(dep) for dep, _, _, _ in shown]
        for dep, dep_parents, _, _ in shown:
            dep_id = self._dep_node_id(node_id, dep) if operand.is_stateful else ""
            self._explained_dep(operand, dep_id, dep, self.full(dep) if dep_parents is None else dep_parents, root, out)
        return true, extra

    def _deps_why(
        self,
        condition: DepsAutomationCondition,
        key: AssetKey,
        deps: Sequence[AssetKey],
        outcomes: Sequence[tuple[AssetKey, Subset | None, Subset, Subset]],
        true: Subset,
        is_all: bool,
    ) -> str:
        """A dependency condition's reason (only the facts shown are built, the others counted)."""
        what = self._verbs.get(id(condition))
        if what is None:
            what = self._verbs[id(condition)] = deps_verb(condition)
            self._kept.append(condition)  # its id stays its own while the evaluation lives
        if not deps:
            return "no dependencies (after allow/ignore)"
        if is_all and true:
            return f"every dependency {what}"
        if is_all:
            unmatched = [o[0] for o in outcomes if not o[3]]
            named = [f"upstream '{self.name(d)}'" for d in unmatched[:SHOWN_FACTS]]
            return (
                f"not {what}: {first_facts(named, len(unmatched))}"
                if unmatched
                else f"dependencies {what} only for other partitions"
            )
        if true:
            matched = [o for o in outcomes if o[3]]
            shown = []
            for dep, _, dep_true, mapped in matched[:SHOWN_FACTS]:
                facts = dep_true & self._parents(key, dep, mapped) if not self._plain(dep) else dep_true
                shown.append(f"{dep_fact(self.name(dep), facts, not self._plain(dep))} {what}")
            return first_facts(shown, len(matched))
        return f"no dependency {what}"

    def _dep_operand(
        self, operand: AutomationCondition, node_id: str, dep: AssetKey, parents: Subset, root: _Root
    ) -> Subset:
        """A dependency condition's operand on ``dep``. Without state and without reading the
        evaluated asset's history, its result is the same for every dependent asset with the
        same partitions definition: computed once per evaluation (a dependency read by many
        assets is evaluated once)."""
        if operand.is_stateful or operand.reads_evaluation_state:
            return self.node(operand, node_id, dep, parents, root)
        table: dict[object, tuple[Subset, bool]]
        cache_key: object
        if parents is self.full(dep):  # the common case, keyed by the dependency alone
            table, cache_key = (
                cast(
                    dict[object, tuple[Subset, bool]],
                    self._dep_full_results(operand.fingerprint(), self._token(root.key)),
                ),
                dep,
            )
        else:
            table, cache_key = self._dep_results, (operand.fingerprint(), dep, parents, self._token(root.key))
        hit = table.get(cache_key)
        if hit is None:
            volatile, root.volatile = root.volatile, False
            # an unpartitioned dependency: the operand's compiled program, where it has one
            program = compile_dep_operand(operand) if self.fast_paths and parents and self._plain(dep) else None
            if program is not None:
                true = parents if program(self, dep, root) else EMPTY
            else:
                true = self.node(operand, node_id, dep, parents, root)
            hit = table[cache_key] = (true, root.volatile)
            root.volatile = volatile
        if hit[1]:
            root.volatile = True
        return hit[0]

    def _dep_full_results(self, fingerprint: str, token: int) -> dict[AssetKey, tuple[Subset, bool]]:
        """The results (and volatility) of a dependency operand without state on each
        dependency's every partition, for dependents of one partitions definition."""
        found = self._dep_full.get((fingerprint, token))
        if found is None:
            found = self._dep_full[fingerprint, token] = {}
        return found

    def _explained_dep(
        self,
        operand: AutomationCondition,
        node_id: str,
        dep: AssetKey,
        parents: Subset,
        root: _Root,
        out: list[Values],
    ) -> None:
        """A dependency condition's operand on ``dep``, its values appended to ``out``. As for
        ``_dep_operand``: without state, without reading the evaluated asset's history and
        without dependencies of its own, the values are the same for every dependent with the
        same partitions definition (and, when that differs from the dependency's, the same
        asset: will_be_requested names it), so they are computed once per evaluation and shared
        (they are never changed once made)."""
        nested = self._nested.get(id(operand))
        if nested is None:
            nested = self._nested[id(operand)] = any(isinstance(n, DepsAutomationCondition) for n in operand.walk())
            self._kept.append(operand)
        if operand.is_stateful or operand.reads_evaluation_state or nested:
            self.node(operand, node_id, dep, parents, root, out)
            return
        who = None if self._runs_together(dep, root.key) else root.key
        cache_key = (operand.fingerprint(), dep, parents, self._token(root.key), who)
        hit = self._dep_records.get(cache_key)
        if hit is None:
            volatile, root.volatile = root.volatile, False
            values: list[Values] = []
            # an unpartitioned dependency: the operand's compiled program, where it has one
            program = compile_dep_values(operand) if self.fast_paths and self._plain(dep) else None
            if program is not None:
                program(self, dep, bool(parents), root, values)
            else:
                self.node(operand, node_id, dep, parents, root, values)
            hit = self._dep_records[cache_key] = (values, root.volatile)
            root.volatile = volatile
        if hit[1]:
            root.volatile = True
        out.extend(hit[0])

    def _token(self, key: AssetKey) -> int:
        """A number per distinct partitions definition (``definition_token``), hashed once per asset."""
        found = self._tokens.get(key)
        if found is None:
            token = definition_token(self.graph.assets[key].partitions_def)
            found = self._tokens[key] = self._token_ids.setdefault(token, len(self._token_ids))
        return found

    def _runs_together(self, a: AssetKey, b: AssetKey) -> bool:
        """``runs_together`` of two assets' partitions definitions, once per pair of definitions."""
        pair = (self._token(a), self._token(b))
        found = self._together.get(pair)
        if found is None:
            found = self._together[pair] = runs_together(
                self.graph.assets[a].partitions_def, self.graph.assets[b].partitions_def
            )
        return found

    def _mapping(self, child: AssetKey, parent: AssetKey) -> PartitionMapping:
        found = self._mappings.get((child, parent))
        if found is None:
            found = self._mappings[child, parent] = partition_mapping(self.graph, child, parent)
        return found

    def _dep_node_id(self, node_id: str, dep: AssetKey) -> str:
        return f"{node_id}[{self.name(dep)}]"

    def _selected_deps(self, condition: DepsAutomationCondition, key: AssetKey) -> list[AssetKey]:
        if condition.allow_selection is None and condition.ignore_selection is None:
            found = self._sorted_upstream.get(key)  # kept with the domain: sorted once, not every tick
            if found is None:
                # the graph's own key objects: a lookup by an equal but other AssetKey object
                # compares them in Python (hundreds of thousands of times a tick)
                canonical = self._canonical
                found = self._sorted_upstream[key] = [
                    canonical.get(dep, dep) for dep in sorted(self.graph.upstream[key])
                ]
            return found
        cache_key = (id(condition), key)
        found = self._deps_cache.get(cache_key)
        if found is None:
            deps = set(self.graph.upstream[key])
            if condition.allow_selection is not None:
                deps &= self._resolve(condition.allow_selection)
            if condition.ignore_selection is not None:
                deps -= self._resolve(condition.ignore_selection)
            found = self._deps_cache[cache_key] = sorted(deps)
        return found

    def _resolve(self, selection: AssetSelection) -> set[AssetKey]:
        found = self._selections.get(id(selection))
        if found is None:
            found = self._selections[id(selection)] = selection.resolve(self.graph)
        return found

    def _children_matching(self, child: AssetKey, parent: AssetKey, parents: Subset, candidates: Subset) -> Subset:
        """Partitions of ``child`` among ``candidates`` with at least one parent partition in ``parents``."""
        if not parents or not candidates:
            return EMPTY
        child_def = self.graph.assets[child].partitions_def
        parent_def = self.graph.assets[parent].partitions_def
        if parent_def is None or child_def is None:
            return candidates  # one side unpartitioned: every partition depends on every partition
        mapping = self._mapping(child, parent)
        if isinstance(mapping, IdentityPartitionMapping):
            return candidates if parents is candidates else candidates & parents
        if isinstance(mapping, AllPartitionMapping):
            return candidates
        return frozenset(
            c
            for c in candidates
            if any(p in parents for p in mapping.upstream_keys(c, child_def, parent_def, current_time=self.now))
        )

    def _parents(self, child: AssetKey, parent: AssetKey, children: Subset) -> Subset:
        """Partitions of ``parent`` that partitions ``children`` of ``child`` depend on."""
        if not children:
            return EMPTY
        child_def = self.graph.assets[child].partitions_def
        parent_def = self.graph.assets[parent].partitions_def
        if parent_def is None or child_def is None:
            return self.full(parent)
        mapping = self._mapping(child, parent)
        if isinstance(mapping, IdentityPartitionMapping):
            every = self.full(parent)
            # the same object when the child's candidates are all of a shared partition sequence:
            # a dependency's cached result is then found without hashing a thousand keys
            return every if children is every else children & every
        if isinstance(mapping, AllPartitionMapping):
            return self.full(parent)
        found: set[PartitionKey] = set()
        for c in children:
            found.update(mapping.upstream_keys(c, child_def, parent_def, current_time=self.now))
        return frozenset(found) & self.full(parent)

    def _state(self, root: _Root, node_id: str, key: AssetKey) -> Subset:
        if root.previous is None:
            return EMPTY
        node = root.previous.nodes.get(node_id)
        return self.decode(key, node.subset) if node is not None else EMPTY

    # -- operands --------------------------------------------------------------------------------

    def _operand(
        self, condition: AutomationCondition, key: AssetKey, candidates: Subset, root: _Root
    ) -> tuple[Subset, str | None]:
        """An operand's true subset, and its reason when explain cannot derive it from the
        kind and the counts alone (a fact about partitions, a cron, a time window)."""
        kind = type(condition)
        attribute = _SLICE_FACTS.get(kind)
        if attribute is not None:  # a set of the snapshot's AssetSlice
            facts: Subset = getattr(self.slice(key), attribute)
            if attribute != "materialized":
                true = candidates & facts  # iterates the smaller set
            elif candidates is self._full.get(key):
                # every partition missing or not: a thousand keys, asked by the asset and by
                # each of its dependents' conditions; once per evaluation
                found = self._missing.get(key)
                true = self._missing[key] = candidates - facts if found is None else found
            else:
                true = candidates - facts
            return true, self._fact(kind, key, true)
        if kind is NewlyRequestedCondition:
            own = self.cursor.assets.get(key)
            true = candidates & self.decode(key, own.requested) if own is not None else EMPTY
            return true, self._fact(kind, key, true)
        if kind is WillBeRequestedCondition:
            return self._will_be_requested(key, candidates, root)
        if kind is InitialEvaluationCondition:
            return (candidates if root.previous is None else EMPTY), None
        if isinstance(condition, CronTickPassedCondition):
            return self._cron_tick_passed(condition, candidates, root)
        if isinstance(condition, InLatestTimeWindowCondition):
            return self._in_latest_time_window(condition, key, candidates)
        raise TypeError(f"automation: no evaluation for condition {condition!r}")  # a new node kind without a case

    def _fact(self, kind: type, key: AssetKey, true: Subset) -> str | None:
        """The reason of a fact about a partitioned asset that held (which partitions); None
        when explain derives it (unpartitioned, or false)."""
        if not true or self._plain(key):
            return None
        return f"{describe(true)} {FACTS[kind][0]}"

    def _will_be_requested(self, key: AssetKey, candidates: Subset, root: _Root) -> tuple[Subset, str | None]:
        requested = self.requested.get(key, EMPTY) & candidates
        if requested and key != root.key and not self._runs_together(key, root.key):
            return EMPTY, f"requested, but in a run '{root.key}' cannot join (other partitions)"
        return requested, self._fact(WillBeRequestedCondition, key, requested)

    def _cron_tick_passed(
        self, condition: CronTickPassedCondition, candidates: Subset, root: _Root
    ) -> tuple[Subset, str]:
        if root.previous is None:
            return EMPTY, "first evaluation: no previous evaluation to count ticks from"
        since = datetime.fromtimestamp(root.previous.evaluation_time, tz=self.now.tzinfo)
        tick = _first_tick_after(condition, since, self.now)
        if tick is not None:
            return candidates, f"tick {tick.isoformat()} passed"
        return EMPTY, f"no tick since {since.isoformat()}"

    def _in_latest_time_window(
        self, condition: InLatestTimeWindowCondition, key: AssetKey, candidates: Subset
    ) -> tuple[Subset, str | None]:
        definition = self.graph.assets[key].partitions_def
        if not isinstance(definition, TimeWindowPartitionsDefinition):
            return candidates, None  # explain: not time-partitioned
        keys = self.keys(key)
        if not keys:
            return EMPTY, "no partition exists yet"
        window_key = (id(keys), definition, condition.lookback_delta)
        cached = self._windows.get(window_key)
        if cached is None:  # once per partition sequence and lookback, not per asset
            latest_window = definition.time_window_for_key(str(keys[-1]))
            inside = {keys[-1]}
            if condition.lookback_delta is not None:
                start = latest_window.end - condition.lookback_delta
                for partition in reversed(keys[:-1]):
                    if definition.time_window_for_key(str(partition)).start < start:
                        break
                    inside.add(partition)
            cached = self._windows[window_key] = (latest_window, frozenset(inside))
        latest = cached[0]
        true = candidates & cached[1]
        shown = describe(true) if true else "candidates are older"
        return true, f"latest window ends {latest.end.isoformat()}; {shown}"

    # -- small lookups ---------------------------------------------------------------------------

    def _plain(self, key: AssetKey) -> bool:
        """Whether ``key`` is unpartitioned (its one "partition" is None)."""
        found = self._plains.get(key)
        if found is None:
            found = self._plains[key] = self.graph.assets[key].partitions_def is None
        return found

    def name(self, key: AssetKey) -> str:
        found = self._names.get(key)
        if found is None:
            found = self._names[key] = key.to_user_string()
        return found


# -- what to evaluate ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Domain:
    """The assets one evaluation may evaluate (conditioned targets), computed once per
    (graph, targets): their topological order and position, those always evaluated (they
    read beyond their dependencies) and those with a cron."""

    targets: Collection[AssetKey]
    order: tuple[AssetKey, ...]
    position: dict[AssetKey, int]
    always: frozenset[AssetKey]
    crons: tuple[AssetKey, ...]
    sorted_upstream: dict[AssetKey, list[AssetKey]] = field(default_factory=dict)  # filled as asked
    canonical: dict[AssetKey, AssetKey] = field(default_factory=dict)  # each key -> the graph's own object


_DOMAINS: dict[tuple[int, int], tuple[GraphPlan, _Domain]] = {}


def _domain(graph: AssetGraph, plan: GraphPlan, targets: Collection[AssetKey]) -> _Domain:
    """The domain of ``targets`` (cached per plan and targets object: a beat passes the same
    list each tick)."""
    cache_key = (id(plan), id(targets))
    found = _DOMAINS.get(cache_key)
    if found is not None and found[0] is plan and found[1].targets is targets:
        return found[1]
    wanted = set(targets)
    order = tuple(k for k in plan.conditioned if k in wanted)
    conditions = {k: graph.assets[k].automation_condition for k in order}
    domain = _Domain(
        targets=targets,
        order=order,
        position={k: i for i, k in enumerate(order)},
        always=frozenset(k for k, c in conditions.items() if c is not None and c.reads_beyond_deps),
        crons=tuple(k for k, c in conditions.items() if c is not None and c.cron_nodes),
        canonical={k: k for k in graph.assets},
    )
    if len(_DOMAINS) > 16:
        _DOMAINS.clear()
    _DOMAINS[cache_key] = (plan, domain)
    return domain


def _unsettled(cursor: AutomationCursor, domain: _Domain, graph: AssetGraph) -> frozenset[AssetKey]:
    """The assets of ``domain`` that ``cursor`` cannot vouch for: never evaluated, evaluated
    under another condition, or not stable. Kept with a cursor that an evaluation produced;
    computed (one pass) for a cursor read from storage."""
    cached = cursor.__dict__.get("_unsettled")
    if cached is not None and cached[0] is domain:
        return cast(frozenset[AssetKey], cached[1])
    found = set()
    for key in domain.order:
        stored = cursor.assets.get(key)
        condition = graph.assets[key].automation_condition
        if stored is None or condition is None or not stored.stable or stored.condition_hash != condition.fingerprint():
            found.add(key)
    result = frozenset(found)
    cursor.__dict__["_unsettled"] = (domain, result)
    return result


def _requested_keys(cursor: AutomationCursor) -> frozenset[AssetKey]:
    """The assets ``cursor`` says were requested (kept with a cursor an evaluation produced)."""
    cached = cursor.__dict__.get("_requested_keys")
    if cached is None:
        cached = cursor.__dict__["_requested_keys"] = frozenset(k for k, c in cursor.assets.items() if c.requested)
    return cast(frozenset[AssetKey], cached)


# -- small pieces ------------------------------------------------------------------------------


def _first_tick_after(condition: CronTickPassedCondition, since: datetime, now: datetime) -> datetime | None:
    """The first tick of the condition's cron in ``(since, now]``, or None (one step of the
    cron, however long ago ``since`` was)."""
    if now <= since:
        return None
    tz = validate_timezone(condition.display(), condition.cron_timezone)
    tick = next_tick(validate_cron(condition.display(), condition.cron_schedule), tz, since)
    return tick if tick <= now else None


def _child_id(node_id: str, index: int, child: AutomationCondition) -> str:
    """A child node's id (``0.1.0``): it keys a stateful node's memory in the cursor, so a
    subtree without state needs none (and is not given one: a string per node per asset)."""
    return f"{node_id}.{index}" if child.is_stateful else ""


def _runs_of(positions: Sequence[int], ordered: Sequence[PartitionKey]) -> list[list[PartitionKey]]:
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


def _as_runs(runs: list[list[PartitionKey]]) -> tuple[tuple[PartitionKey, PartitionKey], ...]:
    return tuple((first, last) for first, last in runs)


_SLICE_FACTS: dict[type, str] = {  # operand -> the AssetSlice set it reads
    MissingCondition: "materialized",
    RunInProgressCondition: "run_in_progress",
    BackfillInProgressCondition: "backfill_in_progress",
    ExecutionFailedCondition: "failed",
    NewlyUpdatedCondition: "updated",
}
_NOT_EVALUATED: Values = (0, 0)
_PLAIN_KEYS = (None,)  # the partition keys of an unpartitioned asset
