"""``Definitions``: everything a code location defines, validated as one whole."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from tidegate.definitions.asset import DEFAULT_IO_MANAGER_KEY, AssetsDefinition
from tidegate.definitions.graph import AssetGraph
from tidegate.definitions.instigator import Target
from tidegate.definitions.job import (
    IMPLICIT_ASSET_JOB,
    JobDefinition,
    RunPlan,
    UnresolvedAssetJob,
    define_asset_job,
    plan_run,
)
from tidegate.definitions.key import AssetKey
from tidegate.definitions.partitioned_schedule import PartitionedJobSchedule
from tidegate.definitions.partitions import DynamicKeys, PartitionKeyRange
from tidegate.definitions.run_request import RunRequest
from tidegate.definitions.schedule import ScheduleDefinition
from tidegate.definitions.selection import CoercibleToAssetSelection, coerce_selection
from tidegate.definitions.sensor import SensorDefinition
from tidegate.errors import (
    DefinitionError,
    DuplicateDefinitionError,
    EmptySelectionError,
    InvalidDefinitionError,
    MissingResourceError,
    PartitionKeyError,
    UnknownJobError,
)
from tidegate.names import CODE_LOCATION_TAG


class Definitions:
    """Assets, jobs, schedules, sensors and resources of one code location.

    Building it validates the whole: duplicate keys and names, unknown dependencies,
    dependency cycles, jobs that select nothing and resources that are missing each raise a
    :class:`~tidegate.errors.DefinitionError` naming the definition.
    """

    def __init__(
        self,
        assets: Iterable[AssetsDefinition] | None = None,
        jobs: Iterable[UnresolvedAssetJob] | None = None,
        schedules: Iterable[Any] | None = None,
        sensors: Iterable[Any] | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        # The name of the code location this was loaded from (set by the loader); every run
        # planned here is tagged with it, so only a process that loaded it judges its jobs.
        self.code_location: str | None = None
        self.resources: dict[str, Any] = dict(resources or {})
        asset_list = list(assets or ())
        seen: dict[AssetKey, AssetsDefinition] = {}
        for a in asset_list:
            if not isinstance(a, AssetsDefinition):
                raise InvalidDefinitionError(f"Definitions: assets= holds {a!r}, not an @asset")
            if a.key in seen:
                raise DuplicateDefinitionError(
                    f"asset '{a.key}': defined twice ({_where(seen[a.key])} and {_where(a)})"
                )
            seen[a.key] = a
        resolved = [a.resolve_params(self.resources, seen) for a in asset_list]
        self.graph = AssetGraph.build(resolved)
        self._check_resources(resolved)
        self._check_partitions(resolved)

        self.jobs: dict[str, JobDefinition] = {}
        for job in jobs or ():
            if not isinstance(job, UnresolvedAssetJob):
                raise InvalidDefinitionError(f"Definitions: jobs= holds {job!r}, not define_asset_job(...)")
            if job.name in self.jobs or job.name == IMPLICIT_ASSET_JOB:
                raise DuplicateDefinitionError(f"job '{job.name}': defined twice")
            self.jobs[job.name] = job.resolve(self.graph)
        if self.graph.assets:
            implicit = define_asset_job(IMPLICIT_ASSET_JOB, "*")
            self.jobs[IMPLICIT_ASSET_JOB] = implicit.resolve(self.graph)

        self.schedules: dict[str, ScheduleDefinition] = _unique_by_name(schedules or (), "schedule", ScheduleDefinition)
        self.sensors: dict[str, SensorDefinition] = _unique_by_name(sensors or (), "sensor", SensorDefinition)
        for name, schedule in list(self.schedules.items()):
            if isinstance(schedule, PartitionedJobSchedule) and schedule.bound_partitions is None:
                resolved_job = self.jobs.get(schedule.partitioned_job.name)
                if resolved_job is None:
                    resolved_job = schedule.partitioned_job.resolve(self.graph)
                self.schedules[name] = schedule.bind(resolved_job.partitions_def)
        instigators: list[ScheduleDefinition | SensorDefinition] = [*self.schedules.values(), *self.sensors.values()]
        for instigator in instigators:
            self._check_instigator(instigator)

    # -- look-ups ------------------------------------------------------------------------

    @property
    def assets(self) -> Mapping[AssetKey, AssetsDefinition]:
        return self.graph.assets

    def get_asset(self, key: str | AssetKey) -> AssetsDefinition:
        asset_key = AssetKey.from_coercible(key)
        try:
            return self.graph.assets[asset_key]
        except KeyError:
            raise DefinitionError(f"asset '{asset_key}': not defined in the loaded code") from None

    def get_job(self, name: str) -> JobDefinition:
        try:
            return self.jobs[name]
        except KeyError:
            known = ", ".join(sorted(n for n in self.jobs if n != IMPLICIT_ASSET_JOB)) or "none"
            raise UnknownJobError(f"job '{name}': not defined in the loaded code (jobs: {known})") from None

    def plan(
        self,
        job_name: str,
        selection: CoercibleToAssetSelection | None = None,
        *,
        partition_key: str | None = None,
        partition_range: PartitionKeyRange | None = None,
        dynamic_keys: DynamicKeys | None = None,
        current_time: datetime | None = None,
    ) -> RunPlan:
        """The steps of a run of ``job_name`` (or of the ``selection`` subset of it), for
        ``partition_key`` (or every partition of ``partition_range``, in one run) when the job
        is partitioned; an unknown key raises PartitionKeyError."""
        job = self.get_job(job_name)
        keys = None
        if selection is not None:
            keys = coerce_selection(selection).resolve(self.graph) & set(job.asset_keys)
            if not keys:
                raise EmptySelectionError(f"job '{job_name}': selection {selection!r} matches no asset")
        chosen = [k for k in job.asset_keys if keys is None or k in keys]
        partitions = {self.graph.assets[k].partitions_def for k in chosen} - {None}
        if len(partitions) > 1:
            raise InvalidDefinitionError(f"job '{job_name}': the selection spans different partitions definitions")
        partitions_def = next(iter(partitions), None) or job.partitions_def
        if partition_range is not None:
            if partition_key is not None or partitions_def is None:
                raise PartitionKeyError(
                    f"job '{job_name}': a partition range needs a partitioned job and no single partition key"
                )
            try:
                partitions_def.keys_in_range(partition_range.start, partition_range.end, current_time, dynamic_keys)
            except PartitionKeyError as exc:
                raise PartitionKeyError(f"job '{job_name}': {exc}") from None
            return self._located(plan_run(self.graph, job, keys, partition_range=partition_range))
        if partition_key is not None and partitions_def is None:
            raise PartitionKeyError(f"job '{job_name}': not partitioned, but partition key {partition_key!r} given")
        if partition_key is None and partitions_def is not None:
            raise PartitionKeyError(
                f"job '{job_name}': partitioned by {partitions_def.describe()}; give a partition key"
            )
        if partition_key is not None and partitions_def is not None:
            try:
                partitions_def.validate_key(partition_key, current_time, dynamic_keys)
            except PartitionKeyError as exc:
                raise PartitionKeyError(f"job '{job_name}': {exc}") from None
        return self._located(plan_run(self.graph, job, keys, partition_key))

    def _located(self, plan: RunPlan) -> RunPlan:
        if self.code_location is None:
            return plan
        return dataclasses.replace(plan, tags={**plan.tags, CODE_LOCATION_TAG: self.code_location})

    def backfill_ranges(
        self,
        job_name: str,
        partition_keys: Sequence[str],
        *,
        dynamic_keys: DynamicKeys | None = None,
        current_time: datetime | None = None,
    ) -> list[PartitionKeyRange] | None:
        """How a backfill of ``job_name`` over ``partition_keys`` splits into runs: None for one
        run per partition (the default, ``BackfillPolicy.multi_run(1)``), else ranges of
        contiguous partitions, each at most the smallest ``max_partitions_per_run`` of the job's
        partitioned assets (unlimited when every one is ``single_run()``)."""
        job = self.get_job(job_name)
        assets = [self.graph.assets[k] for k in job.asset_keys]
        limits = [
            a.backfill_policy.max_partitions_per_run if a.backfill_policy else 1 for a in assets if a.partitions_def
        ]
        if job.partitions_def is None or not limits or 1 in limits:
            return None
        bounded = [n for n in limits if n is not None]
        limit = min(bounded) if bounded else None
        position = {k: i for i, k in enumerate(job.partitions_def.get_partition_keys(current_time, dynamic_keys))}
        unknown = [k for k in partition_keys if k not in position]
        if unknown:
            raise PartitionKeyError(f"job '{job_name}': unknown partition key {unknown[0]!r}")
        ranges: list[PartitionKeyRange] = []
        first = last = ""
        size = 0
        for key in sorted(set(partition_keys), key=position.__getitem__):
            if size and (position[key] != position[last] + 1 or size == limit):
                ranges.append(PartitionKeyRange(first, last))
                size = 0
            if not size:
                first = key
            last, size = key, size + 1
        if size:
            ranges.append(PartitionKeyRange(first, last))
        return ranges

    def plan_request(
        self,
        target: Target,
        request: RunRequest,
        label: str,
        *,
        dynamic_keys: DynamicKeys | None = None,
        current_time: datetime | None = None,
    ) -> RunPlan:
        """The plan for a schedule's or sensor's RunRequest (its job_name and
        asset_selection override the instigator's target)."""
        job_name = request.job_name or target.job_name or IMPLICIT_ASSET_JOB
        if request.job_name and request.job_name not in self.jobs:
            raise UnknownJobError(f"{label}: RunRequest names job '{request.job_name}', which is not defined")
        selection: CoercibleToAssetSelection | None = None
        if request.asset_selection is not None:
            selection = list(request.asset_selection)
        elif target.selection is not None and not request.job_name:
            selection = target.selection
        return self.plan(
            job_name,
            selection,
            partition_key=request.partition_key,
            dynamic_keys=dynamic_keys,
            current_time=current_time,
        )

    # -- validation ----------------------------------------------------------------------

    def _check_instigator(self, instigator: ScheduleDefinition | SensorDefinition) -> None:
        target = instigator.target
        if target.job is not None and target.job.name not in self.jobs:
            self.jobs[target.job.name] = target.job.resolve(self.graph)  # as Dagster: targeted jobs join
        if target.job_name is not None and target.job_name not in self.jobs:
            raise InvalidDefinitionError(f"{instigator.label}: targets job '{target.job_name}', which is not defined")
        if target.selection is not None:
            try:
                keys = target.selection.resolve(self.graph)
            except DefinitionError as exc:
                raise InvalidDefinitionError(f"{instigator.label}: {exc}") from None
            if not keys:
                raise EmptySelectionError(f"{instigator.label}: its target selects no asset")
        for key in instigator.resource_keys:
            if key not in self.resources:
                raise MissingResourceError(
                    f"{instigator.label}: missing resource '{key}' "
                    f"(Definitions(resources=...) has: {sorted(self.resources) or 'none'})"
                )

    def _check_partitions(self, assets: Sequence[AssetsDefinition]) -> None:
        by_key = {a.key: a for a in assets}
        for a in assets:
            for up_key in a.upstream_keys:
                up = by_key[up_key]
                if a.partitions_def is None or up.partitions_def is None or up_key in a.partition_mappings:
                    continue  # unpartitioned on one side: all partitions, or the one value
                if a.partitions_def != up.partitions_def:
                    raise InvalidDefinitionError(
                        f"asset '{a.key}': partitioned by {a.partitions_def.describe()} but its upstream "
                        f"'{up_key}' by {up.partitions_def.describe()}; give ins={{'{up_key.path[-1]}': "
                        "AssetIn(partition_mapping=...)} (e.g. TimeWindowPartitionMapping)"
                    )

    def _check_resources(self, assets: Sequence[AssetsDefinition]) -> None:
        for a in assets:
            for param in sorted(a.required_resource_keys):
                if param not in self.resources:
                    raise MissingResourceError(
                        f"asset '{a.key}': missing resource '{param}' "
                        f"(Definitions(resources=...) has: {sorted(self.resources) or 'none'})"
                    )
            if a.io_manager_key != DEFAULT_IO_MANAGER_KEY and a.io_manager_key not in self.resources:
                raise MissingResourceError(
                    f"asset '{a.key}': missing resource '{a.io_manager_key}' named by io_manager_key"
                )


def _where(asset: AssetsDefinition) -> str:
    code = getattr(asset.fn, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code else repr(asset.fn)


_I = TypeVar("_I", ScheduleDefinition, SensorDefinition)


def _unique_by_name(items: Iterable[Any], kind: str, cls: type[_I]) -> dict[str, _I]:
    found: dict[str, _I] = {}
    for item in items:
        if not isinstance(item, cls):
            raise InvalidDefinitionError(f"Definitions: {kind}s= holds {item!r}, not a {cls.__name__}")
        name = item.name
        if name in found:
            raise DuplicateDefinitionError(f"{kind} '{name}': defined twice")
        found[name] = item
    return found
