"""Re-executing a run: a new run, linked to its parent, of all its steps or only of those that
did not succeed (their successful upstreams are read back through the IO managers)."""

from __future__ import annotations

from tidegate.definitions.defs import Definitions
from tidegate.definitions.job import RunPlan
from tidegate.definitions.partitions import PartitionKeyRange
from tidegate.errors import TidegateError
from tidegate.names import (
    CODE_LOCATION_TAG,
    PARENT_RUN_TAG,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    PARTITION_TAG,
    RETRY_NUMBER_TAG,
    ROOT_RUN_TAG,
    RunStatus,
    StepStatus,
)
from tidegate.storage.api import Storage
from tidegate.storage.records import RunRecord, SubmitResult


def reexecution_plan(defs: Definitions, storage: Storage, run: RunRecord, *, from_failure: bool) -> RunPlan:
    if run.status not in RunStatus.TERMINAL:
        raise TidegateError(f"run '{run.run_id}': still {run.status}; re-execute a finished run")
    steps = storage.get_steps(run.run_id)
    if run.job_name not in defs.jobs:
        raise TidegateError(f"run '{run.run_id}': job '{run.job_name}' is not defined in the loaded code")
    op_job = defs.jobs[run.job_name].op_graph is not None
    if op_job and not from_failure:
        steps = [s for s in steps if "[" not in s.step_key]  # a dynamic output plans its mapped steps again
    if from_failure:
        if run.status == RunStatus.SUCCESS:
            raise TidegateError(f"run '{run.run_id}': succeeded, nothing to re-execute from failure")
        steps = [s for s in steps if s.status != StepStatus.SUCCEEDED]
    # an op job's subset is its step keys (only the failed mapped keys of a fan-out run again)
    keys = [s.step_key if op_job else s.asset_key for s in steps]
    tags = run.tags
    partition_range = None
    if PARTITION_RANGE_START_TAG in tags and PARTITION_RANGE_END_TAG in tags:
        partition_range = PartitionKeyRange(tags[PARTITION_RANGE_START_TAG], tags[PARTITION_RANGE_END_TAG])
    return defs.plan(
        run.job_name,
        keys,
        partition_key=tags.get(PARTITION_TAG),  # the same partition(s) as its parent, with its config
        partition_range=partition_range,
        dynamic_keys=storage.dynamic_partition_keys,
        run_config=run.run_config if run.run_config is not None else {},
    )


def submit_reexecution(
    defs: Definitions,
    storage: Storage,
    run_id: str,
    *,
    from_failure: bool,
    origin: str = "reexecution",
    run_key: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> SubmitResult:
    """Submit the re-execution of ``run_id`` (tags carried over, parent and root linked)."""
    run = storage.get_run(run_id)
    plan = reexecution_plan(defs, storage, run, from_failure=from_failure)
    tags = {k: v for k, v in run.tags.items() if k not in (RETRY_NUMBER_TAG, CODE_LOCATION_TAG)}  # the plan's own
    tags[PARENT_RUN_TAG] = run.run_id
    tags[ROOT_RUN_TAG] = run.tags.get(ROOT_RUN_TAG, run.run_id)
    tags.update(extra_tags or {})
    return storage.submit_run(
        plan, origin=origin, run_key=run_key, tags=tags, priority=run.priority, parent_run_id=run.run_id
    )
