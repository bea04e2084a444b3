"""``@run_status_sensor`` and ``@run_failure_sensor``: user code called once per run that
reached a status, each exactly once.

The cursor is the storage id of the last run-status event handled (``RUN_<status>`` in the
event log). A tick reads events after it up to the log's horizon in batches, calls the
function per event whose run belongs to ``monitored_jobs`` (None: every job), and the beat
commits the cursor with the requested runs; a backlog (say the beat was down) is worked
through tick after tick with no pause between them (see :mod:`tidegate.definitions.event_sensor`),
unlike Dagster, which handles at most a few events per tick and falls behind.

First start (no cursor): the sensor begins at "now", the horizon, without replaying history;
``tidegate sensor start NAME --from-beginning`` (cursor 0) replays every event kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tidegate.definitions.context import Resources
from tidegate.definitions.event_sensor import (
    BATCH_SIZE,
    Budget,
    EventSensorDefinition,
    Outcome,
    SensorLag,
    UserFunction,
    check_cursor_untouched,
    int_cursor,
    monitored_names,
    subclass_of,
)
from tidegate.definitions.instance import (
    DagsterEvent,
    DagsterRun,
    EventLogRecord,
    EventRecordsFilter,
    EventSpecificData,
    Instance,
    RunsFilter,
)
from tidegate.definitions.instigator import DefaultSensorStatus
from tidegate.definitions.run_request import Evaluation
from tidegate.definitions.sensor import (
    DEFAULT_MINIMUM_INTERVAL,
    DEFAULT_TIME_LIMIT,
    SensorEvaluationContext,
    make_sensor,
)
from tidegate.errors import InvalidDefinitionError, InvalidInvocationError
from tidegate.names import PARTITION_TAG, EventType, RunStatus

EVENTS = "events"


class RunStatusSensorContext:
    """What a run-status sensor's function sees: the run (``dagster_run``, also ``run``), the
    status event, ``instance``, ``log``, ``resources`` and the run's ``partition_key``."""

    def __init__(
        self,
        sensor_name: str,
        dagster_run: DagsterRun,
        dagster_event: DagsterEvent,
        instance: Instance,
        log: logging.Logger | None = None,
        resources: Resources | None = None,
    ) -> None:
        self.sensor_name = sensor_name
        self.dagster_run = dagster_run
        self.dagster_event = dagster_event
        self.instance = instance
        self.log = log or logging.getLogger(f"tidegate.sensor.{sensor_name}")
        self.resources = resources or Resources({})

    @property
    def run(self) -> DagsterRun:
        return self.dagster_run

    @property
    def partition_key(self) -> str | None:
        return self.dagster_run.tags.get(PARTITION_TAG)

    def for_run_failure(self) -> RunFailureSensorContext:
        return RunFailureSensorContext(
            self.sensor_name, self.dagster_run, self.dagster_event, self.instance, self.log, self.resources
        )

    def __enter__(self) -> RunStatusSensorContext:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class RunFailureSensorContext(RunStatusSensorContext):
    """A run-status context for a failed run: ``failure_event`` holds the error."""

    @property
    def failure_event(self) -> DagsterEvent:
        return self.dagster_event

    def get_step_failure_events(self) -> list[DagsterEvent]:
        """The STEP_FAILURE event of each failed step (``event_specific_data.error`` holds the traceback)."""
        records = self.instance.get_records_for_run(self.dagster_run.run_id, of_type=EventType.STEP_FAILURE).records
        return [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event is not None]


def build_run_status_sensor_context(
    sensor_name: str,
    dagster_event: DagsterEvent,
    dagster_instance: Instance,
    dagster_run: DagsterRun,
    context: SensorEvaluationContext | None = None,
    resources: Mapping[str, Any] | None = None,
) -> RunStatusSensorContext:
    """A context to call a run-status sensor with in a unit test (Dagster's signature)."""
    return RunStatusSensorContext(
        sensor_name,
        dagster_run,
        dagster_event,
        dagster_instance,
        context.log if context is not None else None,
        Resources(dict(resources or {})),
    )


def _failure_event(record: EventLogRecord, run: DagsterRun, steps: Sequence[EventLogRecord]) -> DagsterEvent:
    """The RUN_FAILURE event with a message naming the failed steps and the first one's error."""
    event = record.event_log_entry.dagster_event
    assert event is not None
    failed = [s.event_log_entry.step_key for s in steps]
    message = event.message or f'Execution of run for "{run.job_name}" failed. Steps failed: {failed}.'
    first = steps[0].event_log_entry.dagster_event if steps else None
    error = first.event_specific_data.error if first and first.event_specific_data else None
    if error is not None and event.message is None:
        message += f" {error.message}"
    return DagsterEvent(
        event_type_value=event.event_type_value,
        job_name=run.job_name,
        step_key=None,
        asset_key=None,
        partition=run.tags.get(PARTITION_TAG),
        message=message,
        event_specific_data=EventSpecificData(error=error),
        run_id=run.run_id,
    )


@dataclass(frozen=True, eq=False)
class RunStatusSensorDefinition(EventSensorDefinition):
    run_status: RunStatus = RunStatus.SUCCESS
    monitored_jobs: frozenset[str] | None = None
    user_function: UserFunction | None = None

    @property
    def event_type(self) -> EventType:
        return EventType.for_run_status(self.run_status)

    def evaluate(self, context: SensorEvaluationContext, resources: Mapping[str, Any]) -> Evaluation:
        instance = context.instance
        upper = instance.event_log_horizon(EVENTS)
        cursor = int_cursor(self.label, context.cursor)
        outcome = Outcome(self.label)
        if cursor is None:
            start = f"started at event {upper}: earlier run status changes are not replayed (see --from-beginning)"
            return outcome.evaluation(str(upper), backlog=False, idle_reason=start)
        idle = f"no run reached {self.run_status} since event {cursor}"
        budget = Budget(self.time_limit_seconds)
        while True:
            records_filter = EventRecordsFilter(
                event_type=self.event_type, after_cursor=cursor, before_cursor=upper + 1
            )
            records = list(instance.get_event_records(records_filter, limit=BATCH_SIZE, ascending=True))
            runs = (
                {
                    r.dagster_run.run_id: r.dagster_run
                    for r in instance.get_run_records(RunsFilter(run_ids=sorted({r.run_id for r in records})))
                }
                if records
                else {}
            )
            steps = self._step_failures(instance, records)
            for record in records:
                run = runs.get(record.run_id)
                if run is not None and (self.monitored_jobs is None or run.job_name in self.monitored_jobs):
                    self._call(context, record, run, steps.get(record.run_id, []), outcome, resources)
                cursor = record.storage_id
                if outcome.full or budget.spent():
                    backlog = record is not records[-1] or len(records) == BATCH_SIZE
                    return outcome.evaluation(str(cursor), backlog=backlog, idle_reason=idle)
            if len(records) < BATCH_SIZE:
                return outcome.evaluation(str(cursor), backlog=False, idle_reason=idle)

    def _step_failures(self, instance: Instance, records: Sequence[EventLogRecord]) -> Mapping[str, Any]:
        """For failure sensors: the failed steps of the batch's runs, in one query."""
        if self.run_status != RunStatus.FAILURE or not records:
            return {}
        return instance.records_for_runs(sorted({r.run_id for r in records}), EventType.STEP_FAILURE)

    def _call(
        self,
        context: SensorEvaluationContext,
        record: EventLogRecord,
        run: DagsterRun,
        steps: Sequence[EventLogRecord],
        outcome: Outcome,
        resources: Mapping[str, Any],
    ) -> None:
        assert self.user_function is not None
        event = record.event_log_entry.dagster_event
        assert event is not None
        if self.run_status == RunStatus.FAILURE:
            event = _failure_event(record, run, steps)
        cls = RunFailureSensorContext if self.run_status == RunStatus.FAILURE else RunStatusSensorContext
        status_context = cls(self.name, run, event, context.instance, context.log, context.resources)
        outcome.add(self.user_function(status_context, None, resources))
        check_cursor_untouched(self.label, context)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """As Dagster's direct invocation: with a context from ``build_run_status_sensor_context``,
        call the function and return what it returned; with a SensorEvaluationContext,
        evaluate a tick (see EventSensorDefinition)."""
        context = args[0] if args else kwargs.get("context")
        if isinstance(context, RunStatusSensorContext):
            assert self.user_function is not None
            if self.run_status == RunStatus.FAILURE and not isinstance(context, RunFailureSensorContext):
                context = context.for_run_failure()
            resources = {**context.resources.as_dict(), **{k: v for k, v in kwargs.items() if k != "context"}}
            return self.user_function(context, None, resources)
        return super().__call__(*args, **kwargs)

    def lag(self, instance: Instance, cursor: str | None, now: float) -> SensorLag:
        after = int_cursor(self.label, cursor)
        if after is None:
            return SensorLag(0, None)  # not started yet: it will begin at "now"
        count, oldest = instance.count_event_records(EventRecordsFilter(event_type=self.event_type, after_cursor=after))
        return SensorLag(count, now - oldest if oldest is not None else None)


def run_status_sensor(
    run_status: RunStatus | str,
    *,
    monitored_jobs: Sequence[Any] | None = None,
    request_job: Any = None,
    request_jobs: Sequence[Any] | None = None,
    name: str | None = None,
    minimum_interval_seconds: float = DEFAULT_MINIMUM_INTERVAL,
    time_limit_seconds: float = DEFAULT_TIME_LIMIT,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], RunStatusSensorDefinition]:
    """Decorate ``fn(context: RunStatusSensorContext)``, called once per run of
    ``monitored_jobs`` (None: every job) that reached ``run_status``; a RunRequest it returns
    launches ``request_job`` (one of ``request_jobs``: name it with ``job_name``)."""
    try:
        status = RunStatus(str(run_status))
    except ValueError:
        raise InvalidDefinitionError(
            f"run_status_sensor: unknown run_status {run_status!r} (one of {', '.join(s.value for s in RunStatus)})"
        ) from None

    def build(fn: Callable[..., Any]) -> RunStatusSensorDefinition:
        base = make_sensor(
            fn,
            name=name,
            job=request_job,
            target=None,
            jobs=request_jobs,
            minimum_interval_seconds=minimum_interval_seconds,
            time_limit_seconds=time_limit_seconds,
            default_status=default_status,
            description=description,
            target_required=False,
        )
        user = UserFunction.inspect(base.label, fn, event_param=False)
        jobs = monitored_names(base.label, monitored_jobs)
        return subclass_of(
            base, RunStatusSensorDefinition, user, run_status=status, monitored_jobs=jobs, user_function=user
        )

    return build


def run_failure_sensor(
    name: Callable[..., Any] | str | None = None,
    *,
    monitored_jobs: Sequence[Any] | None = None,
    request_job: Any = None,
    request_jobs: Sequence[Any] | None = None,
    minimum_interval_seconds: float = DEFAULT_MINIMUM_INTERVAL,
    time_limit_seconds: float = DEFAULT_TIME_LIMIT,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    description: str | None = None,
) -> Any:
    """``run_status_sensor(FAILURE)`` whose function gets a :class:`RunFailureSensorContext`;
    usable bare (``@run_failure_sensor``) as in Dagster."""
    if callable(name):
        return run_failure_sensor()(name)
    if name is not None and not isinstance(name, str):
        raise InvalidInvocationError(f"run_failure_sensor: name must be a string, got {name!r}")
    return run_status_sensor(
        RunStatus.FAILURE,
        monitored_jobs=monitored_jobs,
        request_job=request_job,
        request_jobs=request_jobs,
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        time_limit_seconds=time_limit_seconds,
        default_status=default_status,
        description=description,
    )
