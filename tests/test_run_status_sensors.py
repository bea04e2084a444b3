"""Run-status sensors on real storage (SQLite and PostgreSQL), stepped by the beat: begin at
"now", each matching run handled once, monitored jobs, the failure event's error, a backlog
worked through with no per-tick limit, and Dagster's documented examples."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

import tidegate as tg
from tests.test_beat import RUNNING, T0, Harness
from tidegate.definitions import event_sensor
from tidegate.names import SENSOR_TAG, TickStatus
from tidegate.storage.api import Storage


@tg.asset
def flaky() -> int:
    raise ValueError("upstream file is empty")


@tg.asset
def steady() -> int:
    return 1


@tg.asset
def notify() -> None:
    return None


NOTIFY_JOB = tg.define_asset_job("notify_job", [notify])
STEADY_JOB = tg.define_asset_job("steady_job", [steady])


def _fail(storage: Storage, n: int = 1) -> list[str]:
    instance = tg.DagsterInstance(storage)
    return [tg.materialize([flaky], instance=instance, raise_on_error=False).run_id for _ in range(n)]


def _runs(storage: Storage, name: str) -> list[Any]:
    runs = [r for r in storage.list_runs(limit=10_000) if r.tags.get(SENSOR_TAG) == name]
    return sorted(runs, key=lambda r: (r.created_at, r.run_id))


def _defs(*sensors: tg.SensorDefinition) -> tg.Definitions:
    return tg.Definitions(assets=[flaky, steady, notify], jobs=[NOTIFY_JOB, STEADY_JOB], sensors=list(sensors))


errors: list[str] = []


@tg.run_failure_sensor(request_job=NOTIFY_JOB, default_status=RUNNING)
def on_failure(context: tg.RunFailureSensorContext) -> tg.RunRequest:
    errors.append(context.failure_event.message or "")
    steps = context.get_step_failure_events()
    assert steps and steps[0].event_specific_data.error is not None
    return tg.RunRequest(tags={"failed_run": context.dagster_run.run_id, "job": context.run.job_name})


def test_begins_at_now_then_handles_each_failure_once(storage: Storage) -> None:
    errors.clear()
    _fail(storage, 2)  # history: not replayed
    h = Harness(_defs(on_failure), storage, T0)
    h.at(T0)
    assert _runs(storage, "on_failure") == []
    assert "earlier run status changes are not replayed" in (
        storage.get_ticks("on_failure", limit=1)[0].skip_reason or ""
    )
    failed = _fail(storage, 3)
    tg.materialize([steady], instance=tg.DagsterInstance(storage))  # a success: not a failure event
    h.at(T0 + timedelta(seconds=30))
    h.at(T0 + timedelta(seconds=60))
    runs = _runs(storage, "on_failure")
    assert [r.tags["failed_run"] for r in runs] == failed
    assert {r.job_name for r in runs} == {"notify_job"} and {r.tags["job"] for r in runs} == {"__ASSET_JOB"}
    assert all("Steps failed: ['flaky']" in e and "ValueError: upstream file is empty" in e for e in errors)


def test_from_the_beginning_replays_history(storage: Storage) -> None:
    errors.clear()
    failed = _fail(storage, 2)
    storage.set_cursor("on_failure", "sensor", on_failure.beginning_cursor())
    h = Harness(_defs(on_failure), storage, T0)
    h.at(T0)
    assert [r.tags["failed_run"] for r in _runs(storage, "on_failure")] == failed


def test_monitored_jobs_and_run_status(storage: Storage) -> None:
    seen: dict[str, list[str]] = {"steady_job": [], "__ASSET_JOB": []}

    def watching(job: Any) -> tg.SensorDefinition:
        name = job if isinstance(job, str) else job.name

        @tg.run_status_sensor(
            run_status=tg.DagsterRunStatus.SUCCESS, monitored_jobs=[job], default_status=RUNNING, name=f"w{len(name)}"
        )
        def watch(context: tg.RunStatusSensorContext) -> None:
            assert context.dagster_run.status == tg.DagsterRunStatus.SUCCESS
            seen[name].append(context.dagster_run.run_id)

        return watch

    h = Harness(_defs(watching(STEADY_JOB), watching("__ASSET_JOB")), storage, T0)
    h.at(T0)
    instance = tg.DagsterInstance(storage)
    done = [tg.materialize([a], instance=instance).run_id for a in (notify, steady)]
    _fail(storage)  # a failure: not a success event
    h.at(T0 + timedelta(seconds=30))
    assert seen == {"steady_job": [], "__ASSET_JOB": done}


def test_a_backlog_is_worked_through_with_no_per_tick_limit(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_sensor, "MAX_REQUESTS_PER_TICK", 4)
    monkeypatch.setattr(event_sensor, "BATCH_SIZE", 3)
    h = Harness(_defs(on_failure), storage, T0)
    h.at(T0)
    failed = _fail(storage, 10)
    for step in range(4):
        h.at(T0 + timedelta(seconds=30 + step))
    assert [r.tags["failed_run"] for r in _runs(storage, "on_failure")] == failed
    assert [len(t.run_ids) for t in reversed(storage.get_ticks("on_failure", limit=5))] == [0, 4, 4, 2]


def test_unknown_run_status_is_a_definition_error() -> None:
    with pytest.raises(tg.InvalidDefinitionError, match="unknown run_status 'DONE'"):
        tg.run_status_sensor(run_status="DONE")


# -- Dagster's documented examples, with only the import line changed ---------------------------------

import tidegate as dg  # noqa: E402  (the examples' `import dagster as dg`)


def email_alert(message: str) -> None:
    sent.append(message)


sent: list[str] = []


@dg.run_failure_sensor
def my_email_failure_sensor(context: dg.RunFailureSensorContext):  # type: ignore[no-untyped-def]
    message = f'Job "{context.dagster_run.job_name}" failed. Error: {context.failure_event.message}'
    email_alert(message)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS)
def my_email_sensor(context: dg.RunStatusSensorContext):  # type: ignore[no-untyped-def]
    message = f'Job "{context.dagster_run.job_name}" succeeded.'
    email_alert(message)


def test_daggers_documented_run_status_examples(storage: Storage) -> None:
    sent.clear()
    defs = _defs(my_email_failure_sensor, my_email_sensor)
    for name in ("my_email_failure_sensor", "my_email_sensor"):
        storage.set_instigator_status(name, "sensor", "RUNNING", T0)
    h = Harness(defs, storage, T0)
    h.at(T0)
    _fail(storage)
    tg.materialize([steady], instance=tg.DagsterInstance(storage))
    h.at(T0 + timedelta(seconds=30))
    assert sorted(sent) == [
        'Job "__ASSET_JOB" failed. Error: Execution of run for "__ASSET_JOB" failed. Steps failed: '
        "['flaky']. ValueError: upstream file is empty",
        'Job "__ASSET_JOB" succeeded.',
    ]
    # Dagster's unit-testing recipe: build the context from a run of the instance
    instance = dg.DagsterInstance(storage)
    run = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)[0]
    event = dg.DagsterEvent("RUN_SUCCESS", run.job_name, None, None, None)
    context = dg.build_run_status_sensor_context(
        sensor_name="my_email_sensor", dagster_instance=instance, dagster_run=run, dagster_event=event
    )
    my_email_sensor(context)
    assert sent[-1] == 'Job "__ASSET_JOB" succeeded.'
    failed_run = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]), limit=1)[0]
    failure = dg.DagsterEvent("RUN_FAILURE", failed_run.job_name, None, None, None, message="boom")
    run_failure_sensor_context = dg.build_run_status_sensor_context(
        sensor_name="my_email_failure_sensor", dagster_instance=instance, dagster_run=failed_run, dagster_event=failure
    ).for_run_failure()
    my_email_failure_sensor(run_failure_sensor_context)
    assert sent[-1] == 'Job "__ASSET_JOB" failed. Error: boom'
    assert logging.getLogger("tidegate").name == "tidegate"
    assert storage.get_ticks("my_email_sensor", limit=1)[0].status == TickStatus.SKIPPED
