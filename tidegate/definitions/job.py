"""Jobs: a named selection of assets, and the plan of steps a run of it executes."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from tidegate.definitions.config import ConfigNode, check_run_config, run_config_dict
from tidegate.definitions.graph import AssetGraph
from tidegate.definitions.key import AssetKey
from tidegate.definitions.limits import check_metadata, check_name, check_tags
from tidegate.definitions.partitions import PartitionKeyRange, PartitionsDefinition
from tidegate.definitions.retry import RetryPolicy
from tidegate.definitions.selection import (
    AssetSelection,
    CoercibleToAssetSelection,
    coerce_selection,
    executable_keys,
    selects_everything,
)
from tidegate.errors import (
    EmptySelectionError,
    ExternalAssetError,
    InvalidDefinitionError,
    InvalidSelectionError,
    RunConfigError,
)
from tidegate.names import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, PARTITION_TAG

if TYPE_CHECKING:
    from tidegate.definitions.op_graph import OpGraph

IMPLICIT_ASSET_JOB = "__ASSET_JOB"
_JOB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class UnresolvedAssetJob:
    """What ``define_asset_job`` returns; resolved against the asset graph by Definitions.

    A job of ``*`` may be empty (Dagster's scaffolds define one before any asset exists): a run
    of it has no step and succeeds at once. Any other selection matching nothing is an error.
    """

    name: str
    selection: AssetSelection
    selection_text: str
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None
    partitions_def: PartitionsDefinition | None = None
    config: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    run_tags: Mapping[str, str] = field(default_factory=dict)
    op_retry_policy: RetryPolicy | None = None

    def resolve(self, graph: AssetGraph) -> JobDefinition:
        try:
            keys = executable_keys(self.selection, graph, f"job '{self.name}'")
        except ExternalAssetError:
            raise
        except InvalidSelectionError as exc:
            raise InvalidSelectionError(f"job '{self.name}': {exc}") from None
        if not keys and not selects_everything(self.selection):
            raise EmptySelectionError(f"job '{self.name}': selection {self.selection_text} matches no asset")
        ordered = tuple(k for k in graph.order if k in keys)
        found = {graph.assets[k].partitions_def for k in ordered} - {None}
        if self.partitions_def is not None and found - {self.partitions_def}:
            raise InvalidDefinitionError(f"job '{self.name}': partitions_def differs from that of its selected assets")
        if len(found) > 1 and self.name == IMPLICIT_ASSET_JOB:
            found = set()  # ad-hoc runs of any assets: each plan checks its own selection
        if len(found) > 1:
            raise InvalidDefinitionError(
                f"job '{self.name}': selects assets with different partitions definitions; a run has one "
                "partition key, so split the job or give the assets one PartitionsDefinition"
            )
        partitions_def = self.partitions_def or (next(iter(found)) if found else None)
        return JobDefinition(
            self.name,
            ordered,
            dict(self.tags),
            self.description,
            partitions_def,
            config=self.config,
            metadata=dict(self.metadata),
            run_tags=dict(self.run_tags),
            op_retry_policy=self.op_retry_policy,
        )


def define_asset_job(
    name: str,
    selection: CoercibleToAssetSelection | None = None,
    config: Any = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    partitions_def: PartitionsDefinition | None = None,
    op_retry_policy: RetryPolicy | None = None,
) -> UnresolvedAssetJob:
    """A job that materializes ``selection`` (all assets if None) in dependency order.

    As Dagster's: ``config`` is the run config of a run launched without one (a RunConfig or
    its dict form, checked when Definitions resolves the job); ``tags`` describe the job and
    are put on its runs, ``run_tags`` only on its runs; ``metadata`` describes the job;
    ``op_retry_policy`` is the retry policy of each step whose asset has none.
    """
    if isinstance(name, str):
        check_name("job", "name", name)
    if not isinstance(name, str) or not _JOB_NAME.fullmatch(name):
        raise InvalidDefinitionError(f"job {name!r}: invalid name (letters, digits, '_', '-')")
    label = f"job '{name}'"
    try:
        resolved_selection = coerce_selection(selection)
    except InvalidSelectionError as exc:
        raise InvalidSelectionError(f"{label}: {exc}") from None
    for what, given in (("tags", tags), ("run_tags", run_tags)):
        for k, v in (given or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidDefinitionError(f"{label}: {what} must map str to str, got {k!r}: {v!r}")
        check_tags(label, given or {})
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidDefinitionError(f"{label}: metadata must be a dict, got {metadata!r:.80}")
    check_metadata(label, metadata or {})
    if op_retry_policy is not None and not isinstance(op_retry_policy, RetryPolicy):
        raise InvalidDefinitionError(f"{label}: op_retry_policy must be a RetryPolicy, got {op_retry_policy!r}")
    try:
        run_config_dict(f"{label}: config", config)  # JSON-storable; checked against the assets on resolve
    except RunConfigError as exc:
        raise InvalidDefinitionError(str(exc)) from None
    text = repr(selection) if selection is not None else "'*'"
    return UnresolvedAssetJob(
        name,
        resolved_selection,
        text,
        dict(tags or {}),
        description,
        partitions_def,
        config=config,
        metadata=dict(metadata or {}),
        run_tags=dict(run_tags or {}),
        op_retry_policy=op_retry_policy,
    )


@dataclass(frozen=True)
class JobDefinition:
    """A job: an asset job (``asset_keys``, resolved from ``define_asset_job``) or an op job
    (``op_graph``, from ``@job`` or ``GraphDefinition.to_job``)."""

    name: str
    asset_keys: tuple[AssetKey, ...]  # topological order
    tags: Mapping[str, str]
    description: str | None
    partitions_def: PartitionsDefinition | None = None
    config: Any = None  # the default run config (RunConfig or dict) of a run launched without one
    metadata: Mapping[str, Any] = field(default_factory=dict)
    run_tags: Mapping[str, str] = field(default_factory=dict)  # put on its runs, not describing the job
    op_retry_policy: RetryPolicy | None = None  # for each step whose asset has no retry_policy
    # what its run config is checked against: node name -> ConfigNode, and the resources
    config_nodes: Mapping[str, ConfigNode] = field(default_factory=dict)
    resources: Mapping[str, Any] = field(default_factory=dict, repr=False)
    op_graph: OpGraph | None = None  # an op job's ops (``@job``, ``GraphDefinition.to_job``)
    resource_defs: Mapping[str, Any] = field(default_factory=dict, repr=False)  # an op job's own

    @functools.cached_property
    def asset_key_set(self) -> frozenset[AssetKey]:
        """``asset_keys`` as a set, built once (a run's selection is checked against it)."""
        return frozenset(self.asset_keys)

    @property
    def kind(self) -> str:
        """What its steps run: ``assets`` (``define_asset_job``) or ``ops`` (``@job``)."""
        return "ops" if self.op_graph is not None else "assets"

    def resolve(self, graph: AssetGraph) -> JobDefinition:
        """An op job needs no resolving (an asset job's ``UnresolvedAssetJob`` does)."""
        return self

    def execute_in_process(
        self,
        run_config: Any = None,
        resources: Mapping[str, Any] | None = None,
        partition_key: str | None = None,
        *,
        raise_on_error: bool = True,
        tags: Mapping[str, str] | None = None,
    ) -> Any:
        """Run this op job in this process through the same step code (for unit tests);
        returns an ExecuteInProcessResult (``success``, ``output_for_node``, ``all_events``)."""
        from tidegate.workers.inprocess import execute_job_in_process  # the worker side, only when called

        return execute_job_in_process(
            self,
            run_config=run_config,
            resources=resources,
            partition_key=partition_key,
            raise_on_error=raise_on_error,
            tags=tags,
        )


def validate_run_config(job: JobDefinition | UnresolvedAssetJob, run_config: Any = None) -> dict[str, Any]:
    """Check ``run_config`` (None: the job's default ``config``) against ``job`` as a launch
    does and return it in its stored dict form (Dagster's ``validate_run_config``). Raises
    RunConfigError naming the node and field. An asset job is checked once resolved by its
    Definitions: pass ``defs.get_job(name)``."""
    if isinstance(job, UnresolvedAssetJob):
        raise RunConfigError(
            f"job '{job.name}': an asset job is checked once its Definitions resolves it; "
            f"pass defs.get_job({job.name!r})"
        )
    if not isinstance(job, JobDefinition):
        raise RunConfigError(f"validate_run_config: expected a JobDefinition, got {job!r:.80}")
    config = job.config if run_config is None else run_config
    return check_run_config(f"job '{job.name}'", config, job.config_nodes, job.resources) or {}


class StepPlan(NamedTuple):
    """One step of a run: materialize one asset after its upstream steps in the same run.

    A named tuple rather than a frozen dataclass: a run of thousands of assets builds one per
    asset, and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) cost
    four times as much."""

    step_key: str
    asset_key: str
    queue: str
    upstream: tuple[str, ...]
    downstream: tuple[str, ...]
    display_name: str
    pool: str | None = None
    timeout: float | None = None
    downstream_json: str | None = None  # ``downstream`` in its stored form (JSON), when the planner made it


@dataclass(frozen=True)
class RunPlan:
    job_name: str
    steps: tuple[StepPlan, ...]  # topological order
    tags: Mapping[str, str]
    asset_selection: tuple[str, ...] | None  # the subset, when not the whole job
    partition_key: str | None = None
    partition_range: PartitionKeyRange | None = None
    # validated, in the stored form of tidegate.definitions.config (EnvVar as a marker); None: none
    run_config: Mapping[str, Any] | None = None


def plan_run(
    graph: AssetGraph,
    job: JobDefinition,
    selection: set[AssetKey] | None = None,
    partition_key: str | None = None,
    partition_range: PartitionKeyRange | None = None,
) -> RunPlan:
    """Steps for ``job`` (or the ``selection`` subset of it); edges only within the run.

    An upstream asset outside the run is read from its IO manager as last materialized.
    """
    keys = job.asset_keys if selection is None else [k for k in job.asset_keys if k in selection]
    layout = graph.steps  # each asset's step, derived once per graph: one look-up per step here
    planned = [layout.of[k] for k in keys]
    chosen = {a.name for a in planned}
    shown = ""  # a partitioned asset's display name suffix
    if partition_key is not None:
        shown = f"[{partition_key}]"
    elif partition_range is not None:
        shown = f"[{partition_range.start}...{partition_range.end}]"
    steps = []
    for name, upstream, downstream, queue, pool, timeout, partitioned, _ in planned:
        ups = tuple([u for u in upstream if u in chosen])
        downs = tuple([d for d in downstream if d in chosen])
        stored = ('["' + '","'.join(downs) + '"]' if downs else "[]") if layout.plain else None
        display = name + shown if partitioned else name
        steps.append(StepPlan(name, name, queue, ups, downs, display, pool, timeout, stored))
    subset = tuple([a.name for a in planned]) if selection is not None else None
    tags = {**job.tags, **job.run_tags}
    if partition_key is not None:
        tags[PARTITION_TAG] = partition_key
    if partition_range is not None:
        tags[PARTITION_RANGE_START_TAG] = partition_range.start
        tags[PARTITION_RANGE_END_TAG] = partition_range.end
    return RunPlan(job.name, tuple(steps), tags, subset, partition_key, partition_range)


# What a schedule, sensor or Definitions(jobs=) takes as a job: an asset job before resolving,
# or an op job (``@job``, ``GraphDefinition.to_job``).
JobTarget = UnresolvedAssetJob | JobDefinition
