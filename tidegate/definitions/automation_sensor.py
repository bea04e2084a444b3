"""``AutomationConditionSensorDefinition``: the sensor that evaluates the automation conditions
of the assets it targets, as Dagster's of that name.

It is a sensor like any other for the beat's scheduling (start/stop, interval, ticks,
``tidegate sensor ...``), but it has no user function: each tick, the beat evaluates the
conditions of its target against one snapshot of the event log (see
:mod:`tidegate.scheduler.automation`) and commits the cursor, the tick, the evaluation records
and the runs in one transaction.

When the assets of a Definitions carry conditions that no automation sensor targets, the
Definitions gets ``default_automation_condition_sensor`` covering them, running by default
(Dagster's default automation sensor).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tidegate.definitions.context import Resources
from tidegate.definitions.instigator import DefaultSensorStatus
from tidegate.definitions.key import AssetKey
from tidegate.definitions.limits import check_tags
from tidegate.definitions.run_request import Evaluation
from tidegate.definitions.selection import AssetSelection, coerce_selection
from tidegate.definitions.sensor import DEFAULT_TIME_LIMIT, SensorDefinition, SensorEvaluationContext, make_sensor
from tidegate.errors import InvalidDefinitionError, InvalidInvocationError

DEFAULT_AUTOMATION_SENSOR = "default_automation_condition_sensor"
_LOG = logging.getLogger("tidegate.sensor.automation")


def _evaluated_by_the_beat(context: SensorEvaluationContext) -> None:
    raise InvalidInvocationError(
        f"sensor '{context.sensor_name}': an automation condition sensor is evaluated by the beat; "
        "see `tidegate automation explain ASSET`"
    )


@dataclass(frozen=True, eq=False)
class AutomationConditionSensorDefinition(SensorDefinition):
    """Evaluates the automation conditions of the assets of ``target`` (an AssetSelection)
    every ``minimum_interval_seconds``; ``run_tags`` go on every run it requests."""

    run_tags: Mapping[str, str] = field(default_factory=dict)

    def __init__(
        self,
        name: str,
        *,
        target: Any,
        minimum_interval_seconds: float = 30,
        run_tags: Mapping[str, str] | None = None,
        default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
        description: str | None = None,
        time_limit_seconds: float = DEFAULT_TIME_LIMIT,
    ) -> None:
        label = f"automation condition sensor '{name}'"
        try:
            selection = coerce_selection(target)
        except Exception as exc:
            raise InvalidDefinitionError(f"{label}: target must be an asset selection ({exc})") from None
        base = make_sensor(
            _evaluated_by_the_beat,
            name=name,
            job=None,
            target=selection,
            minimum_interval_seconds=minimum_interval_seconds,
            time_limit_seconds=time_limit_seconds,
            default_status=default_status,
            description=description or f"evaluates the automation conditions of {selection!r}",
        )
        tags = dict(run_tags or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise InvalidDefinitionError(f"{label}: run_tags must map strings to strings")
        check_tags(label, tags)
        for f in base.__dataclass_fields__:
            object.__setattr__(self, f, getattr(base, f))
        object.__setattr__(self, "run_tags", tags)

    @property
    def label(self) -> str:
        return f"automation condition sensor '{self.name}'"

    @property
    def selection(self) -> AssetSelection:
        assert self.target.selection is not None
        return self.target.selection

    def evaluate(self, context: SensorEvaluationContext, resources: Mapping[str, Any]) -> Evaluation:
        _evaluated_by_the_beat(context)
        raise AssertionError  # unreachable

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _evaluated_by_the_beat(SensorEvaluationContext(self.name, None, None, None, Resources({}), _LOG))


def default_automation_condition_sensor(keys: Iterable[AssetKey]) -> AutomationConditionSensorDefinition:
    """The sensor a Definitions gets for the assets with conditions that no automation sensor
    targets: running by default, every 30 seconds."""
    return AutomationConditionSensorDefinition(
        DEFAULT_AUTOMATION_SENSOR,
        target=AssetSelection.assets(*sorted(keys)),
        default_status=DefaultSensorStatus.RUNNING,
        description="the default automation condition sensor: assets with a condition no other sensor targets",
    )
