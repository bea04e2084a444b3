"""Sensors: user code polled every ``minimum_interval_seconds`` that requests runs and keeps a
cursor; the beat commits the cursor, the tick and the runs in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tidegate.definitions.context import Resources
from tidegate.definitions.instigator import (
    DefaultSensorStatus,
    Target,
    call_user_code,
    check_name,
    coerce_target,
    resource_params,
)
from tidegate.definitions.run_request import Evaluation, normalize
from tidegate.errors import InvalidDefinitionError

DEFAULT_MINIMUM_INTERVAL = 30
DEFAULT_TIME_LIMIT = 60.0


@dataclass
class SensorEvaluationContext:
    sensor_name: str
    cursor: str | None
    last_tick_completion_time: datetime | None
    last_run_key: str | None
    resources: Resources
    log: logging.Logger
    _new_cursor: str | None = field(default=None, repr=False)
    _cursor_set: bool = field(default=False, repr=False)

    def update_cursor(self, cursor: str | None) -> None:
        """Store ``cursor`` with this tick's runs (committed together, or not at all)."""
        if cursor is not None and not isinstance(cursor, str):
            raise TypeError(f"sensor '{self.sensor_name}': the cursor must be a string, got {type(cursor).__name__}")
        self._new_cursor = cursor
        self._cursor_set = True
        self.cursor = cursor


@dataclass(frozen=True, eq=False)
class SensorDefinition:
    name: str
    evaluation_fn: Callable[..., Any]
    target: Target
    minimum_interval_seconds: float = DEFAULT_MINIMUM_INTERVAL
    time_limit_seconds: float = DEFAULT_TIME_LIMIT
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED
    description: str | None = None
    _takes_context: bool = True
    _resource_params: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"sensor '{self.name}'"

    @property
    def resource_keys(self) -> tuple[str, ...]:
        return self._resource_params

    def evaluate(self, context: SensorEvaluationContext, resources: Mapping[str, Any]) -> Evaluation:
        value = call_user_code(self.evaluation_fn, context, self._takes_context, self._resource_params, resources)
        return normalize(
            self.label,
            value,
            cursor=context._new_cursor if context._cursor_set else None,
            cursor_set=context._cursor_set,
        )


def make_sensor(
    fn: Callable[..., Any],
    *,
    name: str | None,
    job: Any,
    target: Any,
    minimum_interval_seconds: float,
    time_limit_seconds: float,
    default_status: DefaultSensorStatus,
    description: str | None,
) -> SensorDefinition:
    sensor_name = check_name("sensor", name or getattr(fn, "__name__", None))
    label = f"sensor '{sensor_name}'"
    resolved = coerce_target(label, job, target)
    if not isinstance(minimum_interval_seconds, int | float) or minimum_interval_seconds <= 0:
        raise InvalidDefinitionError(f"{label}: minimum_interval_seconds must be > 0, got {minimum_interval_seconds!r}")
    if not isinstance(time_limit_seconds, int | float) or time_limit_seconds <= 0:
        raise InvalidDefinitionError(f"{label}: time_limit_seconds must be > 0, got {time_limit_seconds!r}")
    if not isinstance(default_status, DefaultSensorStatus):
        raise InvalidDefinitionError(f"{label}: default_status must be a DefaultSensorStatus")
    takes_context, params = resource_params(label, fn)
    return SensorDefinition(
        name=sensor_name,
        evaluation_fn=fn,
        target=resolved,
        minimum_interval_seconds=float(minimum_interval_seconds),
        time_limit_seconds=float(time_limit_seconds),
        default_status=default_status,
        description=description if description is not None else fn.__doc__,
        _takes_context=takes_context,
        _resource_params=params,
    )


def sensor(
    target: Any = None,
    *,
    job: Any = None,
    name: str | None = None,
    minimum_interval_seconds: float = DEFAULT_MINIMUM_INTERVAL,
    time_limit_seconds: float = DEFAULT_TIME_LIMIT,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], SensorDefinition]:
    """Decorate ``fn(context)`` returning/yielding RunRequest, SkipReason or SensorResult."""

    def build(fn: Callable[..., Any]) -> SensorDefinition:
        return make_sensor(
            fn,
            name=name,
            job=job,
            target=target,
            minimum_interval_seconds=minimum_interval_seconds,
            time_limit_seconds=time_limit_seconds,
            default_status=default_status,
            description=description,
        )

    return build
