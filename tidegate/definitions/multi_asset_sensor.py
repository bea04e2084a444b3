"""``@multi_asset_sensor``: one function watching several assets, with a cursor per asset.

The function gets a :class:`MultiAssetSensorEvaluationContext` (Dagster's methods:
``latest_materialization_records_by_key()``, ``materialization_records_for_key(key, limit)``,
``latest_materialization_records_by_partition(key)``, ``advance_cursor({key: record})``,
``advance_all_cursors()``) and returns RunRequest / SkipReason / SensorResult. Every read in
one tick stops at the same horizon of the event log (read once, see
:mod:`tidegate.storage.events`), so what a tick saw and what it consumed agree.

The cursor is JSON, ``{"asset_key": storage id of the last consumed materialization}`` (an
asset absent: nothing consumed yet), shown and set with ``tidegate sensor cursor``. Unlike
Dagster, cursor advances are kept when the function returns a SensorResult (without its own
cursor); they are committed with the tick's runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tidegate.definitions.asset import AssetsDefinition
from tidegate.definitions.event_sensor import (
    EventSensorDefinition,
    SensorLag,
    UserFunction,
    subclass_of,
)
from tidegate.definitions.instance import EventLogRecord, Instance
from tidegate.definitions.instigator import DefaultSensorStatus
from tidegate.definitions.key import AssetKey, CoercibleToAssetKey
from tidegate.definitions.run_request import Evaluation, SensorResult, normalize
from tidegate.definitions.selection import AssetSelection
from tidegate.definitions.sensor import (
    DEFAULT_MINIMUM_INTERVAL,
    DEFAULT_TIME_LIMIT,
    SensorEvaluationContext,
    make_sensor,
)
from tidegate.errors import InstigatorEvaluationError, InvalidDefinitionError, InvalidInvocationError

MATERIALIZATIONS = "materializations"


def parse_cursor(label: str, cursor: str | None, keys: Sequence[AssetKey]) -> dict[AssetKey, int | None]:
    """The per-asset cursor (None: nothing consumed) of a multi-asset sensor's JSON cursor."""
    positions: dict[AssetKey, int | None] = dict.fromkeys(keys)
    if not cursor:
        return positions
    try:
        stored = json.loads(cursor)
    except ValueError:
        stored = None
    if not isinstance(stored, dict) or not all(isinstance(v, int) and v >= 0 for v in stored.values()):
        raise InstigatorEvaluationError(
            f'{label}: cursor {cursor!r} is not a JSON object of storage ids ({{"asset": 12, ...}}); '
            "set or reset it with `tidegate sensor cursor`"
        )
    for name, position in stored.items():
        key = AssetKey.from_user_string(name)
        if key in positions:
            positions[key] = position
    return positions


def dump_cursor(positions: Mapping[AssetKey, int | None]) -> str:
    return json.dumps(
        {k.to_user_string(): v for k, v in sorted(positions.items(), key=lambda kv: kv[0].to_user_string()) if v},
        separators=(",", ":"),
    )


class MultiAssetSensorEvaluationContext(SensorEvaluationContext):
    """What a multi-asset sensor's function sees (Dagster's methods; see the module docstring)."""

    def __init__(self, base: SensorEvaluationContext, label: str, asset_keys: Sequence[AssetKey]) -> None:
        super().__init__(
            sensor_name=base.sensor_name,
            cursor=base.cursor,
            last_tick_completion_time=base.last_tick_completion_time,
            last_run_key=base.last_run_key,
            resources=base.resources,
            log=base.log,
            instance=base._instance,
        )
        self.label = label
        self.asset_keys: list[AssetKey] = list(asset_keys)
        self._positions = parse_cursor(label, base.cursor, self.asset_keys)
        self._upper: int | None = None
        self.advanced = False

    @property
    def upper(self) -> int:
        """The horizon this tick reads up to (read once)."""
        if self._upper is None:
            self._upper = self.instance.event_log_horizon(MATERIALIZATIONS)
        return self._upper

    def _keys(self, asset_keys: Sequence[CoercibleToAssetKey] | None) -> list[AssetKey]:
        if asset_keys is None:
            return self.asset_keys
        keys = [AssetKey.from_coercible(k) for k in asset_keys]
        for key in keys:
            self._check(key)
        return keys

    def _check(self, key: AssetKey) -> None:
        if key not in self._positions:
            raise InvalidInvocationError(
                f"{self.label}: asset '{key.to_user_string()}' is not monitored "
                f"(monitored: {', '.join(k.to_user_string() for k in self.asset_keys)})"
            )

    def latest_materialization_records_by_key(
        self, asset_keys: Sequence[CoercibleToAssetKey] | None = None
    ) -> dict[AssetKey, EventLogRecord | None]:
        """Per monitored asset, its newest materialization after its cursor (None: none)."""
        keys = self._keys(asset_keys)
        found = self.instance.latest_materialization_records({k: self._positions[k] for k in keys}, self.upper)
        return {k: found.get(k) for k in keys}

    def materialization_records_for_key(
        self, asset_key: CoercibleToAssetKey, limit: int | None = None
    ) -> list[EventLogRecord]:
        """The materializations of ``asset_key`` after its cursor, oldest first."""
        key = AssetKey.from_coercible(asset_key)
        self._check(key)
        return list(self.instance.materialization_records({key: self._positions[key]}, self.upper, limit))

    def latest_materialization_records_by_partition(
        self, asset_key: CoercibleToAssetKey, after_cursor_partition: bool = False
    ) -> dict[str, EventLogRecord]:
        """Per partition, the newest materialization of ``asset_key`` after its cursor."""
        latest: dict[str, EventLogRecord] = {}
        for record in self.materialization_records_for_key(asset_key):
            if record.partition_key is not None:
                latest[record.partition_key] = record
        return latest

    def latest_materialization_records_by_partition_and_asset(self) -> dict[str, dict[AssetKey, EventLogRecord]]:
        """partition -> {asset: its newest materialization of that partition after its cursor}."""
        found: dict[str, dict[AssetKey, EventLogRecord]] = {}
        for key in self.asset_keys:
            for partition, record in self.latest_materialization_records_by_partition(key).items():
                found.setdefault(partition, {})[key] = record
        return found

    def advance_cursor(self, materialization_records_by_key: Mapping[AssetKey, EventLogRecord | None]) -> None:
        """Mark each given record, and every earlier materialization of its asset, consumed."""
        for asset_key, record in materialization_records_by_key.items():
            key = AssetKey.from_coercible(asset_key)
            self._check(key)
            if record is None:
                continue
            if not isinstance(record, EventLogRecord):
                raise InvalidInvocationError(f"{self.label}: advance_cursor takes EventLogRecords, got {record!r}")
            self._positions[key] = max(self._positions[key] or 0, record.storage_id)
        self.advanced = True
        self.cursor = dump_cursor(self._positions)

    def advance_all_cursors(self) -> None:
        """Mark every materialization of every monitored asset up to this tick's horizon consumed."""
        self.advance_cursor(self.latest_materialization_records_by_key())

    def __repr__(self) -> str:
        return f"MultiAssetSensorEvaluationContext(sensor_name={self.sensor_name!r}, cursor={self.cursor!r})"


@dataclass(frozen=True, eq=False)
class MultiAssetSensorDefinition(EventSensorDefinition):
    monitored_assets: tuple[AssetKey, ...] = ()
    user_function: UserFunction | None = None

    def evaluate(self, context: SensorEvaluationContext, resources: Mapping[str, Any]) -> Evaluation:
        assert self.user_function is not None
        multi = (
            context
            if isinstance(context, MultiAssetSensorEvaluationContext)
            else MultiAssetSensorEvaluationContext(context, self.label, self.monitored_assets)
        )
        value = self.user_function(multi, None, resources)
        if multi.advanced:
            if isinstance(value, SensorResult) and value.cursor is not None:
                raise InstigatorEvaluationError(
                    f"{self.label}: advanced its cursors and returned a SensorResult with a cursor; do one or the other"
                )
            if multi.cursor_updated:
                raise InstigatorEvaluationError(f"{self.label}: advanced its cursors and called update_cursor()")
            evaluation = normalize(self.label, value, cursor=multi.cursor, cursor_set=True)
        else:
            evaluation = normalize(
                self.label,
                value,
                cursor=multi._new_cursor if multi.cursor_updated else None,
                cursor_set=multi.cursor_updated,
            )
        if evaluation.cursor_set and evaluation.cursor is not None:
            parse_cursor(self.label, evaluation.cursor, self.monitored_assets)  # a bad cursor fails now
        return evaluation

    def check_cursor(self, cursor: str) -> None:
        parse_cursor(self.label, cursor, self.monitored_assets)

    def beginning_cursor(self) -> str | None:
        return None  # no per-asset cursor: every materialization is unconsumed

    def lag(self, instance: Instance, cursor: str | None, now: float) -> SensorLag:
        positions = parse_cursor(self.label, cursor, self.monitored_assets)
        count, oldest = instance.count_materialization_records(positions)
        return SensorLag(count, now - oldest if oldest is not None else None)


def monitored_keys(label: str, monitored_assets: Any) -> tuple[AssetKey, ...]:
    """The asset keys of ``monitored_assets``: keys, names, assets or ``AssetSelection.keys()``."""
    if isinstance(monitored_assets, AssetSelection):
        selected = getattr(monitored_assets, "selected", None)
        if selected is None:
            raise InvalidDefinitionError(
                f"{label}: monitored_assets must name its assets (a list, or AssetSelection.keys()/assets()), "
                f"got {monitored_assets!r}"
            )
        return tuple(selected)
    if isinstance(monitored_assets, str) or not isinstance(monitored_assets, Sequence) or not monitored_assets:
        raise InvalidDefinitionError(f"{label}: monitored_assets must be a non-empty list of assets")
    keys: list[AssetKey] = []
    for item in monitored_assets:
        try:
            key = item.key if isinstance(item, AssetsDefinition) else AssetKey.from_coercible(item)
        except Exception as exc:
            raise InvalidDefinitionError(f"{label}: monitored_assets holds {item!r} ({exc})") from None
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def multi_asset_sensor(
    monitored_assets: Any,
    *,
    target: Any = None,
    job: Any = None,
    jobs: Any = None,
    job_name: str | None = None,
    request_assets: Any = None,
    name: str | None = None,
    minimum_interval_seconds: float = DEFAULT_MINIMUM_INTERVAL,
    time_limit_seconds: float = DEFAULT_TIME_LIMIT,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    description: str | None = None,
) -> Callable[[Callable[..., Any]], MultiAssetSensorDefinition]:
    """Decorate ``fn(context)`` watching ``monitored_assets`` (see the module docstring)."""

    def build(fn: Callable[..., Any]) -> MultiAssetSensorDefinition:
        base = make_sensor(
            fn,
            name=name,
            job=job,
            target=target,
            jobs=jobs,
            job_name=job_name,
            asset_selection=request_assets,
            minimum_interval_seconds=minimum_interval_seconds,
            time_limit_seconds=time_limit_seconds,
            default_status=default_status,
            description=description,
            target_required=False,
        )
        keys = monitored_keys(base.label, monitored_assets)
        user = UserFunction.inspect(base.label, fn, event_param=False)
        return subclass_of(base, MultiAssetSensorDefinition, user, monitored_assets=keys, user_function=user)

    return build
