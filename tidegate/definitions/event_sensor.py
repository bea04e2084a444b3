"""What asset sensors and run-status sensors share: a cursor that is a storage id of the event
log, a tick that reads events after it up to the log's horizon (the id below which every
event has committed, read once per tick), user code called per event, and a backlog worked
through in bounded batches.

A tick handles events in batches of ``BATCH_SIZE`` until it reaches the horizon, its time
budget (half the sensor's time limit) is spent or it has ``MAX_REQUESTS_PER_TICK`` run
requests; the beat commits the cursor (the last event handled), the tick and the runs in one
transaction, and when events are left (``Evaluation.backlog``) evaluates the sensor again at
once instead of after ``minimum_interval_seconds``: a sensor never falls behind because of a
per-tick limit, and a crash between ticks replays nothing and loses nothing.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from tidegate.definitions.instance import Instance
from tidegate.definitions.run_request import Evaluation, SensorResult, SkipReason, normalize
from tidegate.definitions.sensor import SensorDefinition, SensorEvaluationContext
from tidegate.errors import InstigatorEvaluationError, InvalidDefinitionError

BATCH_SIZE = 1000  # events read per query
MAX_REQUESTS_PER_TICK = 1000  # run requests committed per tick (one transaction)
TIME_BUDGET_FRACTION = 0.5  # of the sensor's time limit, for reading and calling user code

E = TypeVar("E", bound="EventSensorDefinition")


@dataclass(frozen=True)
class SensorLag:
    """How far behind an event sensor is: events after its cursor and the oldest one's age."""

    events_waiting: int
    oldest_age_seconds: float | None

    def describe(self) -> str:
        if not self.events_waiting:
            return "0"
        age = f", oldest {self.oldest_age_seconds:.0f}s" if self.oldest_age_seconds is not None else ""
        return f"{self.events_waiting}{age}"


@dataclass(frozen=True, eq=False)
class EventSensorDefinition(SensorDefinition):
    """A sensor whose cursor is a position in the event log (see the module docstring)."""

    def lag(self, instance: Instance, cursor: str | None, now: float) -> SensorLag:
        """Events waiting after ``cursor`` and the oldest one's age at ``now`` (POSIX seconds)."""
        raise NotImplementedError

    def check_cursor(self, cursor: str) -> None:
        """Raise InstigatorEvaluationError, naming the sensor, if ``cursor`` is not one it can
        read (before an operator stores it)."""
        int_cursor(self.label, cursor)

    def beginning_cursor(self) -> str | None:
        """The cursor that makes the sensor handle the whole history (``--from-beginning``)."""
        return "0"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate once as a unit test does, ``my_sensor(build_sensor_context(instance=...))``:
        a SensorResult with the run requests, the new cursor and the skip reason."""
        from tidegate.definitions.sensor import build_sensor_context

        context = args[0] if args else kwargs.pop("context", None) or build_sensor_context()
        if not isinstance(context, SensorEvaluationContext):
            raise InstigatorEvaluationError(f"{self.label}: expected a SensorEvaluationContext, got {context!r}")
        evaluation = self.evaluate(context, {**context.resources.as_dict(), **kwargs})
        return SensorResult(
            run_requests=list(evaluation.run_requests),
            cursor=evaluation.cursor,
            skip_reason=evaluation.skip_reason,
            dynamic_partitions_requests=list(evaluation.dynamic_partitions_requests) or None,
        )


def subclass_of(base: SensorDefinition, cls: type[E], user: UserFunction, **extra: Any) -> E:
    """``base`` (built and validated by make_sensor) as an instance of ``cls`` calling ``user``,
    with the fields ``extra``."""
    values: dict[str, Any] = {f.name: getattr(base, f.name) for f in fields(SensorDefinition)}
    values.update(_takes_context=user.takes_context, _resource_params=user.resources)
    return cls(**values, **extra)


class Budget:
    """The time a tick may spend reading events and calling user code."""

    def __init__(self, time_limit_seconds: float) -> None:
        self.deadline = time.monotonic() + time_limit_seconds * TIME_BUDGET_FRACTION

    def spent(self) -> bool:
        return time.monotonic() >= self.deadline


@dataclass
class Outcome:
    """Evaluations of user code (one per event) merged into one tick."""

    label: str
    requests: list[Any] = field(default_factory=list)
    dynamic: list[Any] = field(default_factory=list)
    skip_reason: str | None = None
    hooks: list[Callable[[], None]] = field(default_factory=list)
    handled: int = 0

    def add(self, value: Any) -> None:
        if isinstance(value, SensorResult) and value.cursor is not None:
            raise InstigatorEvaluationError(
                f"{self.label}: returned a SensorResult with a cursor; an event sensor's cursor is the id "
                "of the last event it handled (set it with `tidegate sensor cursor`)"
            )
        evaluation = normalize(self.label, value)
        self.requests += evaluation.run_requests
        self.dynamic += evaluation.dynamic_partitions_requests
        if evaluation.skip_reason is not None:
            self.skip_reason = evaluation.skip_reason
        if evaluation.on_commit is not None:
            self.hooks.append(evaluation.on_commit)
        self.handled += 1

    @property
    def full(self) -> bool:
        return len(self.requests) >= MAX_REQUESTS_PER_TICK

    def evaluation(self, cursor: str | None, *, backlog: bool, idle_reason: str) -> Evaluation:
        skip = None if self.requests else (self.skip_reason or idle_reason)
        hooks = list(self.hooks)

        def on_commit() -> None:
            for hook in hooks:
                hook()

        return Evaluation(
            run_requests=tuple(self.requests),
            skip_reason=skip,
            cursor=cursor,
            cursor_set=True,
            dynamic_partitions_requests=tuple(self.dynamic),
            on_commit=on_commit if hooks else None,
            backlog=backlog,
        )


def check_cursor_untouched(label: str, context: SensorEvaluationContext) -> None:
    if context.cursor_updated:
        raise InstigatorEvaluationError(
            f"{label}: called context.update_cursor(); an event sensor's cursor is the id of the last event "
            "it handled (set it with `tidegate sensor cursor`)"
        )


def int_cursor(label: str, cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        value = int(cursor)
    except ValueError:
        raise InstigatorEvaluationError(
            f"{label}: cursor {cursor!r} is not a storage id (reset it with `tidegate sensor cursor --reset`)"
        ) from None
    if value < 0:
        raise InstigatorEvaluationError(f"{label}: cursor {cursor!r} is negative")
    return value


@dataclass(frozen=True)
class UserFunction:
    """How to call an event sensor's function: the context first (if it takes one), then the
    event (if it takes one), then resources by name."""

    fn: Callable[..., Any]
    takes_context: bool
    takes_event: bool
    resources: tuple[str, ...]

    @classmethod
    def inspect(cls, label: str, fn: Callable[..., Any], *, event_param: bool) -> UserFunction:
        from tidegate.definitions.resource import ConfigurableResource

        if not callable(fn):
            raise InvalidDefinitionError(f"{label}: expected a function, got {fn!r}")
        params = list(inspect.signature(fn).parameters.values())
        for p in params:
            if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise InvalidDefinitionError(f"{label}: *args and **kwargs are not supported")

        def is_resource(p: inspect.Parameter) -> bool:
            annotation = p.annotation
            return isinstance(annotation, type) and issubclass(annotation, ConfigurableResource)

        plain = [p for p in params if not is_resource(p)]
        positional = plain[: 2 if event_param else 1]
        names = tuple(p.name for p in params if p not in positional)
        return cls(fn, len(positional) >= 1, len(positional) >= 2, names)

    def __call__(self, context: Any, event: Any, resources: Mapping[str, Any]) -> Any:
        args: list[Any] = []
        if self.takes_context:
            args.append(context)
        if self.takes_event:
            args.append(event)
        missing = [name for name in self.resources if name not in resources]
        if missing:
            raise InstigatorEvaluationError(f"missing resource '{missing[0]}'")
        value = self.fn(*args, **{name: resources[name] for name in self.resources})
        return list(value) if inspect.isgenerator(value) else value


def skip_text(value: SkipReason | str | None) -> str | None:
    return value.skip_message if isinstance(value, SkipReason) else value


def monitored_names(label: str, jobs: Sequence[Any] | None) -> frozenset[str] | None:
    """Job names from a list of jobs or names (None: every job)."""
    if jobs is None:
        return None
    if isinstance(jobs, str) or not isinstance(jobs, Sequence):
        raise InvalidDefinitionError(f"{label}: monitored_jobs must be a list of jobs, got {jobs!r}")
    names = []
    for job in jobs:
        name = job if isinstance(job, str) else getattr(job, "name", None)
        if not isinstance(name, str):
            raise InvalidDefinitionError(f"{label}: monitored_jobs holds {job!r}, not a job")
        names.append(name)
    return frozenset(names)
