"""What one automation evaluation reads and leaves behind, all JSON round-trippable.

``AssetSlice`` is the snapshot's facts about one asset; ``AutomationCursor`` is the state the
next evaluation starts from (per asset, per condition node: ``since`` and ``newly_true``
memories, the previous request, the previous evaluation time); ``EvaluationRecord`` is one
asset's evaluation on one tick, stored compact (the condition's template and per node its
counts) and explained when read: what ``tidegate automation explain`` prints.

Subsets of partitions are stored as runs of consecutive keys in the asset's partition order
(``[["2024-01-01", "2024-03-31"], ...]``), so three years of daily partitions cost one pair,
not a thousand strings. An unpartitioned asset's only "partition" is ``None``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, cast

from tidegate.definitions.automation_condition import AutomationCondition, from_template
from tidegate.definitions.automation_explain import SAMPLE_SIZE as SAMPLE_SIZE  # defined beside its use
from tidegate.definitions.automation_explain import PartitionKey as PartitionKey
from tidegate.definitions.automation_explain import explain
from tidegate.definitions.key import AssetKey

MAX_RUNS = 200  # runs of keys kept per stored subset; more and the subset is marked truncated


@dataclass(frozen=True)
class AssetSlice:
    """The snapshot's facts about one asset (partition key None = unpartitioned)."""

    materialized: frozenset[PartitionKey] = frozenset()  # a materialization at or below the upper id
    updated: frozenset[PartitionKey] = frozenset()  # materialized in (cursor's upper id, this upper id]
    failed: frozenset[PartitionKey] = frozenset()  # the latest execution of the partition failed
    run_in_progress: frozenset[PartitionKey] = frozenset()
    backfill_in_progress: frozenset[PartitionKey] = frozenset()


# -- subsets as runs of keys -------------------------------------------------------------------


def encode_subset(subset: Collection[PartitionKey], ordered: Sequence[PartitionKey]) -> list[list[PartitionKey]]:
    """``subset`` as runs ``[first, last]`` of consecutive keys of ``ordered``.

    Keys of ``subset`` not in ``ordered`` (a partition that no longer exists) are dropped.
    """
    runs: list[list[PartitionKey]] = []
    if not subset:
        return runs
    start: PartitionKey = None
    previous: PartitionKey = None
    inside = False
    for key in ordered:
        if key in subset:
            if not inside:
                start, inside = key, True
            previous = key
        elif inside:
            runs.append([start, previous])
            inside = False
    if inside:
        runs.append([start, previous])
    return runs


def decode_subset(runs: Iterable[Sequence[PartitionKey]], ordered: Sequence[PartitionKey]) -> frozenset[PartitionKey]:
    """The keys of ``ordered`` covered by ``runs`` (a run whose ends no longer exist is dropped)."""
    runs = list(runs)
    if not runs:
        return frozenset()
    index = {k: i for i, k in enumerate(ordered)}
    found: set[PartitionKey] = set()
    for first, last in runs:
        i, j = index.get(first), index.get(last)
        if i is not None and j is not None and i <= j:
            found.update(ordered[i : j + 1])
    return frozenset(found)


# -- the cursor ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeCursor:
    """A stateful node's memory: ``SINCE`` keeps its true subset, ``NEWLY_TRUE`` its operand's."""

    subset: tuple[tuple[PartitionKey, PartitionKey], ...]  # runs, as encode_subset


@dataclass(frozen=True)
class AssetCursor:
    """One asset's state after an evaluation."""

    condition_hash: str  # a changed condition starts over (initial_evaluation is true again)
    evaluation_time: float  # POSIX timestamp of the evaluation that wrote this
    requested: tuple[tuple[PartitionKey, PartitionKey], ...]  # runs: what that evaluation requested
    nodes: Mapping[str, NodeCursor] = field(default_factory=dict)  # by node id
    # True when re-evaluating with unchanged inputs gives the same result and state: the
    # evaluator may then skip this asset while neither it nor a dependency changed.
    stable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "hash": self.condition_hash,
            "time": self.evaluation_time,
            "requested": [list(r) for r in self.requested],
            "nodes": {node: [list(r) for r in n.subset] for node, n in self.nodes.items()},
            "stable": self.stable,
        }

    @cached_property
    def json_fragment(self) -> str:
        """``to_dict`` as compact JSON, computed once: an asset skipped on a tick keeps its
        AssetCursor, so the cursor's JSON re-serializes only the assets evaluated. The runs
        are encoded as the tuples they are (a JSON array either way), not copied into lists."""
        return _COMPACT.encode(
            {
                "hash": self.condition_hash,
                "time": self.evaluation_time,
                "requested": self.requested,
                "nodes": {node: n.subset for node, n in self.nodes.items()},
                "stable": self.stable,
            }
        )

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> AssetCursor:
        return cls(
            condition_hash=value["hash"],
            evaluation_time=float(value["time"]),
            requested=_runs(value["requested"]),
            nodes={node: NodeCursor(_runs(runs)) for node, runs in value["nodes"].items()},
            stable=bool(value.get("stable", False)),
        )


@dataclass(frozen=True)
class AutomationCursor:
    """Everything the next evaluation needs; stored by the beat with the tick.

    Only the assets evaluated on a tick (the keys of ``AutomationResult.evaluations``) have a
    new AssetCursor: a store may write just those (``AssetCursor.to_dict``) and keep the rest.
    """

    evaluation_time: float | None = None
    assets: Mapping[AssetKey, AssetCursor] = field(default_factory=dict)
    partitions_fingerprint: str = ""  # changes when a partitions definition gains a partition

    def to_json(self, previous: AutomationCursor | None = None) -> str:
        """Compact JSON of ``{"v", "evaluation_time", "partitions", "assets": {name: to_dict()}}``,
        assembled from each AssetCursor's cached fragment; when every AssetCursor is the one of
        ``previous`` (nothing was evaluated), its assets text is reused as is."""
        head = json.dumps(
            {"v": 1, "evaluation_time": self.evaluation_time, "partitions": self.partitions_fingerprint},
            separators=(",", ":"),
        )
        return f'{head[:-1]},"assets":{{{self._assets_json(previous)}}}}}'

    def _assets_json(self, previous: AutomationCursor | None) -> str:
        cached: str | None = self.__dict__.get("_assets_text")
        if cached is not None:
            return cached
        known: str | None = None if previous is None else previous.__dict__.get("_assets_text")
        found: str
        if (
            known is not None
            and previous is not None
            and len(previous.assets) == len(self.assets)
            and all(  # same keys, same AssetCursors, same order (identity: no hashing of 5,000 keys)
                k is pk and c is pc
                for (k, c), (pk, pc) in zip(self.assets.items(), previous.assets.items(), strict=True)
            )
        ):
            found = known
        else:
            found = ",".join(f"{_quoted(key)}:{c.json_fragment}" for key, c in sorted(self.assets.items(), key=_by_key))
        self.__dict__["_assets_text"] = found  # a cache beside the frozen fields
        return found

    @classmethod
    def from_json(cls, text: str | None) -> AutomationCursor:
        if not text:
            return cls()
        data = json.loads(text)
        assets = {
            AssetKey.from_user_string(name): AssetCursor.from_dict(value)
            for name, value in data.get("assets", {}).items()
        }
        return cls(
            evaluation_time=data.get("evaluation_time"),
            assets=assets,
            partitions_fingerprint=data.get("partitions", ""),
        )


_QUOTED: dict[AssetKey, str] = {}
# One encoder (json.dumps with options builds one per call). What it encodes (records' nodes,
# cursor entries) is built fresh by the evaluator and has no cycles: the check for them (an id
# put in and taken out of a dict per list, tuple and dict) cost a fifth of the records' encoding.
_COMPACT = json.JSONEncoder(separators=(",", ":"), check_circular=False)
_TIMES: dict[datetime, str] = {}


def _time_json(when: datetime) -> str:
    """``when`` as a JSON string of its ISO form (every record of a tick has the same time)."""
    found = _TIMES.get(when)
    if found is None:
        if len(_TIMES) > 64:
            _TIMES.clear()
        found = _TIMES[when] = json.dumps(when.isoformat())
    return found


def _quoted(key: AssetKey) -> str:
    found = _QUOTED.get(key)
    if found is None:
        if len(_QUOTED) > 100_000:  # a bound: definitions reloaded many times with new keys
            _QUOTED.clear()
        found = _QUOTED[key] = json.dumps(key.to_user_string())
    return found


def _by_key(item: tuple[AssetKey, AssetCursor]) -> AssetKey:
    return item[0]


def _runs(raw: Iterable[Sequence[PartitionKey]]) -> tuple[tuple[PartitionKey, PartitionKey], ...]:
    return tuple((first, last) for first, last in raw)


# -- evaluation records (explain) ------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRecord:
    """One condition node on one tick: what it was, where it was true, and why."""

    label: str | None
    name: str
    description: str
    asset: str  # the asset the node was evaluated on (a dependency, under ANY/ALL_DEPS_MATCH)
    true_count: int
    candidate_count: int
    true_runs: list[list[PartitionKey]]  # encode_subset of the true subset (capped at MAX_RUNS)
    truncated: bool
    why: str
    children: list[NodeRecord] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.label or self.name

    def is_true_for(self, partition: PartitionKey, ordered: Sequence[PartitionKey]) -> bool | None:
        """Whether the node held for ``partition`` (None when the stored subset was truncated
        and does not show it)."""
        if partition in decode_subset(self.true_runs, ordered):
            return True
        return None if self.truncated else False

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "description": self.description,
            "asset": self.asset,
            "true_count": self.true_count,
            "candidate_count": self.candidate_count,
            "true_runs": self.true_runs,
            "truncated": self.truncated,
            "why": self.why,
            "children": [c.to_dict() for c in self.children],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeRecord:
        return cls(
            label=data["label"],
            name=data["name"],
            description=data["description"],
            asset=data["asset"],
            true_count=int(data["true_count"]),
            candidate_count=int(data["candidate_count"]),
            true_runs=[list(r) for r in data["true_runs"]],
            truncated=bool(data["truncated"]),
            why=data["why"],
            children=[cls.from_dict(c) for c in data["children"]],
        )


@dataclass(frozen=True, eq=False)
class EvaluationRecord:
    """One asset's evaluation on one tick; JSON-able for the evaluations table.

    Stored compact: the condition's tree once (``AutomationCondition.template()``) and per node
    its counts and what its reason cannot be derived from (see ``automation_explain``);
    ``root``, the tree of NodeRecords with every reason, is rebuilt when read. A record stored
    by an earlier version (the tree itself, ``"root"``) reads as it was.
    """

    asset_key: AssetKey
    evaluation_time: datetime
    requested: list[PartitionKey]  # partition keys requested (None for an unpartitioned asset)
    condition: AutomationCondition | None  # None: a record of the earlier format, ``root`` given
    nodes: Sequence[Any] = ()  # each node's stored values, in pre-order
    stored_root: NodeRecord | None = None

    @property
    def requested_count(self) -> int:
        return len(self.requested)

    @cached_property
    def root(self) -> NodeRecord:
        """The explained tree: each node's label, counts, true subset and why."""
        if self.stored_root is not None:
            return self.stored_root
        assert self.condition is not None
        return explain(self.condition, self.nodes, self.asset_key.to_user_string())

    def to_dict(self) -> dict[str, Any]:
        """The stored form (``to_json``), as a dict."""
        return cast(dict[str, Any], json.loads(self.to_json()))

    def explained_dict(self) -> dict[str, Any]:
        """The record with its tree explained (what the API and ``--json`` show): ``asset_key``,
        ``evaluation_time``, ``requested``, and ``root``, each node's label, name, description,
        asset, counts, true runs and why with its children."""
        return {
            "asset_key": self.asset_key.to_user_string(),
            "evaluation_time": self.evaluation_time.isoformat(),
            "requested": self.requested,
            "root": self.root.to_dict(),
        }

    def to_json(self) -> str:
        """The record alone (``"v":2``): its condition's template inline."""
        if self.condition is None:
            return json.dumps(self.explained_dict(), separators=(",", ":"))
        return self._json('"v":2,', f'"condition":{self.condition.template()},')

    def to_stored_json(self) -> str:
        """The record as the evaluations table stores it (``"v":3``): ``to_json`` with the
        template's digest in place of the template (0.74 of the 1.3 KB of a record of
        ``eager()``, the same for every asset with the condition), the template being stored
        once in ``automation_templates``; ``expand_stored`` puts it back."""
        if self.condition is None:
            return self.to_json()
        return self._json(f'"v":{_STORED_VERSION},', f'"template":"{self.condition.template_digest()}",')

    def _json(self, version: str, condition: str) -> str:
        return (
            f'{{{version}"asset_key":{_quoted(self.asset_key)},'
            f'"evaluation_time":{_time_json(self.evaluation_time)},'
            f'"requested":{_COMPACT.encode(self.requested)},'
            f"{condition}"
            f'"nodes":{_COMPACT.encode(self.nodes)}}}'
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationRecord:
        key = AssetKey.from_user_string(data["asset_key"])
        when = datetime.fromisoformat(data["evaluation_time"])
        requested = list(data["requested"])
        if "root" in data:  # the earlier format: the explained tree itself
            return cls(key, when, requested, None, stored_root=NodeRecord.from_dict(data["root"]))
        return cls(key, when, requested, from_template(data["condition"]), data["nodes"])

    @classmethod
    def from_json(cls, text: str) -> EvaluationRecord:
        return cls.from_dict(json.loads(text))

    def explain_lines(self, partition: PartitionKey = None, ordered: Sequence[PartitionKey] | None = None) -> list[str]:
        """The tree as indented lines ``✓ why [true/candidates]``; with ``partition``
        (and the asset's ``ordered`` keys) each root-asset node says true/false for it."""
        lines: list[str] = []
        _explain(self.root, 0, partition, ordered, lines)
        return lines


_STORED_VERSION = 3  # a stored record naming its template by digest (``to_stored_json``)


def stored_template(record: Mapping[str, Any]) -> str | None:
    """The template digest a stored record names, or None (a record that holds its tree)."""
    if record.get("v") != _STORED_VERSION:
        return None
    return cast(str, record["template"])


def expand_stored(record: Mapping[str, Any], templates: Mapping[str, str]) -> dict[str, Any]:
    """A stored record as ``to_json`` gives it: a record naming its template by digest gets
    the template (``templates``: digest -> template JSON) back in its place; any other is
    returned as it is."""
    digest = stored_template(record)
    if digest is None:
        return dict(record)
    expanded: dict[str, Any] = {}
    for name, value in record.items():  # in the order of to_json's members
        if name == "template":
            expanded["condition"] = json.loads(templates[digest])
        else:
            expanded[name] = 2 if name == "v" else value
    return expanded


def explained(record: Any) -> dict[str, Any]:
    """A stored record (as read from the evaluations table) with its tree explained, whatever
    its format: what readers show (``EvaluationRecord.explained_dict``)."""
    return EvaluationRecord.from_dict(record).explained_dict()


def _explain(
    node: NodeRecord,
    depth: int,
    partition: PartitionKey,
    ordered: Sequence[PartitionKey] | None,
    lines: list[str],
    parent_asset: str | None = None,
) -> None:
    if node.candidate_count == 0:
        mark = "–"  # nothing left to evaluate: an earlier operand of an AND was already false
    elif ordered is not None and partition is not None:
        held = node.is_true_for(partition, ordered)
        mark = "?" if held is None else ("✓" if held else "✗")
    else:
        mark = "✓" if node.true_count else "✗"
    where = f"upstream '{node.asset}': " if parent_asset is not None and node.asset != parent_asset else ""
    lines.append(f"{'  ' * depth}{mark} {where}{node.why}  [{node.true_count}/{node.candidate_count}]")
    for child in node.children:
        # a dependency's subtree is about the dependency's partitions, not ``partition``
        same = child.asset == node.asset
        _explain(child, depth + 1, partition if same else None, ordered if same else None, lines, node.asset)


@dataclass(frozen=True)
class AutomationRunGroup:
    """Requests that one run (or one backfill) executes together."""

    asset_keys: tuple[AssetKey, ...]
    partition_key: str | None  # the run's partition (None: unpartitioned, or a backfill)
    is_backfill: bool
    partition_keys: tuple[str, ...] = ()  # a backfill's partitions


@dataclass(frozen=True)
class AutomationResult:
    requested: dict[AssetKey, frozenset[PartitionKey]]
    cursor: AutomationCursor
    evaluations: dict[AssetKey, EvaluationRecord]
    evaluated: int = 0  # assets whose condition ran (the others reused their previous result)
