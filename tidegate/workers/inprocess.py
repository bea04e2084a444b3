"""``tidegate.materialize``: run assets in this process through the same step code.

For users' unit tests. Storage is a throw-away SQLite database and outputs stay in memory
unless ``resources`` provides an ``io_manager``; claims, outcomes, retries and skipping
work exactly as on Celery workers.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tidegate.definitions.asset import DEFAULT_IO_MANAGER_KEY, AssetsDefinition
from tidegate.definitions.defs import Definitions
from tidegate.definitions.events import DEFAULT_OUTPUT_NAME
from tidegate.definitions.job import IMPLICIT_ASSET_JOB, JobDefinition
from tidegate.definitions.key import AssetKey, CoercibleToAssetKey
from tidegate.definitions.op_graph import parse_step_key
from tidegate.definitions.partitions import PartitionKeyRange
from tidegate.definitions.selection import CoercibleToAssetSelection
from tidegate.errors import RunFailedError, TidegateError
from tidegate.names import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, RunStatus, StepStatus
from tidegate.storage.api import Storage
from tidegate.storage.instance import DagsterInstance
from tidegate.storage.records import EventRecord, MaterializationRecord, RunRecord, StepRecord, StepRef
from tidegate.workers.execution import StepExecutor
from tidegate.workers.io import InMemoryIOManager, InputContext, IOManager, OutputContext
from tidegate.workers.op_execution import DYNAMIC_OUTPUT_EVENT


@dataclass(frozen=True)
class ExecuteInProcessResult:
    run: RunRecord
    steps: Sequence[StepRecord]
    events: Sequence[EventRecord]
    materializations: Sequence[MaterializationRecord]
    io_manager: IOManager

    @property
    def success(self) -> bool:
        return self.run.status == RunStatus.SUCCESS

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def asset_value(self, key: CoercibleToAssetKey) -> Any:
        asset_key = AssetKey.from_coercible(key)
        return self.io_manager.load_input(InputContext(asset_key, self.run.run_id, "asset_value"))

    def step(self, step_key: str) -> StepRecord:
        return next(s for s in self.steps if s.step_key == step_key)

    def get_asset_materialization_events(self) -> list[MaterializationRecord]:
        return list(self.materializations)


def materialize(
    assets: Iterable[AssetsDefinition],
    resources: Mapping[str, Any] | None = None,
    selection: CoercibleToAssetSelection | None = None,
    *,
    tags: Mapping[str, str] | None = None,
    raise_on_error: bool = True,
    partition_key: str | None = None,
    instance: DagsterInstance | None = None,
    run_config: Any = None,
) -> ExecuteInProcessResult:
    """Materialize ``assets`` (or the ``selection`` of them) in this process, in order: for
    ``partition_key``, or every partition from ``tags[PARTITION_RANGE_START_TAG]`` to
    ``tags[PARTITION_RANGE_END_TAG]`` in one run (as Dagster's range tags); into
    ``instance``'s database when given (a sensor's unit test then sees the run and its
    materializations through ``context.instance``), else into a throw-away one. ``run_config``
    (a RunConfig or its dict form) configures the assets and resources, checked first."""
    all_resources = dict(resources or {})
    all_resources.setdefault(DEFAULT_IO_MANAGER_KEY, InMemoryIOManager())
    defs = Definitions(assets=list(assets), resources=all_resources)
    workdir = tempfile.mkdtemp(prefix="tidegate-materialize-") if instance is None else None
    if instance is not None:
        storage = instance.storage
    else:
        storage = Storage.open(f"sqlite:///{workdir}/tidegate.db", upgrade=True)
    try:
        given = dict(tags or {})
        partition_range = None
        if PARTITION_RANGE_START_TAG in given and PARTITION_RANGE_END_TAG in given:
            partition_range = PartitionKeyRange(given[PARTITION_RANGE_START_TAG], given[PARTITION_RANGE_END_TAG])
        plan = defs.plan(
            IMPLICIT_ASSET_JOB,
            selection,
            partition_key=partition_key,
            partition_range=partition_range,
            dynamic_keys=lambda name: [partition_key or ""],
            run_config=run_config,
        )
        pending: deque[StepRef] = deque()
        executor = StepExecutor(defs, storage, publish=pending.extend, worker_name="in-process")
        run_id = storage.submit_run(plan, origin="materialize", tags=tags).run_id
        _run_to_end(storage, executor, pending, run_id)
        result = ExecuteInProcessResult(
            run=storage.get_run(run_id),
            steps=storage.get_steps(run_id),
            events=storage.get_events(run_id),
            materializations=[m for m in storage.get_materializations() if m.run_id == run_id],
            io_manager=all_resources[DEFAULT_IO_MANAGER_KEY],
        )
    finally:
        if workdir is not None:
            storage.dispose()
            shutil.rmtree(workdir, ignore_errors=True)
    if raise_on_error and not result.success:
        failed = [s for s in result.steps if s.error and s.status == StepStatus.FAILED]
        detail = "\n".join(f"step '{s.step_key}' failed:\n{s.error}" for s in failed)
        raise RunFailedError(f"run {run_id} ended {result.run.status}\n{detail}")
    return result


def _run_to_end(storage: Storage, executor: StepExecutor, pending: deque[StepRef], run_id: str) -> None:
    """Start ``run_id`` and execute its steps one by one in this process until it ends."""
    pending.extend(storage.start_run(run_id))
    while storage.get_run(run_id).status not in RunStatus.TERMINAL:
        if pending:
            ref = pending.popleft()
            executor.execute(ref.run_id, ref.step_key, ref.attempt)
            continue
        due = storage.steps_to_publish(grace_seconds=0)
        if due:
            pending.extend(due)
        else:
            time.sleep(0.02)  # a retry is waiting for its delay


@dataclass(frozen=True)
class JobExecutionResult(ExecuteInProcessResult):
    """What ``JobDefinition.execute_in_process`` returns for an op job (Dagster's
    ``ExecuteInProcessResult``): ``success``, ``output_for_node``, ``all_events``."""

    job: JobDefinition | None = None
    resources: Mapping[str, Any] | None = None

    @property
    def all_events(self) -> list[EventRecord]:
        return list(self.events)

    def output_for_node(self, node_str: str, output_name: str = DEFAULT_OUTPUT_NAME) -> Any:
        """The value node ``node_str`` (``op`` or ``graph.op``) emitted on ``output_name``; for
        a mapped op, a dict of mapping key -> value; for a dynamic output, likewise."""
        assert self.job is not None and self.job.op_graph is not None
        node = self.job.op_graph.nodes.get(node_str)
        if node is None or output_name not in node.op.outs:
            raise TidegateError(f"job '{self.job.name}': no output {output_name!r} of node {node_str!r}")
        out = node.op.outs[output_name]
        manager = (self.resources or {}).get(out.io_manager_key) or self.io_manager
        steps = [s for s in self.steps if s.asset_key == node_str and s.status == StepStatus.SUCCEEDED]
        if not steps:
            raise TidegateError(f"node {node_str!r}: did not run successfully in run {self.run_id}")

        def load(step_key: str, mapping_key: str | None) -> Any:
            upstream = OutputContext(None, self.run_id, step_key, name=output_name, mapping_key=mapping_key)
            return manager.load_input(InputContext(None, self.run_id, "output_for_node", upstream_output=upstream))

        if out.is_dynamic:
            values: dict[str, Any] = {}
            for step in steps:
                for event in self.events:
                    data = event.data or {}
                    ours = event.step_key == step.step_key and data.get("output") == output_name
                    if ours and event.event_type == DYNAMIC_OUTPUT_EVENT:
                        values.update({k: load(step.step_key, k) for k in data.get("mapping_keys") or []})
            return values
        if node.scope:
            return {parse_step_key(s.step_key)[1][-1]: load(s.step_key, None) for s in steps}
        return load(steps[0].step_key, None)


def execute_job_in_process(
    job: JobDefinition,
    *,
    run_config: Any = None,
    resources: Mapping[str, Any] | None = None,
    partition_key: str | None = None,
    raise_on_error: bool = True,
    tags: Mapping[str, str] | None = None,
) -> JobExecutionResult:
    """Run op job ``job`` in this process through the same step code as a worker, into a
    throw-away SQLite database, outputs in memory unless ``resources`` gives an io_manager."""
    all_resources = {**job.resource_defs, **(resources or {})}
    all_resources.setdefault(DEFAULT_IO_MANAGER_KEY, InMemoryIOManager())
    defs = Definitions(jobs=[job], resources=all_resources)
    workdir = tempfile.mkdtemp(prefix="tidegate-execute-")
    storage = Storage.open(f"sqlite:///{workdir}/tidegate.db", upgrade=True)
    try:
        plan = defs.plan(
            job.name,
            partition_key=partition_key,
            dynamic_keys=lambda name: [partition_key or ""],
            run_config=run_config,
        )
        pending: deque[StepRef] = deque()
        executor = StepExecutor(defs, storage, publish=pending.extend, worker_name="in-process")
        run_id = storage.submit_run(plan, origin="execute_in_process", tags=tags).run_id
        _run_to_end(storage, executor, pending, run_id)
        result = JobExecutionResult(
            run=storage.get_run(run_id),
            steps=storage.get_steps(run_id),
            events=storage.get_events(run_id),
            materializations=[],
            io_manager=all_resources[DEFAULT_IO_MANAGER_KEY],
            job=defs.get_job(job.name),
            resources=all_resources,
        )
    finally:
        storage.dispose()
        shutil.rmtree(workdir, ignore_errors=True)
    if raise_on_error and not result.success:
        failed = [s for s in result.steps if s.error and s.status == StepStatus.FAILED]
        detail = "\n".join(f"step '{s.step_key}' failed:\n{s.error}" for s in failed)
        raise RunFailedError(f"run {run_id} of job '{job.name}' ended {result.run.status}\n{detail}")
    return result
