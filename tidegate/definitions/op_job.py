"""Op jobs: ``@job``, ``GraphDefinition.to_job`` and the run plan of an op job; partitioned
run config (``daily_partitioned_config``, ``static_partitioned_config``)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tidegate.definitions.config import ConfigNode, run_config_dict
from tidegate.definitions.job import JobDefinition, RunPlan
from tidegate.definitions.limits import check_metadata, check_name, check_tags
from tidegate.definitions.op_graph import GraphDefinition, OpGraph, parse_step_key
from tidegate.definitions.partitions import (
    DailyPartitionsDefinition,
    PartitionsDefinition,
    StaticPartitionsDefinition,
)
from tidegate.definitions.retry import RetryPolicy
from tidegate.errors import InvalidDefinitionError, RunConfigError
from tidegate.names import PARTITION_TAG

_JOB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


@dataclass(frozen=True)
class PartitionedConfig:
    """A job's run config computed from its partition (Dagster's ``PartitionedConfig``): the
    job is partitioned by ``partitions_def``; a run of partition ``key`` gets
    ``run_config_for_partition_key(key)``."""

    partitions_def: PartitionsDefinition
    run_config_for_partition_fn: Callable[[str], Any]

    def run_config_for_partition_key(self, partition_key: str) -> Any:
        return self.run_config_for_partition_fn(partition_key)


def daily_partitioned_config(
    start_date: str | datetime,
    minute_offset: int = 0,
    hour_offset: int = 0,
    timezone: str | None = None,
    end_offset: int = 0,
) -> Callable[[Callable[[datetime, datetime], Any]], PartitionedConfig]:
    """Decorate ``fn(start, end) -> run config``: the job gets one partition per day."""
    partitions_def = DailyPartitionsDefinition(
        start_date=start_date,
        minute_offset=minute_offset,
        hour_offset=hour_offset,
        timezone=timezone,
        end_offset=end_offset,
    )

    def wrap(fn: Callable[[datetime, datetime], Any]) -> PartitionedConfig:
        def for_key(key: str) -> Any:
            window = partitions_def.time_window_for_key(key)
            return fn(window.start, window.end)

        return PartitionedConfig(partitions_def, for_key)

    return wrap


def static_partitioned_config(partition_keys: Sequence[str]) -> Callable[[Callable[[str], Any]], PartitionedConfig]:
    """Decorate ``fn(partition_key) -> run config``: the job gets one partition per key."""
    partitions_def = StaticPartitionsDefinition(list(partition_keys))

    def wrap(fn: Callable[[str], Any]) -> PartitionedConfig:
        return PartitionedConfig(partitions_def, fn)

    return wrap


def build_op_job(
    graph_def: GraphDefinition,
    *,
    name: str,
    description: str | None = None,
    resource_defs: Mapping[str, Any] | None = None,
    config: Any = None,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    partitions_def: PartitionsDefinition | None = None,
    op_retry_policy: RetryPolicy | None = None,
    run_tags: Mapping[str, str] | None = None,
) -> JobDefinition:
    """The JobDefinition of ``graph_def`` (composed now: a bad graph fails at import)."""
    if not isinstance(name, str) or not _JOB_NAME.fullmatch(name):
        raise InvalidDefinitionError(f"job {name!r}: invalid name (letters, digits, '_', '-')")
    check_name("job", "name", name)
    label = f"job '{name}'"
    for what, given in (("tags", tags), ("run_tags", run_tags)):
        for key, value in (given or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidDefinitionError(f"{label}: {what} must map str to str, got {key!r}: {value!r}")
        check_tags(label, given or {})
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidDefinitionError(f"{label}: metadata must be a dict, got {metadata!r:.80}")
    check_metadata(label, metadata or {})
    if op_retry_policy is not None and not isinstance(op_retry_policy, RetryPolicy):
        raise InvalidDefinitionError(f"{label}: op_retry_policy must be a RetryPolicy, got {op_retry_policy!r}")
    if isinstance(config, PartitionedConfig):
        if partitions_def is not None and partitions_def != config.partitions_def:
            raise InvalidDefinitionError(f"{label}: partitions_def differs from that of its partitioned config")
        partitions_def = config.partitions_def
    if partitions_def is not None and not isinstance(partitions_def, PartitionsDefinition):
        raise InvalidDefinitionError(f"{label}: partitions_def must be a PartitionsDefinition, got {partitions_def!r}")
    if config is not None and not isinstance(config, PartitionedConfig):
        try:
            run_config_dict(f"{label}: config", config)  # JSON-storable; checked against the ops below
        except RunConfigError as exc:
            raise InvalidDefinitionError(str(exc)) from None
    nodes = graph_def.nodes(label)
    if not nodes:
        raise InvalidDefinitionError(f"{label}: its graph has no op")
    config_nodes = {
        node.handle: ConfigNode(
            f"op '{node.handle}'",
            node.op.config_type,
            any_config=node.op.config_schema is not None and node.op.config_type is None,
        )
        for node in nodes.values()
    }
    return JobDefinition(
        name=name,
        asset_keys=(),
        tags=dict(tags or {}),
        description=description,
        partitions_def=partitions_def,
        config=config,
        metadata=dict(metadata or {}),
        run_tags=dict(run_tags or {}),
        op_retry_policy=op_retry_policy,
        config_nodes=config_nodes,
        resources=dict(resource_defs or {}),
        op_graph=OpGraph.build(nodes),
        resource_defs=dict(resource_defs or {}),
    )


def job(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    resource_defs: Mapping[str, Any] | None = None,
    config: Any = None,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    partitions_def: PartitionsDefinition | None = None,
    op_retry_policy: RetryPolicy | None = None,
    run_tags: Mapping[str, str] | None = None,
) -> Any:
    """Define an op job from a function whose body calls ops and graphs (Dagster's ``@job``)."""

    def build(func: Callable[..., Any]) -> JobDefinition:
        job_name = str(name or getattr(func, "__name__", ""))
        if inspect.signature(func).parameters:
            raise InvalidDefinitionError(f"job '{job_name}': a @job function takes no parameters")
        graph_def = GraphDefinition(job_name, func, description or inspect.getdoc(func))
        return build_op_job(
            graph_def,
            name=job_name,
            description=graph_def.description,
            resource_defs=resource_defs,
            config=config,
            tags=tags,
            metadata=metadata,
            partitions_def=partitions_def,
            op_retry_policy=op_retry_policy,
            run_tags=run_tags,
        )

    return build(fn) if fn is not None else build


def plan_op_run(
    job_def: JobDefinition, partition_key: str | None = None, step_keys: Iterable[str] | None = None
) -> RunPlan:
    """The steps of a run of op job ``job_def``: its unmapped ops, or (re-execution) exactly
    ``step_keys``, mapped ones included. Mapped steps of a dynamic output are planned later,
    when it is produced."""
    graph = job_def.op_graph
    if graph is None:
        raise InvalidDefinitionError(f"job '{job_def.name}': not an op job")
    if step_keys is None:
        instances = graph.root_instances()
        subset = None
    else:
        instances = []
        for key in step_keys:
            handle, keys = parse_step_key(key)
            if handle not in graph.nodes:
                raise InvalidDefinitionError(f"job '{job_def.name}': no op '{handle}' (step '{key}')")
            instances.append((handle, keys))
        subset = tuple(key for key in step_keys)
    tags = {**job_def.tags, **job_def.run_tags}
    if partition_key is not None:
        tags[PARTITION_TAG] = partition_key
    steps = graph.step_plans(instances, partition_key)
    return RunPlan(job_def.name, tuple(steps), tags, subset, partition_key)
