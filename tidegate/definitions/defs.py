"""``Definitions``: everything a code location defines, validated as one whole."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from tidegate.definitions.asset import DEFAULT_IO_MANAGER_KEY, AssetsDefinition
from tidegate.definitions.asset_spec import AssetSpec, external_asset
from tidegate.definitions.automation_condition import check_condition_executable
from tidegate.definitions.config import ConfigNode, check_run_config
from tidegate.definitions.graph import AssetGraph
from tidegate.definitions.instigator import Target
from tidegate.definitions.job import (
    IMPLICIT_ASSET_JOB,
    JobDefinition,
    JobTarget,
    RunPlan,
    UnresolvedAssetJob,
    define_asset_job,
    plan_run,
)
from tidegate.definitions.key import AssetKey
from tidegate.definitions.op_job import PartitionedConfig, plan_op_run
from tidegate.definitions.partitioned_schedule import PartitionedJobSchedule
from tidegate.definitions.partitions import DynamicKeys, PartitionKeyRange
from tidegate.definitions.run_request import RunRequest
from tidegate.definitions.schedule import ScheduleDefinition
from tidegate.definitions.selection import (
    CoercibleToAssetSelection,
    coerce_selection,
    executable_keys,
    selects_everything,
)
from tidegate.definitions.sensor import SensorDefinition
from tidegate.errors import (
    DefinitionError,
    DuplicateDefinitionError,
    EmptySelectionError,
    ExternalAssetError,
    InvalidDefinitionError,
    MissingResourceError,
    PartitionKeyError,
    RunConfigError,
    RunRequestTargetError,
    UnknownJobError,
)
from tidegate.names import CODE_LOCATION_TAG


class Definitions:
    """Assets, jobs, schedules, sensors and resources of one code location.

    Building it validates the whole: duplicate keys and names, unknown inputs, dependency
    cycles, jobs that select nothing and resources that are missing each raise a
    :class:`~tidegate.errors.DefinitionError` naming the definition. An ``AssetSpec`` in
    ``assets=``, and a ``deps=`` key that nothing defines, become external assets (as in Dagster).
    """

    def __init__(
        self,
        assets: Iterable[AssetsDefinition | AssetSpec] | None = None,
        jobs: Iterable[JobTarget] | None = None,
        schedules: Iterable[Any] | None = None,
        sensors: Iterable[Any] | None = None,
        resources: Mapping[str, Any] | None = None,
    ) -> None:
        # The name of the code location this was loaded from (set by the loader); every run
        # planned here is tagged with it, so only a process that loaded it judges its jobs.
        self.code_location: str | None = None
        self.resources: dict[str, Any] = dict(resources or {})
        given_assets, given_jobs = list(assets or ()), list(jobs or ())
        given_schedules, given_sensors = list(schedules or ()), list(sensors or ())
        self._given: tuple[list[Any], ...] = (given_assets, given_jobs, given_schedules, given_sensors)
        asset_list: list[AssetsDefinition] = []
        seen: dict[AssetKey, AssetsDefinition] = {}
        for item in given_assets:
            a = item.to_assets_definition() if isinstance(item, AssetSpec) else item
            if not isinstance(a, AssetsDefinition):
                raise InvalidDefinitionError(f"Definitions: assets= holds {a!r}, not an @asset or AssetSpec")
            check_condition_executable(a)
            if a.key in seen:
                raise DuplicateDefinitionError(
                    f"asset '{a.key}': defined twice ({_where(seen[a.key])} and {_where(a)})"
                )
            seen[a.key] = a
            asset_list.append(a)
        asset_list += _external_stubs(asset_list)
        resolved = [a.resolve_params(self.resources, seen) for a in asset_list]
        self.graph = AssetGraph.build(resolved)
        self._check_resources(resolved)
        self._check_partitions(resolved)

        self.jobs: dict[str, JobDefinition] = {}
        for job in given_jobs:
            if not isinstance(job, UnresolvedAssetJob | JobDefinition):
                raise InvalidDefinitionError(f"Definitions: jobs= holds {job!r}, not define_asset_job(...) or @job")
            if job.name in self.jobs or job.name == IMPLICIT_ASSET_JOB:
                raise DuplicateDefinitionError(f"job '{job.name}': defined twice")
            self.jobs[job.name] = self._resolve_job(job)
        implicit = define_asset_job(IMPLICIT_ASSET_JOB, "*")  # ad-hoc runs and selection targets; may be empty
        self.jobs[IMPLICIT_ASSET_JOB] = self._resolve_job(implicit)

        self.schedules: dict[str, ScheduleDefinition] = _unique_by_name(given_schedules, "schedule", ScheduleDefinition)
        self.sensors: dict[str, SensorDefinition] = _unique_by_name(given_sensors, "sensor", SensorDefinition)
        self._add_default_automation_sensor()
        _check_instigator_names(self.schedules, self.sensors)
        for name, schedule in list(self.schedules.items()):
            if isinstance(schedule, PartitionedJobSchedule) and schedule.bound_partitions is None:
                resolved_job = self.jobs.get(schedule.partitioned_job.name)
                if resolved_job is None:
                    resolved_job = schedule.partitioned_job.resolve(self.graph)
                self.schedules[name] = schedule.bind(resolved_job.partitions_def)
        instigators: list[ScheduleDefinition | SensorDefinition] = [*self.schedules.values(), *self.sensors.values()]
        for instigator in instigators:
            self._check_instigator(instigator)

    @staticmethod
    def merge(*def_sets: Definitions) -> Definitions:
        """One Definitions holding the union of ``def_sets`` (Dagster's ``Definitions.merge``).

        The same object in several sets counts once; two different definitions of one asset
        key, job, schedule or sensor name raise DuplicateDefinitionError, and so do two
        different resources under one key.
        """
        lists: tuple[list[Any], list[Any], list[Any], list[Any]] = ([], [], [], [])
        resources: dict[str, Any] = {}
        owner: dict[str, int] = {}
        for index, def_set in enumerate(def_sets):
            if not isinstance(def_set, Definitions):
                raise InvalidDefinitionError(f"Definitions.merge: argument {index} is {def_set!r}, not a Definitions")
            for merged, given in zip(lists, def_set._given, strict=True):
                merged.extend(item for item in given if not any(item is known for known in merged))
            for key, value in def_set.resources.items():
                if key in resources and resources[key] is not value:
                    raise DuplicateDefinitionError(
                        f"resource '{key}': Definitions objects {owner[key]} and {index} give different resources"
                    )
                resources[key] = value
                owner.setdefault(key, index)
        assets, jobs, schedules, sensors = lists
        return Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors, resources=resources)

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
        run_config: Any = None,
    ) -> RunPlan:
        """The steps of a run of ``job_name`` (or of the ``selection`` subset of it), for
        ``partition_key`` (or every partition of ``partition_range``, in one run) when the job
        is partitioned; an unknown key raises PartitionKeyError. ``run_config`` (else the
        job's default ``config``) is checked against the planned steps' assets and the
        resources (RunConfigError naming the node and field) and kept, in its stored form,
        on the plan."""
        plan = self._plan(job_name, selection, partition_key, partition_range, dynamic_keys, current_time)
        return self.configured(plan, run_config)

    def configured(self, plan: RunPlan, run_config: Any) -> RunPlan:
        """``plan`` carrying ``run_config`` (the job's default config when None), checked
        against the nodes of its steps (RunConfigError)."""
        job = self.get_job(plan.job_name)
        if run_config is None and isinstance(job.config, PartitionedConfig):
            if plan.partition_key is None:
                raise PartitionKeyError(f"job '{job.name}': its config is partitioned; give a partition key")
            run_config = job.config.run_config_for_partition_key(plan.partition_key)
        nodes: dict[str, ConfigNode] | None = {} if job.op_graph is None else None  # an op job: all its ops
        node_names = self.graph.steps.node_names  # an asset's step key -> its node name
        config_nodes = job.config_nodes
        for step in plan.steps if job.op_graph is None else ():
            node = node_names.get(step.asset_key)
            if node is None or nodes is None:
                nodes = None  # not an asset's step: check against every node of the job
                continue
            nodes[node] = config_nodes[node]
        return dataclasses.replace(plan, run_config=self.check_job_config(plan.job_name, run_config, nodes))

    def check_job_config(
        self, job_name: str, run_config: Any, nodes: Mapping[str, ConfigNode] | None = None
    ) -> dict[str, Any] | None:
        """``run_config`` (the job's default config when None) checked against ``nodes`` (every
        node of the job when None) and the resources; its stored form, None when empty."""
        job = self.get_job(job_name)
        label = f"job '{job_name}'" if job_name != IMPLICIT_ASSET_JOB else "run"
        return check_run_config(
            label,
            job.config if run_config is None else run_config,
            job.config_nodes if nodes is None else nodes,
            {**self.resources, **job.resource_defs},
        )

    def _resolve_job(self, job: JobTarget) -> JobDefinition:
        """The job over this graph, with what its run config is checked against."""
        if isinstance(job, JobDefinition):  # an op job: its config nodes are its ops
            self._check_op_job(job)
            resolved = dataclasses.replace(job, resources={**self.resources, **job.resource_defs})
            if job.config is not None and not isinstance(job.config, PartitionedConfig):
                try:
                    check_run_config(
                        f"job '{job.name}': default config", job.config, job.config_nodes, resolved.resources
                    )
                except RunConfigError as exc:
                    raise InvalidDefinitionError(str(exc)) from None
            return resolved
        resolved = job.resolve(self.graph)
        nodes = {}
        for key in resolved.asset_keys:
            asset = self.graph.assets[key]
            nodes[asset.node_name] = ConfigNode(f"asset '{asset.key}'", asset.config_type)
        resolved = dataclasses.replace(resolved, config_nodes=nodes, resources=self.resources)
        if resolved.config is not None:
            try:
                check_run_config(f"job '{job.name}': default config", resolved.config, nodes, self.resources)
            except RunConfigError as exc:
                raise InvalidDefinitionError(str(exc)) from None
        return resolved

    def _plan(
        self,
        job_name: str,
        selection: CoercibleToAssetSelection | None,
        partition_key: str | None,
        partition_range: PartitionKeyRange | None,
        dynamic_keys: DynamicKeys | None,
        current_time: datetime | None,
    ) -> RunPlan:
        job = self.get_job(job_name)
        if job.op_graph is not None:
            return self._plan_op_job(job, selection, partition_key, partition_range, dynamic_keys, current_time)
        keys = None
        if selection is not None:
            chosen_selection = coerce_selection(selection)
            label = f"job '{job_name}'" if job_name != IMPLICIT_ASSET_JOB else "selection"
            keys = executable_keys(chosen_selection, self.graph, label)
            if not keys <= job.asset_key_set:
                keys &= job.asset_key_set
            if not keys and not selects_everything(chosen_selection):
                raise EmptySelectionError(f"job '{job_name}': selection {selection!r} matches no asset")
        assets = self.graph.assets
        chosen = job.asset_keys if keys is None else keys
        # distinct definition objects first: hashing a definition (a dataclass) per asset cost
        # more than the rest of this check on a run of thousands of assets
        found = {id(d): d for d in (assets[k].partitions_def for k in chosen) if d is not None}
        partitions = set(found.values())
        if len(partitions) > 1:
            raise InvalidDefinitionError(f"job '{job_name}': the selection spans different partitions definitions")
        # a selection of unpartitioned assets only is not partitioned, whatever the job holds besides
        partitions_def = next(iter(partitions), None) or (job.partitions_def if keys is None else None)
        if partition_range is not None:
            if partition_key is not None or partitions_def is None:
                raise PartitionKeyError(
                    f"job '{job_name}': a partition range needs a partitioned job and no single partition key"
                )
            try:
                partitions_def.keys_in_range(partition_range.start, partition_range.end, current_time, dynamic_keys)
            except PartitionKeyError as exc:
                raise type(exc)(f"job '{job_name}': {exc}") from None
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
                raise type(exc)(f"job '{job_name}': {exc}") from None
        return self._located(plan_run(self.graph, job, keys, partition_key))

    def _plan_op_job(
        self,
        job: JobDefinition,
        selection: Any,
        partition_key: str | None,
        partition_range: PartitionKeyRange | None,
        dynamic_keys: DynamicKeys | None,
        current_time: datetime | None,
    ) -> RunPlan:
        """An op job's plan: all its unmapped ops, or ``selection`` as a list of step keys
        (a re-execution's steps, mapped ones included)."""
        label = f"job '{job.name}'"
        if partition_range is not None:
            raise PartitionKeyError(f"{label}: an op job runs one partition per run, not a range")
        if partition_key is not None and job.partitions_def is None:
            raise PartitionKeyError(f"{label}: not partitioned, but partition key {partition_key!r} given")
        if partition_key is None and job.partitions_def is not None:
            raise PartitionKeyError(f"{label}: partitioned by {job.partitions_def.describe()}; give a partition key")
        if partition_key is not None and job.partitions_def is not None:
            try:
                job.partitions_def.validate_key(partition_key, current_time, dynamic_keys)
            except PartitionKeyError as exc:
                raise type(exc)(f"{label}: {exc}") from None
        if selection is not None and (isinstance(selection, str) or not isinstance(selection, list | tuple)):
            raise InvalidDefinitionError(f"{label}: an op job's subset is a list of step keys, got {selection!r}")
        return self._located(plan_op_run(job, partition_key, selection))

    def _check_op_job(self, job: JobDefinition) -> None:
        if job.op_graph is None:
            return
        available = set(self.resources) | set(job.resource_defs)
        for node in job.op_graph.nodes.values():
            for key in sorted(node.op.required_resource_keys):
                if key not in available:
                    raise MissingResourceError(
                        f"job '{job.name}': op '{node.handle}' needs resource '{key}' "
                        f"(Definitions(resources=...) and the job's resource_defs have: {sorted(available) or 'none'})"
                    )
            keys = {out.io_manager_key for out in node.op.outs.values()} - {DEFAULT_IO_MANAGER_KEY}
            for key in sorted(keys - available):
                raise MissingResourceError(
                    f"job '{job.name}': op '{node.handle}' names io manager '{key}', not defined"
                )

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
        """The plan for a schedule's or sensor's RunRequest (its job_name, which must be one the
        instigator targets, and its asset_selection, which must lie within that job or the
        targeted selection, override the instigator's target)."""
        job_name = target.job_for(label, request.job_name, self.jobs) or IMPLICIT_ASSET_JOB
        selection: CoercibleToAssetSelection | None = None
        if request.asset_selection is not None:
            self._check_request_selection(label, target, job_name, request)
            selection = list(request.asset_selection)
        elif target.selection is not None and not request.job_name:
            selection = target.selection
        try:
            return self.plan(
                job_name,
                selection,
                partition_key=request.partition_key,
                dynamic_keys=dynamic_keys,
                current_time=current_time,
                run_config=request.run_config,
            )
        except RunConfigError as exc:
            raise RunConfigError(f"{label}: {exc}") from None  # the tick's error names its instigator

    def _check_request_selection(self, label: str, target: Target, job_name: str, request: RunRequest) -> None:
        """As Dagster: a RunRequest may select a subset of its target, never assets outside it."""
        if target.selection is not None and request.job_name is None:
            allowed, scope = target.selection.resolve(self.graph), "its target selection"
        else:
            allowed, scope = set(self.get_job(job_name).asset_keys), f"job '{job_name}'"
        outside = ", ".join(repr(str(k)) for k in sorted(set(request.asset_selection or ()) - set(allowed)))
        if outside:
            raise RunRequestTargetError(f"{label}: RunRequest selects {outside}, outside {scope}")

    def _add_default_automation_sensor(self) -> None:
        """As Dagster: assets with an automation condition that no automation condition sensor
        targets are covered by ``default_automation_condition_sensor`` (running by default)."""
        from tidegate.definitions.automation_sensor import (
            DEFAULT_AUTOMATION_SENSOR,
            AutomationConditionSensorDefinition,
            default_automation_condition_sensor,
        )

        conditioned = {k for k, a in self.graph.assets.items() if a.automation_condition is not None}
        for sensor in self.sensors.values():
            if isinstance(sensor, AutomationConditionSensorDefinition):
                conditioned -= sensor.selection.resolve(self.graph)
        if conditioned and DEFAULT_AUTOMATION_SENSOR not in self.sensors:
            self.sensors[DEFAULT_AUTOMATION_SENSOR] = default_automation_condition_sensor(conditioned)

    # -- validation ----------------------------------------------------------------------

    def _check_instigator(self, instigator: ScheduleDefinition | SensorDefinition) -> None:
        target = instigator.target
        for job in target.job_definitions:
            if job.name not in self.jobs:
                self.jobs[job.name] = self._resolve_job(job)  # as Dagster: targeted jobs join
        for job_name in target.job_names:
            if job_name not in self.jobs:
                raise InvalidDefinitionError(f"{instigator.label}: targets job '{job_name}', which is not defined")
        if target.selection is not None:
            try:
                keys = executable_keys(target.selection, self.graph, instigator.label)
            except ExternalAssetError:
                raise
            except DefinitionError as exc:
                raise InvalidDefinitionError(f"{instigator.label}: {exc}") from None
            if not keys and not selects_everything(target.selection):
                raise EmptySelectionError(f"{instigator.label}: its target selects no asset")
        self._check_static_config(instigator)
        for key in instigator.resource_keys:
            if key not in self.resources:
                raise MissingResourceError(
                    f"{instigator.label}: missing resource '{key}' "
                    f"(Definitions(resources=...) has: {sorted(self.resources) or 'none'})"
                )

    def _check_static_config(self, instigator: ScheduleDefinition | SensorDefinition) -> None:
        """A schedule's own ``run_config`` must fit what it targets, when the code is loaded."""
        run_config = getattr(instigator, "run_config", None)
        if run_config is None:
            return
        target = instigator.target
        try:
            for job_name in target.job_names:
                self.check_job_config(job_name, run_config)
            if target.selection is not None:
                implicit = self.get_job(IMPLICIT_ASSET_JOB)
                keys = target.selection.resolve(self.graph)
                nodes = {self.graph.assets[k].node_name for k in keys if k in set(implicit.asset_keys)}
                self.check_job_config(IMPLICIT_ASSET_JOB, run_config, {n: implicit.config_nodes[n] for n in nodes})
        except RunConfigError as exc:
            raise InvalidDefinitionError(f"{instigator.label}: run_config: {exc}") from None

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


def _external_stubs(assets: Sequence[AssetsDefinition]) -> list[AssetsDefinition]:
    """An external asset for every ``deps=`` key that no asset or AssetSpec defines (Dagster's
    auto-created stubs). A loaded input naming an undefined asset stays an error (see AssetGraph)."""
    defined = {a.key for a in assets}
    missing = {d for a in assets for d in a.deps if d not in defined}
    return [external_asset(key) for key in sorted(missing)]


def _check_instigator_names(
    schedules: Mapping[str, ScheduleDefinition], sensors: Mapping[str, SensorDefinition]
) -> None:
    """Schedules and sensors share one namespace: their state (status, cursor, ticks) is kept
    by name, and Dagster too requires instigator names to be unique."""
    clashes = sorted(set(schedules) & set(sensors))
    if clashes:
        name = clashes[0]
        raise DuplicateDefinitionError(
            f"schedule '{name}' and sensor '{name}': one name for two instigators; schedules and sensors share "
            "one namespace (their state is kept by name), so rename one"
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


@dataclass(frozen=True)
class DefinitionsLoader:
    """A function decorated with ``@definitions``: the loader calls it to get the Definitions."""

    load_fn: Callable[[], Definitions]

    def __call__(self) -> Definitions:
        return self.load()

    def load(self) -> Definitions:
        name = getattr(self.load_fn, "__name__", repr(self.load_fn))
        result = self.load_fn()
        if not isinstance(result, Definitions):
            raise InvalidDefinitionError(f"@definitions '{name}': returned {result!r}, not a Definitions object")
        return result


def definitions(fn: Callable[[], Definitions]) -> DefinitionsLoader:
    """Mark ``fn`` as the entry point of a code location: tidegate calls it at load time, in
    every process, and uses the Definitions it returns (Dagster's ``@dg.definitions``).
    One per module, like a module-level Definitions object."""
    name = getattr(fn, "__name__", repr(fn))
    if not callable(fn):
        raise InvalidDefinitionError(f"@definitions decorates a function, got {fn!r}")
    required = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise InvalidDefinitionError(
            f"@definitions '{name}': takes parameter {required[0].name!r}; tidegate calls it with none "
            "(a DefinitionsLoadContext is not supported)"
        )
    return DefinitionsLoader(fn)
