"""``build_schedule_from_partitioned_job``: each tick runs the newest partition whose window
has ended (at 2024-01-23 06:00 a daily job gets ``2024-01-22``), keyed by the partition."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tidegate.definitions.instigator import DefaultScheduleStatus
from tidegate.definitions.job import JobDefinition, JobTarget, UnresolvedAssetJob
from tidegate.definitions.partitions import PartitionsDefinition, TimeWindowPartitionsDefinition
from tidegate.definitions.run_request import RunRequest, SkipReason
from tidegate.definitions.schedule import ScheduleDefinition, ScheduleEvaluationContext
from tidegate.errors import InvalidDefinitionError


class PartitionedJobSchedule(ScheduleDefinition):
    """A schedule whose cron and timezone come from its job's time-window partitions, known
    once Definitions has resolved the job (``bind``)."""

    def __init__(self, partitioned_job: JobTarget, overrides: dict[str, Any], **kwargs: Any) -> None:
        self.partitioned_job = partitioned_job
        self.overrides = overrides
        self.bound_partitions: TimeWindowPartitionsDefinition | None = None
        super().__init__(execution_fn=self._evaluate, **kwargs)
        self._takes_context, self._resource_params = True, ()

    def bind(self, partitions_def: PartitionsDefinition | None) -> PartitionedJobSchedule:
        if not isinstance(partitions_def, TimeWindowPartitionsDefinition):
            raise InvalidDefinitionError(
                f"{self.label}: job '{self.partitioned_job.name}' is not partitioned by time windows "
                f"({partitions_def.describe() if partitions_def else 'not partitioned'})"
            )
        fields = partitions_def.cron_schedule.split()
        for index, name in ((0, "minute_of_hour"), (1, "hour_of_day"), (2, "day_of_month"), (4, "day_of_week")):
            if self.overrides.get(name) is not None:
                fields[index] = str(self.overrides[name])
        bound = PartitionedJobSchedule(
            self.partitioned_job,
            self.overrides,
            name=self.name,
            cron_schedule=self.overrides.get("cron_schedule") or " ".join(fields),
            job=self.partitioned_job,
            execution_timezone=self.overrides.get("execution_timezone") or partitions_def.timezone,
            tags=self.tags,
            description=self.description,
            default_status=self.default_status,
            max_catchup_ticks=self.max_catchup_ticks,
        )
        bound.bound_partitions = partitions_def
        return bound

    def _evaluate(self, context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        if self.bound_partitions is None:
            raise InvalidDefinitionError(f"{self.label}: not bound to its job's partitions (use it in Definitions)")
        key = self.bound_partitions.last_ended_key(context.scheduled_execution_time)
        if key is None:
            return SkipReason("no partition has ended yet")
        return RunRequest(run_key=key, partition_key=key, tags=dict(self.tags))


def build_schedule_from_partitioned_job(
    job: JobTarget,
    cron_schedule: str | None = None,
    *,
    hour_of_day: int | None = None,
    minute_of_hour: int | None = None,
    day_of_week: int | None = None,
    day_of_month: int | None = None,
    execution_timezone: str | None = None,
    tags: Mapping[str, str] | None = None,
    name: str | None = None,
    description: str | None = None,
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
) -> PartitionedJobSchedule:
    if not isinstance(job, UnresolvedAssetJob | JobDefinition):
        raise InvalidDefinitionError(f"build_schedule_from_partitioned_job: expected a job, got {job!r}")
    overrides = {
        "cron_schedule": cron_schedule,
        "hour_of_day": hour_of_day,
        "minute_of_hour": minute_of_hour,
        "day_of_week": day_of_week,
        "day_of_month": day_of_month,
        "execution_timezone": execution_timezone,
    }
    schedule = PartitionedJobSchedule(
        job,
        overrides,
        name=name or f"{job.name}_schedule",
        cron_schedule=cron_schedule or "0 0 * * *",  # replaced by bind() with the partitions' cadence
        job=job,
        execution_timezone=execution_timezone,
        tags=tags,
        description=description,
        default_status=default_status,
    )
    return schedule.bind(job.partitions_def) if job.partitions_def is not None else schedule
