"""The asset graph as automation sees it: which assets have a condition, how partitions of two
assets map onto each other, and which requests can share a run (``group_requests``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from tidegate.definitions.automation_records import AutomationRunGroup, PartitionKey
from tidegate.definitions.graph import AssetGraph
from tidegate.definitions.key import AssetKey
from tidegate.definitions.partitions import (
    IdentityPartitionMapping,
    PartitionMapping,
    PartitionsDefinition,
    TimeWindowPartitionMapping,
    TimeWindowPartitionsDefinition,
)


@dataclass(frozen=True)
class GraphPlan:
    """What the evaluator needs of a graph, computed once per graph (per loaded Definitions)."""

    conditioned: tuple[AssetKey, ...]  # assets with a condition, not external, in topological order
    partition_sensitive: frozenset[AssetKey]  # partitioned, or with a partitioned dependency
    definition_representatives: tuple[AssetKey, ...]  # one asset per distinct partitions definition


_PLANS: dict[int, tuple[AssetGraph, GraphPlan]] = {}


def graph_plan(graph: AssetGraph) -> GraphPlan:
    cached = _PLANS.get(id(graph))
    if cached is not None and cached[0] is graph:
        return cached[1]
    conditioned = tuple(
        k for k in graph.order if graph.assets[k].automation_condition is not None and not graph.assets[k].is_external
    )
    partitioned = {k for k, a in graph.assets.items() if a.partitions_def is not None}
    sensitive = frozenset(k for k in conditioned if k in partitioned or graph.upstream[k] & partitioned)
    representatives: dict[object, AssetKey] = {}
    for key in sorted(partitioned):
        representatives.setdefault(definition_token(graph.assets[key].partitions_def), key)
    plan = GraphPlan(conditioned, sensitive, tuple(representatives.values()))
    if len(_PLANS) > 8:  # a beat reloading definitions: keep the few latest graphs
        _PLANS.clear()
    _PLANS[id(graph)] = (graph, plan)
    return plan


def partition_mapping(graph: AssetGraph, child: AssetKey, parent: AssetKey) -> PartitionMapping:
    """The mapping between two partitioned assets, inferred as Dagster does when none is given:
    time windows to time windows by overlap, anything else by identical keys."""
    given = graph.assets[child].partition_mappings.get(parent)
    if given is not None:
        return given
    child_def, parent_def = graph.assets[child].partitions_def, graph.assets[parent].partitions_def
    if (
        child_def != parent_def
        and isinstance(child_def, TimeWindowPartitionsDefinition)
        and isinstance(parent_def, TimeWindowPartitionsDefinition)
    ):
        return TimeWindowPartitionMapping()
    return IdentityPartitionMapping()


def runs_together(a: PartitionsDefinition | None, b: PartitionsDefinition | None) -> bool:
    """Requests of two assets can share a run when they have the same partitions (or none)."""
    return a == b


def sort_key(partition: PartitionKey) -> str:
    return "" if partition is None else partition


def group_requests(
    graph: AssetGraph, requested: Mapping[AssetKey, Collection[PartitionKey]]
) -> list[AutomationRunGroup]:
    """The runs (and backfills) to create for ``requested``.

    One run per (partitions definition, partition key): every unpartitioned request of the
    tick shares one run, so an eager chain runs in one run in dependency order; requests of
    one partition key of assets with the same partitions share one. An asset requested for
    several partitions becomes a backfill (shared with the assets requested for exactly the
    same partitions of the same definition).
    """
    # Each distinct partitions definition object is hashed once (a dataclass's hash walks its
    # fields; a tick requesting 4,000 assets hashed them 8,000 times): groups are keyed by the
    # definition's index among the tick's distinct definitions.
    by_object: dict[int, int] = {}  # id(definition) -> its index (the objects live in the graph)
    by_token: dict[object, int] = {}
    runs: dict[tuple[int, PartitionKey], list[AssetKey]] = {}
    backfills: dict[tuple[int, tuple[str, ...]], list[AssetKey]] = {}
    assets = graph.assets
    for key in graph.order:
        partitions = requested.get(key)
        if not partitions:
            continue
        definition = assets[key].partitions_def
        index = by_object.get(id(definition))
        if index is None:
            index = by_object[id(definition)] = by_token.setdefault(definition_token(definition), len(by_token))
        if len(partitions) == 1:
            for partition in partitions:
                runs.setdefault((index, partition), []).append(key)
        else:
            ordered = tuple(str(p) for p in sorted(partitions, key=sort_key))
            backfills.setdefault((index, ordered), []).append(key)
    groups = [
        AutomationRunGroup(asset_keys=tuple(keys), partition_key=partition, is_backfill=False)
        for (_, partition), keys in runs.items()
    ]
    groups += [
        AutomationRunGroup(asset_keys=tuple(keys), partition_key=None, is_backfill=True, partition_keys=partitions)
        for (_, partitions), keys in backfills.items()
    ]
    return sorted(groups, key=lambda g: (g.is_backfill, sort_key(g.partition_key), g.partition_keys, g.asset_keys))


def definition_token(definition: PartitionsDefinition | None) -> object:
    try:
        hash(definition)
    except TypeError:
        return id(definition)
    return definition
