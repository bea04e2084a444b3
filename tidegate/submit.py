"""Turning a request to launch a job into a run plan, shared by ``tidegate job launch`` and the
``tidegate.launch_job`` Celery task (how Flower launches jobs).

Both validate the same way (an unknown job, a bad partition key or a malformed tag raises a
typed error naming it) and submit through ``JobRunRequest.submit`` (as does ``tidegate
materialize``); the run queue then starts the run within its limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.definitions.defs import Definitions
from tidegate.definitions.job import RunPlan
from tidegate.definitions.limits import check_launch
from tidegate.definitions.partitions import check_partition_key
from tidegate.errors import LaunchRequestError
from tidegate.names import PRIORITY_TAG
from tidegate.storage.api import Storage
from tidegate.storage.records import SubmitResult

FLOWER_ORIGIN = "flower"  # the origin of runs launched by the launch_job task


@dataclass(frozen=True)
class JobRunRequest:
    """A validated launch of one job: its plan, the run's tags, priority and run key."""

    plan: RunPlan
    tags: dict[str, str]
    priority: int = 0
    run_key: str | None = None

    def submit(self, storage: Storage, *, origin: str) -> SubmitResult:
        """Submit a QUEUED run in one transaction. A second submission with the same ``origin``
        and ``run_key`` is a no-op that returns the existing run (``created=False``)."""
        return storage.submit_run(
            self.plan, origin=origin, run_key=self.run_key, tags=self.tags, priority=self.priority
        )


def prepare_job_run(
    defs: Definitions,
    storage: Storage,
    job_name: str,
    *,
    partition_key: str | None = None,
    tags: Mapping[str, str] | None = None,
    priority: int | None = None,
    run_key: str | None = None,
    selection: str | None = None,
) -> JobRunRequest:
    """Plan a run of ``job_name`` (of ``partition_key`` for a partitioned job; of the assets
    ``selection`` picks, e.g. ``"raw_orders+"``, when given).

    The priority is ``priority`` if given, else the ``tidegate/priority`` tag, else 0; it is
    written back into that tag. Raises UnknownJobError, PartitionKeyError or
    LaunchRequestError (InputLimitError for a value over its limit).
    """
    if not isinstance(job_name, str):
        raise LaunchRequestError(f"job name: expected a string, got {job_name!r}")
    if partition_key is not None and not isinstance(partition_key, str):
        raise LaunchRequestError(f"job '{job_name}': partition key must be a string, got {partition_key!r}")
    if partition_key is not None:
        check_partition_key(f"job '{job_name}'", partition_key)
    if run_key is not None and not isinstance(run_key, str):
        raise LaunchRequestError(f"job '{job_name}': run key must be a string, got {run_key!r}")
    run_tags = _string_tags(job_name, tags)
    check_launch(f"job '{job_name}'", run_key=run_key, tags=run_tags)
    plan = defs.plan(job_name, selection, partition_key=partition_key, dynamic_keys=storage.dynamic_partition_keys)
    if priority is None:
        text = run_tags.get(PRIORITY_TAG, "0")
        try:
            priority = int(text)
        except ValueError:
            raise LaunchRequestError(
                f"job '{job_name}': tag {PRIORITY_TAG!r} must be an integer, got {text!r}"
            ) from None
    run_tags[PRIORITY_TAG] = str(priority)
    return JobRunRequest(plan, run_tags, priority, run_key)


def _string_tags(job_name: str, tags: Any) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise LaunchRequestError(f"job '{job_name}': tags must be an object of strings, got {tags!r}")
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise LaunchRequestError(f"job '{job_name}': tags must map strings to strings, got {key!r}: {value!r}")
    return dict(tags)
