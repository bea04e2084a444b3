"""Schedules: run a job at the ticks of a cron expression in a timezone."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tidegate.definitions.config import run_config_dict
from tidegate.definitions.context import Resources
from tidegate.definitions.cron import validate_cron, validate_timezone
from tidegate.definitions.instance import Instance
from tidegate.definitions.instigator import (
    DefaultScheduleStatus,
    Target,
    call_user_code,
    check_name,
    check_tags,
    coerce_target,
    invoke_directly,
    resource_params,
)
from tidegate.definitions.run_request import Evaluation, RunRequest, normalize
from tidegate.errors import InvalidDefinitionError, InvalidInvocationError, RunConfigError


class ScheduleEvaluationContext:
    """What a schedule function sees: the tick's time (aware, in the schedule's timezone),
    resources, a logger and ``instance`` (runs, materializations, dynamic partitions). Build
    one for a unit test with :func:`build_schedule_context`."""

    def __init__(
        self,
        scheduled_execution_time: datetime | None,
        schedule_name: str | None,
        resources: Resources,
        log: logging.Logger,
        instance: Instance | None = None,
    ) -> None:
        self._scheduled_execution_time = scheduled_execution_time
        self.schedule_name = schedule_name
        self.resources = resources
        self.log = log
        self._instance = instance

    @property
    def scheduled_execution_time(self) -> datetime:
        if self._scheduled_execution_time is None:
            raise InvalidInvocationError(
                f"schedule '{self.schedule_name or '?'}': this context has no scheduled_execution_time; "
                "pass build_schedule_context(scheduled_execution_time=...)"
            )
        return self._scheduled_execution_time

    @property
    def instance(self) -> Instance:
        """Read runs, materializations and dynamic partitions (``get_runs``, ``get_run_records``,
        ``get_latest_materialization_event``, ``get_dynamic_partitions``, ...)."""
        if self._instance is None:
            raise InvalidInvocationError(
                f"schedule '{self.schedule_name or '?'}': this context has no instance; "
                "pass build_schedule_context(instance=...) (e.g. tidegate.instance_for_test())"
            )
        return self._instance

    def __enter__(self) -> ScheduleEvaluationContext:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __repr__(self) -> str:
        return f"ScheduleEvaluationContext(schedule_name={self.schedule_name!r}, at={self._scheduled_execution_time})"


def build_schedule_context(
    instance: Instance | None = None,
    scheduled_execution_time: datetime | None = None,
    resources: Mapping[str, Any] | None = None,
    *,
    definitions: Any = None,
    schedule_name: str | None = None,
) -> ScheduleEvaluationContext:
    """A context to call a schedule with in a unit test: ``my_schedule(build_schedule_context(...))``.
    ``resources`` override those of ``definitions``."""
    if scheduled_execution_time is not None and not isinstance(scheduled_execution_time, datetime):
        raise InvalidInvocationError(
            f"build_schedule_context: scheduled_execution_time must be a datetime, got {scheduled_execution_time!r}"
        )
    merged = {**dict(getattr(definitions, "resources", None) or {}), **dict(resources or {})}
    return ScheduleEvaluationContext(
        scheduled_execution_time,
        schedule_name,
        Resources(merged),
        logging.getLogger(f"tidegate.schedule.{schedule_name or 'test'}"),
        instance=instance,
    )


class ScheduleDefinition:
    """Request a run of ``target`` at every tick of ``cron_schedule`` in ``execution_timezone``.

    Without ``execution_fn`` each tick requests one run, with ``run_config`` (a RunConfig or
    its dict form, checked against the target when Definitions is built). Missed ticks (no beat was running)
    are caught up per ``max_catchup_ticks`` (at least 1): by default only the latest missed
    tick runs; ``N`` runs up to the N most recent.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        cron_schedule: str,
        job: Any = None,
        target: Any = None,
        job_name: str | None = None,
        execution_fn: Callable[..., Any] | None = None,
        execution_timezone: str | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
        default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
        max_catchup_ticks: int = 1,
        run_config: Any = None,
    ) -> None:
        provisional = name or getattr(execution_fn, "__name__", None)
        label = f"schedule {provisional!r}"
        self.target: Target = coerce_target(label, job, target, job_name=job_name)
        if provisional is None:
            if self.target.job_name is None:
                raise InvalidDefinitionError("schedule: give a name= when the target is an asset selection")
            provisional = f"{self.target.job_name}_schedule"
        self.name: str = check_name("schedule", provisional)
        label = self.label
        self.cron_schedule: str = validate_cron(label, cron_schedule)
        self.timezone: ZoneInfo = validate_timezone(label, execution_timezone)
        self.execution_timezone: str = self.timezone.key
        # 0 cannot work: the tick being evaluated is itself in the past by the time the beat
        # evaluates it, so "none of the missed ticks" would mean "never".
        if not isinstance(max_catchup_ticks, int) or isinstance(max_catchup_ticks, bool) or max_catchup_ticks < 1:
            raise InvalidDefinitionError(
                f"{label}: max_catchup_ticks must be an integer >= 1, got {max_catchup_ticks!r}"
            )
        self.max_catchup_ticks: int = max_catchup_ticks
        if not isinstance(default_status, DefaultScheduleStatus):
            raise InvalidDefinitionError(f"{label}: default_status must be a DefaultScheduleStatus")
        self.default_status: DefaultScheduleStatus = default_status
        self.execution_fn = execution_fn
        if execution_fn is not None and run_config is not None:
            raise InvalidDefinitionError(
                f"{label}: give run_config or a schedule function (whose RunRequests carry run_config), not both"
            )
        try:
            run_config_dict(f"{label}: run_config", run_config)  # storable; checked against the target by Definitions
        except RunConfigError as exc:
            raise InvalidDefinitionError(str(exc)) from None
        self.run_config: Any = run_config
        self.tags: dict[str, str] = check_tags(label, tags)
        self.description = description
        self._takes_context, self._resource_params = (
            resource_params(label, execution_fn) if execution_fn else (True, ())
        )

    @property
    def label(self) -> str:
        return f"schedule '{self.name}'"

    @property
    def resource_keys(self) -> tuple[str, ...]:
        return self._resource_params

    def evaluate(self, context: ScheduleEvaluationContext, resources: Mapping[str, Any]) -> Evaluation:
        if self.execution_fn is None:
            return Evaluation((RunRequest(tags=dict(self.tags), run_config=self.run_config),), None, None, False)
        value = call_user_code(self.execution_fn, context, self._takes_context, self._resource_params, resources)
        return normalize(self.label, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the schedule's function as a unit test does, ``my_schedule(build_schedule_context())``:
        returns what it returned, as Dagster does."""
        if self.execution_fn is None:
            raise InvalidInvocationError(f"{self.label}: has no schedule function to call (it runs its job per tick)")
        return invoke_directly(
            self.label,
            self.execution_fn,
            self._takes_context,
            self._resource_params,
            args,
            kwargs,
            ScheduleEvaluationContext,
            build_schedule_context,
        )

    @property
    def job_name(self) -> str | None:
        """The targeted job's name (None for an asset selection)."""
        return self.target.job_name

    def __repr__(self) -> str:
        return f"ScheduleDefinition({self.name!r}, {self.cron_schedule!r}, {self.execution_timezone})"


def schedule(
    cron_schedule: str,
    *,
    name: str | None = None,
    job: Any = None,
    target: Any = None,
    job_name: str | None = None,
    execution_timezone: str | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
    max_catchup_ticks: int = 1,
) -> Callable[[Callable[..., Any]], ScheduleDefinition]:
    """Decorate ``fn(context)`` returning RunRequest(s), SkipReason or None."""

    def build(fn: Callable[..., Any]) -> ScheduleDefinition:
        return ScheduleDefinition(
            name=name or fn.__name__,
            cron_schedule=cron_schedule,
            job=job,
            target=target,
            job_name=job_name,
            execution_fn=fn,
            execution_timezone=execution_timezone,
            tags=tags,
            description=description if description is not None else fn.__doc__,
            default_status=default_status,
            max_catchup_ticks=max_catchup_ticks,
        )

    return build
