"""Users' unit tests of schedules and sensors, written as for Dagster with the import line
changed: ``build_sensor_context`` / ``build_schedule_context``, calling the definition with
the context (it returns what the function returned: a generator's generator, a RunRequest, a
SensorResult), ``instance_for_test()`` / ``DagsterInstance.ephemeral()`` with
``materialize(..., instance=)``; and the seed's sensor tested that way and then run by the beat."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import tidegate as dg
from tests.test_beat import Harness
from tidegate.names import SENSOR_TAG, InstigatorStatus
from tidegate.storage.api import Storage

SOURCE = Path("/nonexistent")  # the seed sensor's folder; each test points it at its own


@dg.asset
def daily_orders() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 42})


@dg.asset
def report() -> int:
    return 1


report_job = dg.define_asset_job("report_job", selection=[report])


class Warehouse(dg.ConfigurableResource):
    tables: str = "orders,customers"

    def list_tables(self) -> list[str]:
        return self.tables.split(",")


@dg.sensor(job=report_job)
def one_run_per_table(context: dg.SensorEvaluationContext, warehouse: Warehouse) -> Iterator[dg.RunRequest]:
    for table in warehouse.list_tables():
        yield dg.RunRequest(run_key=table, tags={"table": table})


@dg.sensor(job=report_job)
def counting_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    n = int(context.cursor) if context.cursor else 0
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=str(n))], cursor=str(n + 1))


@dg.sensor(job=report_job)
def report_on_new_orders(context: dg.SensorEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    event = context.instance.get_latest_materialization_event(dg.AssetKey("daily_orders"))
    if event is None:
        return dg.SkipReason("daily_orders was never materialized")
    if event.run_id == context.cursor:
        return dg.SkipReason("no new materialization")
    context.update_cursor(event.run_id)
    return dg.RunRequest(run_key=event.run_id, tags={"rows": str(event.asset_materialization.metadata["rows"].value)})


@dg.schedule(job=report_job, cron_schedule="0 6 * * *")
def configurable_job_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    scheduled_date = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=None, tags={"date": scheduled_date})


@dg.sensor(job=report_job)
def no_context_sensor() -> dg.RunRequest:
    return dg.RunRequest(run_key="only")


def test_a_generator_sensor_returns_its_generator_and_takes_resources_from_the_context() -> None:
    context = dg.build_sensor_context(resources={"warehouse": Warehouse()})
    run_requests = list(one_run_per_table(context))
    assert [r.run_key for r in run_requests] == ["orders", "customers"]
    assert run_requests[0].tags == {"table": "orders"}
    direct = one_run_per_table(dg.build_sensor_context(), warehouse=Warehouse(tables="a"))  # keyword resource
    assert [r.run_key for r in direct] == ["a"]
    defs = dg.Definitions(assets=[report], sensors=[one_run_per_table], resources={"warehouse": Warehouse(tables="b")})
    assert [r.run_key for r in one_run_per_table(dg.build_sensor_context(definitions=defs))] == ["b"]


def test_a_sensor_result_and_its_cursor_come_back_as_returned() -> None:
    result = counting_sensor(dg.build_sensor_context(cursor="4"))
    assert isinstance(result, dg.SensorResult)
    assert result.cursor == "5" and [r.run_key for r in result.run_requests or ()] == ["4"]
    assert no_context_sensor().run_key == "only"  # no context parameter: no argument needed
    assert no_context_sensor(dg.build_sensor_context()).run_key == "only"


def test_a_schedule_called_with_build_schedule_context_returns_its_run_request() -> None:
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2020, 1, 1))
    run_request = configurable_job_schedule(context)
    assert isinstance(run_request, dg.RunRequest)
    assert run_request.tags["date"] == "2020-01-01"
    with pytest.raises(dg.InvalidInvocationError, match="no scheduled_execution_time"):
        configurable_job_schedule(dg.build_schedule_context())


def test_a_sensor_reading_the_instance_is_tested_with_instance_for_test() -> None:
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance)
        assert report_on_new_orders(context) == dg.SkipReason("daily_orders was never materialized")
        run_id = dg.materialize([daily_orders], instance=instance).run_id
        request = report_on_new_orders(context)
        assert request == dg.RunRequest(run_key=run_id, tags={"rows": "42"})
        assert context.cursor == run_id  # update_cursor() moved the context's cursor
        assert report_on_new_orders(context) == dg.SkipReason("no new materialization")
        assert [r.run_id for r in instance.get_runs()] == [run_id]
        path = Path(instance.storage.url.removeprefix("sqlite:///"))
        assert path.exists()
    assert not path.exists()  # the throw-away database is gone with the block


def test_an_ephemeral_instance_serves_a_schedule_context() -> None:
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2024, 1, 2, 6))
    assert context.instance.get_runs() == []
    assert list(context.instance.get_dynamic_partitions("files")) == []


def test_direct_calls_with_the_wrong_arguments_raise_typed_errors() -> None:
    with pytest.raises(
        dg.InvalidInvocationError, match="'counting_sensor': its function takes a context; pass build_sensor"
    ):
        counting_sensor()
    with pytest.raises(dg.InvalidInvocationError, match="expected a SensorEvaluationContext"):
        counting_sensor(dg.build_schedule_context())
    with pytest.raises(dg.InvalidInvocationError, match="more than a context"):
        counting_sensor(dg.build_sensor_context(), dg.build_sensor_context())
    with pytest.raises(dg.MissingResourceError, match="sensor 'one_run_per_table': missing resource 'warehouse'"):
        list(one_run_per_table(dg.build_sensor_context()))
    plain = dg.ScheduleDefinition("plain", cron_schedule="0 * * * *", job=report_job)
    with pytest.raises(dg.InvalidInvocationError, match="schedule 'plain': has no schedule function"):
        plain(dg.build_schedule_context())


# -- the seed's sensor (003_e23af6d093eecb9b.txt): unit-tested, then run by the beat ---------------


@dg.sensor(target=report_job)
def dynamic_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    file_path = SOURCE  # the seed: Path(__file__).absolute().parent / "../data/source/"

    previous_state = json.loads(context.cursor) if context.cursor else {}
    current_state = {}
    runs_to_request = []

    for filename in os.listdir(file_path):
        if filename not in previous_state:
            last_modified = os.path.getmtime(file_path)
            current_state[filename] = last_modified

            runs_to_request.append(
                dg.RunRequest(
                    run_key=filename,
                )
            )

    return dg.SensorResult(run_requests=runs_to_request, cursor=json.dumps(current_state))


def test_the_seed_sensor_unit_tested_then_ticked_by_the_beat(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "data" / "source"
    source.mkdir(parents=True)
    monkeypatch.setitem(globals(), "SOURCE", source)
    (source / "2018-01-22.csv").write_text("a\n")
    (source / "2018-01-23.csv").write_text("b\n")

    result = dynamic_sensor(dg.build_sensor_context(cursor=json.dumps({"2018-01-22.csv": 0})))
    assert [r.run_key for r in result.run_requests or ()] == ["2018-01-23.csv"]
    assert list(json.loads(result.cursor or "{}")) == ["2018-01-23.csv"]

    t0 = datetime(2024, 3, 4, tzinfo=UTC)
    storage.set_instigator_status("dynamic_sensor", "sensor", InstigatorStatus.RUNNING, t0 - timedelta(seconds=1))
    h = Harness(dg.Definitions(assets=[report], sensors=[dynamic_sensor]), storage, t0)
    h.at(t0)
    (source / "2018-01-24.csv").write_text("c\n")
    h.at(t0 + timedelta(seconds=30))
    runs = [r for r in storage.list_runs() if r.tags.get(SENSOR_TAG) == "dynamic_sensor"]
    assert sorted((r.run_key, r.job_name) for r in runs) == [
        ("2018-01-22.csv", "report_job"),
        ("2018-01-23.csv", "report_job"),
        ("2018-01-24.csv", "report_job"),
    ]
