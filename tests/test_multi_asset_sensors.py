"""Multi-asset sensors on real storage (SQLite and PostgreSQL), stepped by the beat: a JSON
cursor per asset, advances kept when a SensorResult is returned, Dagster's context methods."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

import tidegate as tg
from tests.test_beat import RUNNING, T0, Harness
from tidegate.names import SENSOR_TAG, TickStatus
from tidegate.storage.api import Storage


@tg.asset
def asset_a() -> int:
    return 1


@tg.asset
def asset_b() -> int:
    return 2


@tg.asset
def asset_c() -> int:
    return 3


C_JOB = tg.define_asset_job("asset_c_job", [asset_c])


def _defs(sensor: tg.SensorDefinition) -> tg.Definitions:
    return tg.Definitions(assets=[asset_a, asset_b, asset_c], jobs=[C_JOB], sensors=[sensor])


def _runs(storage: Storage, name: str) -> list[Any]:
    runs = [r for r in storage.list_runs(limit=1000) if r.tags.get(SENSOR_TAG) == name]
    return sorted(runs, key=lambda r: (r.created_at, r.run_id))


@tg.multi_asset_sensor(monitored_assets=[tg.AssetKey("asset_a"), asset_b], job=C_JOB, default_status=RUNNING)
def both_updated(context: tg.MultiAssetSensorEvaluationContext) -> tg.SensorResult | None:
    events = context.latest_materialization_records_by_key()
    if all(events.values()):
        context.advance_all_cursors()
        pair = ",".join(str(events[k].storage_id) for k in context.asset_keys)  # type: ignore[union-attr]
        return tg.SensorResult(run_requests=[tg.RunRequest(run_key=pair)])
    return None


def test_fires_once_per_pair_and_keeps_advances_made_before_returning_a_sensor_result(storage: Storage) -> None:
    h = Harness(_defs(both_updated), storage, T0)
    h.at(T0)
    a1 = storage.report_materialization("asset_a").id
    h.at(T0 + timedelta(seconds=30))
    assert _runs(storage, "both_updated") == []
    b1 = storage.report_materialization("asset_b").id
    a2 = storage.report_materialization("asset_a").id
    h.at(T0 + timedelta(seconds=60))
    assert [r.run_key for r in _runs(storage, "both_updated")] == [f"{a2},{b1}"]
    cursor = storage.get_instigator("both_updated").cursor
    assert json.loads(cursor) == {"asset_a": a2, "asset_b": b1}  # the advance survived the SensorResult
    assert a1 < a2
    h.at(T0 + timedelta(seconds=90))  # nothing new: no second run
    storage.report_materialization("asset_a")
    h.at(T0 + timedelta(seconds=120))  # only one of the two
    b2 = storage.report_materialization("asset_b").id
    h.at(T0 + timedelta(seconds=150))
    runs = _runs(storage, "both_updated")
    assert len(runs) == 2 and runs[1].run_key.endswith(f",{b2}")
    assert storage.get_ticks("both_updated", limit=1)[0].status == TickStatus.SUCCESS


def test_records_by_key_for_key_and_by_partition(storage: Storage) -> None:
    seen: dict[str, Any] = {}

    @tg.multi_asset_sensor(monitored_assets=tg.AssetSelection.keys("asset_a", "asset_b"), default_status=RUNNING)
    def inspect_records(context: tg.MultiAssetSensorEvaluationContext) -> tg.SkipReason:
        seen["for_a"] = [r.partition_key for r in context.materialization_records_for_key("asset_a")]
        seen["first_two"] = [r.partition_key for r in context.materialization_records_for_key("asset_a", limit=2)]
        seen["by_partition"] = {
            p: r.storage_id for p, r in context.latest_materialization_records_by_partition("asset_a").items()
        }
        seen["latest"] = {
            k.to_user_string(): (r.partition_key if r else None)
            for k, r in context.latest_materialization_records_by_key().items()
        }
        context.advance_cursor({tg.AssetKey("asset_a"): context.materialization_records_for_key("asset_a")[1]})
        with pytest.raises(tg.InvalidInvocationError, match="'asset_c' is not monitored"):
            context.materialization_records_for_key("asset_c")
        return tg.SkipReason("looked")

    h = Harness(_defs(inspect_records), storage, T0)
    ids = [storage.report_materialization("asset_a", partition_key=p).id for p in ("x", "y", "x")]
    h.at(T0)
    assert seen["for_a"] == ["x", "y", "x"] and seen["first_two"] == ["x", "y"]
    assert seen["by_partition"] == {"x": ids[2], "y": ids[1]}
    assert seen["latest"] == {"asset_a": "x", "asset_b": None}
    assert json.loads(storage.get_instigator("inspect_records").cursor) == {"asset_a": ids[1]}
    h.at(T0 + timedelta(seconds=30))
    assert seen["for_a"] == ["x"]  # only what is after the advanced cursor


def test_a_cursor_that_is_not_json_fails_the_tick_with_the_fix(storage: Storage) -> None:
    h = Harness(_defs(both_updated), storage, T0)
    storage.set_cursor("both_updated", "sensor", "12")
    h.at(T0)
    tick = storage.get_ticks("both_updated", limit=1)[0]
    assert tick.status == TickStatus.FAILURE and "is not a JSON object of storage ids" in (tick.error or "")


def test_monitored_assets_must_name_assets() -> None:
    with pytest.raises(tg.InvalidDefinitionError, match="monitored_assets must name its assets"):

        @tg.multi_asset_sensor(monitored_assets=tg.AssetSelection.groups("sales"))
        def by_group(context: Any) -> None:
            return None
