"""Dagster's documented asset-sensor examples (tests/projects/dagster_examples/, each the docs'
file with only ``import dagster as dg`` changed), driven by the beat on SQLite and PostgreSQL.
Dagster's run-status examples are in tests/test_run_status_sensors.py."""

from __future__ import annotations

import importlib.util
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import tidegate as tg
from tests.test_beat import T0, Harness
from tidegate.names import SENSOR_TAG
from tidegate.storage.api import Storage

EXAMPLES = Path(__file__).parent / "projects" / "dagster_examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"dagster_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _sensor_runs(storage: Storage, name: str) -> list[Any]:
    runs = [r for r in storage.list_runs(limit=100) if r.tags.get(SENSOR_TAG) == name]
    return sorted(runs, key=lambda r: (r.created_at, r.run_id))


def _drive(storage: Storage, defs: tg.Definitions, sensor: str, materialize: list[Any]) -> Harness:
    storage.set_instigator_status(sensor, "sensor", "RUNNING", T0)
    h = Harness(defs, storage, T0)
    h.at(T0)
    for _ in range(2):
        tg.materialize(materialize, instance=tg.DagsterInstance(storage))
    h.at(T0 + timedelta(seconds=30))
    return h


def test_simple_asset_sensor(storage: Storage) -> None:
    example = _load("simple_asset_sensor")
    _drive(storage, example.defs, "daily_sales_data_sensor", [example.daily_sales_data])
    runs = _sensor_runs(storage, "daily_sales_data_sensor")
    assert [r.job_name for r in runs] == ["my_job", "my_job"]  # one per materialization


def test_asset_sensor_with_custom_evaluation(storage: Storage) -> None:
    example = _load("asset_sensor_custom_eval")
    defs = tg.Definitions(
        assets=[example.daily_sales_data, example.weekly_report],
        jobs=[example.my_job],
        sensors=[example.daily_sales_data_sensor],
    )
    _drive(storage, defs, "daily_sales_data_sensor", [example.daily_sales_data])
    runs = _sensor_runs(storage, "daily_sales_data_sensor")
    assert len(runs) == 2 and len({r.run_key for r in runs}) == 2


def test_multi_asset_sensor(storage: Storage) -> None:
    example = _load("multi_asset_sensor")
    h = _drive(storage, example.defs, "asset_a_and_b_sensor", [example.asset_a])
    assert _sensor_runs(storage, "asset_a_and_b_sensor") == []
    tg.materialize([example.asset_b], instance=tg.DagsterInstance(storage))
    h.at(T0 + timedelta(seconds=60))
    assert len(_sensor_runs(storage, "asset_a_and_b_sensor")) == 1
