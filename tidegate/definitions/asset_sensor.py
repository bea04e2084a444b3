"""``@asset_sensor``: a run (or a skip) per materialization of one asset, each exactly once.

The function is called as in Dagster, ``fn(context, asset_event)`` with an
:class:`EventLogEntry`, and returns RunRequest / SkipReason / SensorResult. Unlike Dagster,
which hands over only the newest of several materializations made between two ticks, it is
called once per materialization, in order (``latest_only=True``: Dagster's behaviour, once per
tick with the newest). Materializations reported from outside a run (``tidegate assets
report``) count like any other. The cursor is the storage id of the last materialization
handled, committed with the tick's runs (see :mod:`tidegate.definitions.event_sensor`).

First start (no cursor): as in Dagster, the newest existing materialization is handled, then
every later one; ``tidegate sensor start NAME --from-beginning`` handles the whole history.
During a call, ``context.cursor`` is the cursor before this event, as in Dagster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.definitions.event_sensor import (
    BATCH_SIZE,
    Budget,
    EventSensorDefinition,
    Outcome,
    SensorLag,
    UserFunction,
    check_cursor_untouched,
    int_cursor,
    subclass_of,
)
from tidegate.definitions.instance import EventRecordsFilter, Instance
from tidegate.definitions.instigator import DefaultSensorStatus
from tidegate.definitions.key import AssetKey, CoercibleToAssetKey
from tidegate.definitions.run_request import Evaluation
from tidegate.definitions.sensor import (
    DEFAULT_MINIMUM_INTERVAL,
    DEFAULT_TIME_LIMIT,
    SensorEvaluationContext,
    make_sensor,
)
from tidegate.errors import InvalidDefinitionError
from tidegate.names import EventType

MATERIALIZATIONS = "materializations"


@dataclass(frozen=True, eq=False)
class AssetSensorDefinition(EventSensorDefinition):
    asset_key: AssetKey = None  # type: ignore[assignment]  # always given by asset_sensor()
    latest_only: bool = False
    user_function: UserFunction | None = None

    def evaluate(self, context: SensorEvaluationContext, resources: Mapping[str, Any]) -> Evaluation:
        assert self.user_function is not None
        instance = context.instance
        upper = instance.event_log_horizon(MATERIALIZATIONS)
        cursor = int_cursor(self.label, context.cursor)
        outcome = Outcome(self.label)
        idle = f"no new materialization of {self.asset_key.to_user_string()}"
        if cursor is None or self.latest_only:  # Dagster: the newest one only
            records = instance.get_event_records(self._filter(cursor, upper), limit=1, ascending=False)
            if not records:
                return outcome.evaluation(str(cursor or 0), backlog=False, idle_reason=idle)
            self._call(context, records[0], outcome, resources)
            return outcome.evaluation(str(records[0].storage_id), backlog=False, idle_reason=idle)
        budget = Budget(self.time_limit_seconds)
        while True:
            records = instance.get_event_records(self._filter(cursor, upper), limit=BATCH_SIZE, ascending=True)
            for record in records:
                self._call(context, record, outcome, resources)
                cursor = record.storage_id
                if outcome.full or budget.spent():
                    backlog = record is not records[-1] or len(records) == BATCH_SIZE
                    return outcome.evaluation(str(cursor), backlog=backlog, idle_reason=idle)
            if len(records) < BATCH_SIZE:
                return outcome.evaluation(str(cursor), backlog=False, idle_reason=idle)

    def _filter(self, cursor: int | None, upper: int) -> EventRecordsFilter:
        return EventRecordsFilter(
            event_type=EventType.ASSET_MATERIALIZATION,
            asset_key=self.asset_key,
            after_cursor=cursor,
            before_cursor=upper + 1,
        )

    def _call(
        self, context: SensorEvaluationContext, record: Any, outcome: Outcome, resources: Mapping[str, Any]
    ) -> None:
        assert self.user_function is not None
        outcome.add(self.user_function(context, record.event_log_entry, resources))
        check_cursor_untouched(self.label, context)
        context.cursor = str(record.storage_id)  # the next call sees this one as the previous cursor

    def lag(self, instance: Instance, cursor: str | None, now: float) -> SensorLag:
        after = int_cursor(self.label, cursor)
        records_filter = EventRecordsFilter(
            event_type=EventType.ASSET_MATERIALIZATION, asset_key=self.asset_key, after_cursor=after or 0
        )
        count, oldest = instance.count_event_records(records_filter)
        return SensorLag(count, now - oldest if oldest is not None else None)


def asset_sensor(
    asset_key: CoercibleToAssetKey,
    *,
    target: Any = None,
    job: Any = None,
    jobs: Any = None,
    job_name: str | None = None,
    name: str | None = None,
    minimum_interval_seconds: float = DEFAULT_MINIMUM_INTERVAL,
    time_limit_seconds: float = DEFAULT_TIME_LIMIT,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    description: str | None = None,
    latest_only: bool = False,
) -> Callable[[Callable[..., Any]], AssetSensorDefinition]:
    """Decorate ``fn(context, asset_event)``, called once per new materialization of
    ``asset_key`` (``latest_only=True``: once per tick, with the newest)."""
    try:
        key = AssetKey.from_coercible(asset_key)
    except Exception as exc:
        raise InvalidDefinitionError(f"asset_sensor: invalid asset_key {asset_key!r} ({exc})") from None
    if not isinstance(latest_only, bool):
        raise InvalidDefinitionError(f"asset_sensor on '{key}': latest_only must be True or False")

    def build(fn: Callable[..., Any]) -> AssetSensorDefinition:
        base = make_sensor(
            fn,
            name=name,
            job=job,
            target=target,
            jobs=jobs,
            job_name=job_name,
            minimum_interval_seconds=minimum_interval_seconds,
            time_limit_seconds=time_limit_seconds,
            default_status=default_status,
            description=description,
            target_required=False,
        )
        user = UserFunction.inspect(base.label, fn, event_param=True)
        return subclass_of(
            base, AssetSensorDefinition, user, asset_key=key, latest_only=latest_only, user_function=user
        )

    return build
