"""Sensors: user code polled every ``minimum_interval_seconds`` that requests runs and keeps a
cursor; the beat commits the cursor, the tick and the runs in one transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tidegate.definitions.context import Resources
from tidegate.definitions.instance import Instance
from tidegate.definitions.instigator import (
    DefaultSensorStatus,
    Target,
    call_user_code,
    check_name,
    coerce_target,
    invoke_directly,
    resource_params,
)
from tidegate.definitions.run_request import Evaluation, normalize
from tidegate.errors import InvalidDefinitionError, InvalidInvocationError

DEFAULT_MINIMUM_INTERVAL = 30
DEFAULT_TIME_LIMIT = 60.0


class SensorEvaluationContext:
    """What a sensor function sees: its cursor, its previous tick, resources, a logger and
    ``instance`` (runs, materializations, dynamic partitions). Build one for a unit test with
    :func:`build_sensor_context`."""

    def __init__(
        self,
        sensor_name: str | None,
        cursor: str | None,
        last_tick_completion_time: datetime | None,
        last_run_key: str | None,
        resources: Resources,
        log: logging.Logger,
        instance: Instance | None = None,
    ) -> None:
        self.sensor_name = sensor_name
        self.cursor = cursor
        self.last_tick_completion_time = last_tick_completion_time
        self.last_run_key = last_run_key
        self.resources = resources
        self.log = log
        self._instance = instance
        self._new_cursor: str | None = None
        self._cursor_set = False

    @property
    def instance(self) -> Instance:
        """Read runs, materializations and dynamic partitions (``get_runs``, ``get_run_records``,
        ``get_latest_materialization_event``, ``get_dynamic_partitions``, ...)."""
        if self._instance is None:
            raise InvalidInvocationError(
                f"sensor '{self.sensor_name or '?'}': this context has no instance; "
                "pass build_sensor_context(instance=...) (e.g. tidegate.instance_for_test())"
            )
        return self._instance

    @property
    def cursor_updated(self) -> bool:
        return self._cursor_set

    def update_cursor(self, cursor: str | None) -> None:
        """Store ``cursor`` with this tick's runs (committed together, or not at all)."""
        if cursor is not None and not isinstance(cursor, str):
            raise TypeError(f"sensor '{self.sensor_name}': the cursor must be a string, got {type(cursor).__name__}")
        self._new_cursor = cursor
        self._cursor_set = True
        self.cursor = cursor

    def __enter__(self) -> SensorEvaluationContext:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __repr__(self) -> str:
        return f"SensorEvaluationContext(sensor_name={self.sensor_name!r}, cursor={self.cursor!r})"


def build_sensor_context(
    instance: Instance | None = None,
    cursor: str | None = None,
    *,
    resources: Mapping[str, Any] | None = None,
    definitions: Any = None,
    sensor_name: str | None = None,
    last_tick_completion_time: datetime | float | None = None,
    last_run_key: str | None = None,
) -> SensorEvaluationContext:
    """A context to call a sensor with in a unit test: ``my_sensor(build_sensor_context(...))``.
    ``resources`` override those of ``definitions``; a float ``last_tick_completion_time`` is
    POSIX seconds."""
    if cursor is not None and not isinstance(cursor, str):
        raise InvalidInvocationError(f"build_sensor_context: cursor must be a string, got {cursor!r}")
    if isinstance(last_tick_completion_time, int | float):
        last_tick_completion_time = datetime.fromtimestamp(last_tick_completion_time, UTC)
    merged = {**dict(getattr(definitions, "resources", None) or {}), **dict(resources or {})}
    return SensorEvaluationContext(
        sensor_name=sensor_name,
        cursor=cursor,
        last_tick_completion_time=last_tick_completion_time,
        last_run_key=last_run_key,
        resources=Resources(merged),
        log=logging.getLogger(f"tidegate.sensor.{sensor_name or 'test'}"),
        instance=instance,
    )


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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the sensor's function as a unit test does, ``my_sensor(build_sensor_context())``:
        returns what it returned (a generator function's generator), as Dagster does."""
        return invoke_directly(
            self.label,
            self.evaluation_fn,
            self._takes_context,
            self._resource_params,
            args,
            kwargs,
            SensorEvaluationContext,
            build_sensor_context,
        )

    @property
    def job_name(self) -> str | None:
        """The targeted job's name when the sensor targets exactly one job."""
        return self.target.job_name


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
    job_name: str | None = None,
    jobs: Sequence[Any] | None = None,
    asset_selection: Any = None,
    target_required: bool = True,
) -> SensorDefinition:
    sensor_name = check_name("sensor", name or getattr(fn, "__name__", None))
    label = f"sensor '{sensor_name}'"
    resolved = coerce_target(
        label, job, target, job_name=job_name, jobs=jobs, asset_selection=asset_selection, required=target_required
    )
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
    jobs: Sequence[Any] | None = None,
    job_name: str | None = None,
    asset_selection: Any = None,
    name: str | None = None,
    minimum_interval_seconds: float = DEFAULT_MINIMUM_INTERVAL,
    time_limit_seconds: float = DEFAULT_TIME_LIMIT,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], SensorDefinition]:
    """Decorate ``fn(context)`` returning/yielding RunRequest, SkipReason or SensorResult.

    Give at most one of ``target`` (a job or an asset selection), ``job``, ``jobs`` (several
    jobs: each RunRequest then names one with ``job_name``), ``job_name`` or
    ``asset_selection``; with none, the sensor may not request runs."""

    def build(fn: Callable[..., Any]) -> SensorDefinition:
        return make_sensor(
            fn,
            name=name,
            job=job,
            target=target,
            jobs=jobs,
            job_name=job_name,
            asset_selection=asset_selection,
            target_required=False,
            minimum_interval_seconds=minimum_interval_seconds,
            time_limit_seconds=time_limit_seconds,
            default_status=default_status,
            description=description,
        )

    return build
