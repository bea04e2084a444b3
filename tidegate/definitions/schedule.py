"""Schedules: run a job at the ticks of a cron expression in a timezone."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tidegate.definitions.context import Resources
from tidegate.definitions.cron import validate_cron, validate_timezone
from tidegate.definitions.instigator import (
    DefaultScheduleStatus,
    Target,
    call_user_code,
    check_name,
    check_tags,
    coerce_target,
    resource_params,
)
from tidegate.definitions.run_request import Evaluation, RunRequest, normalize
from tidegate.errors import InvalidDefinitionError


@dataclass
class ScheduleEvaluationContext:
    scheduled_execution_time: datetime  # aware, in the schedule's timezone
    schedule_name: str
    resources: Resources
    log: logging.Logger


class ScheduleDefinition:
    """Request a run of ``target`` at every tick of ``cron_schedule`` in ``execution_timezone``.

    Without ``execution_fn`` each tick requests one run. Missed ticks (no beat was running)
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
        execution_fn: Callable[..., Any] | None = None,
        execution_timezone: str | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
        default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
        max_catchup_ticks: int = 1,
    ) -> None:
        provisional = name or getattr(execution_fn, "__name__", None)
        label = f"schedule {provisional!r}"
        self.target: Target = coerce_target(label, job, target)
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
            return Evaluation((RunRequest(tags=dict(self.tags)),), None, None, False)
        value = call_user_code(self.execution_fn, context, self._takes_context, self._resource_params, resources)
        return normalize(self.label, value)

    def __repr__(self) -> str:
        return f"ScheduleDefinition({self.name!r}, {self.cron_schedule!r}, {self.execution_timezone})"


def schedule(
    cron_schedule: str,
    *,
    name: str | None = None,
    job: Any = None,
    target: Any = None,
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
            execution_fn=fn,
            execution_timezone=execution_timezone,
            tags=tags,
            description=description if description is not None else fn.__doc__,
            default_status=default_status,
            max_catchup_ticks=max_catchup_ticks,
        )

    return build
