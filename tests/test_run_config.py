"""Run configuration (docs/config.md): Config, RunConfig and its dict form, ConfigurableResource
fields set per run, EnvVar read on the worker and never stored or shown; checked before any run
exists from every entry point (CLI, sensor, schedule), carried by backfills and re-execution."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest

import tidegate as tg
from tests.support import ROOT, TIDEGATE, tidegate_env, truncate_all
from tests.test_beat import T0, Harness
from tidegate.definitions.config import node_config
from tidegate.names import SENSOR_TAG, RunStatus, TickStatus
from tidegate.scheduler.backfill import BackfillDaemon, create_backfill
from tidegate.scheduler.reexecution import submit_reexecution
from tidegate.storage.api import Storage
from tidegate.workers.execution import StepExecutor

PROJECT = ROOT / "tests" / "projects" / "config_project.py"


class Greeting(tg.Config):
    person_name: str
    times: int = 1


class Mailer(tg.ConfigurableResource):
    sender: str = "robot"
    token: str = ""


@tg.asset
def greeting(context: tg.AssetExecutionContext, config: Greeting, mailer: Mailer) -> dict[str, Any]:
    return {"name": config.person_name, "times": config.times, "op_config": context.op_config, "sender": mailer.sender}


@tg.asset
def plain() -> int:
    return 1


greet_job = tg.define_asset_job("greet_job", [greeting, plain])


def _defs(**kwargs: Any) -> tg.Definitions:
    kwargs.setdefault("resources", {"mailer": Mailer()})
    kwargs.setdefault("jobs", [greet_job])
    return tg.Definitions(assets=[greeting, plain], **kwargs)


# -- in process ----------------------------------------------------------------------------------


def test_config_and_resource_fields_reach_the_asset_and_env_vars_stay_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREETING_NAME", "Ada-from-env")
    monkeypatch.setenv("MAILER_TOKEN", "t0ken-value")
    result = tg.materialize(
        [greeting],
        resources={"mailer": Mailer(token=tg.EnvVar("MAILER_TOKEN"))},
        run_config=tg.RunConfig(
            ops={"greeting": Greeting(person_name=tg.EnvVar("GREETING_NAME"), times=2)},
            resources={"mailer": {"config": {"sender": "night-bot"}}},
        ),
    )
    value = result.asset_value("greeting")
    assert value == {
        "name": "Ada-from-env",
        "times": 2,
        "op_config": {"person_name": "Ada-from-env", "times": 2},
        "sender": "night-bot",
    }
    stored = result.run.run_config
    assert stored == {
        "ops": {"greeting": {"config": {"person_name": {"env": "GREETING_NAME"}, "times": 2}}},
        "resources": {"mailer": {"config": {"sender": "night-bot"}}},
    }
    assert "Ada-from-env" not in json.dumps(stored)


def test_the_plain_dict_form_and_a_job_default_config() -> None:
    job = tg.define_asset_job("defaulted", [greeting], config={"ops": {"greeting": {"config": {"person_name": "x"}}}})
    defs = tg.Definitions(assets=[greeting], jobs=[job], resources={"mailer": Mailer()})
    assert defs.plan("defaulted").run_config == {"ops": {"greeting": {"config": {"person_name": "x"}}}}
    given = defs.plan("defaulted", run_config={"ops": {"greeting": {"config": {"person_name": "y", "times": 3}}}})
    assert given.run_config == {"ops": {"greeting": {"config": {"person_name": "y", "times": 3}}}}
    assert tg.validate_run_config(defs.get_job("defaulted")) == {"ops": {"greeting": {"config": {"person_name": "x"}}}}


_OK = {"greeting": {"config": {"person_name": "a"}}}


@pytest.mark.parametrize(
    ("run_config", "expected"),
    [
        (None, "job 'greet_job': asset 'greeting': config field 'person_name': Field required"),
        (
            {"ops": {"greeting": {"config": {"person_name": "a", "times": "many"}}}},
            "asset 'greeting': config field 'times': Input should be a valid integer",
        ),
        (
            {"ops": {"greeting": {"config": {"person_name": "a", "colour": "red"}}}},
            "asset 'greeting': config field 'colour': Extra inputs are not permitted",
        ),
        ({"ops": {"greting": {"config": {}}}}, "run config names node 'greting', which is not in this run"),
        ({"ops": {**_OK, "plain": {"config": {"x": 1}}}}, "asset 'plain' takes no config"),
        ({"ops": _OK, "resources": {"mailer": {"config": {"senderr": "x"}}}}, "config field 'senderr': not a field"),
        ({"ops": _OK, "resources": {"mailer": {"config": {"sender": 5}}}}, "resource 'mailer': config field 'sender'"),
        ({"ops": _OK, "resources": {"warehouse": {"config": {}}}}, "resource 'warehouse': no such resource"),
        ({"execution": {}}, "unsupported section 'execution'"),
    ],
)
def test_config_that_does_not_fit_names_the_node_and_field(run_config: Any, expected: str) -> None:
    defs = _defs()
    with pytest.raises(tg.RunConfigError) as info:
        defs.plan("greet_job", run_config=run_config)
    assert expected in str(info.value)
    with pytest.raises(tg.RunConfigError):
        tg.validate_run_config(defs.get_job("greet_job"), run_config or {})


def test_run_config_over_its_size_limit_is_refused() -> None:
    huge = {"ops": {"greeting": {"config": {"person_name": "x" * (1024 * 1024)}}}}
    with pytest.raises(tg.InputLimitError, match=r"job 'greet_job': run config is 1048[0-9]+ bytes as JSON, at most"):
        _defs().plan("greet_job", run_config=huge)


def test_bad_static_config_fails_when_the_code_is_loaded() -> None:
    bad = {"ops": {"greeting": {"config": {"times": 2}}}}
    with pytest.raises(
        tg.InvalidDefinitionError,
        match="job 'bad_default': default config: asset 'greeting': config field 'person_name': Field required",
    ):
        _defs(jobs=[tg.define_asset_job("bad_default", [greeting], config=bad)])
    schedule = tg.ScheduleDefinition(name="nightly", cron_schedule="0 3 * * *", job=greet_job, run_config=bad)
    with pytest.raises(tg.InvalidDefinitionError, match=r"schedule 'nightly': run_config: .*'person_name'"):
        _defs(schedules=[schedule])
    with pytest.raises(tg.InvalidDefinitionError, match="not both"):
        tg.ScheduleDefinition(
            name="both", cron_schedule="0 3 * * *", job=greet_job, run_config=bad, execution_fn=lambda context: None
        )
    with pytest.raises(tg.RunConfigError, match=r"pass defs\.get_job"):
        tg.validate_run_config(greet_job, bad)


def test_an_env_var_is_read_on_the_worker_and_errors_never_show_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = {"ops": {"greeting": {"config": {"person_name": "a", "times": {"env": "GREETING_TIMES"}}}}}
    # Launching checks everything but the variable's value: it is read where the step runs.
    assert _defs().plan("greet_job", run_config=stored).run_config == stored
    with pytest.raises(
        tg.RunConfigError, match="node 'greeting': field 'times' environment variable 'GREETING_TIMES' is"
    ):
        node_config(stored, "greeting", Greeting)
    monkeypatch.setenv("GREETING_TIMES", "s3cret-not-a-number")
    with pytest.raises(tg.RunConfigError) as info:
        node_config(stored, "greeting", Greeting)
    assert "config field 'times'" in str(info.value) and "s3cret" not in str(info.value)
    monkeypatch.setenv("GREETING_TIMES", "4")
    config = node_config(stored, "greeting", Greeting).config
    assert config == Greeting(person_name="a", times=4)
    assert repr(config) == "Greeting(person_name='a', times='<redacted>')"


def test_backfills_and_reexecution_carry_the_run_config(storage: Storage) -> None:
    days = tg.StaticPartitionsDefinition(["a", "b"])

    @tg.asset(partitions_def=days)
    def daily(context: tg.AssetExecutionContext, config: Greeting) -> str:
        if config.times == 0:
            raise RuntimeError("times=0 fails, as configured")
        return f"{context.partition_key}:{config.person_name}"

    job = tg.define_asset_job("daily_job", [daily])
    defs = tg.Definitions(assets=[daily], jobs=[job])
    run_config = {"ops": {"daily": {"config": {"person_name": "bf", "times": 0}}}}
    with pytest.raises(tg.RunConfigError, match="'person_name'"):
        create_backfill(defs, storage, "daily_job", ["a", "b"], run_config={"ops": {"daily": {"config": {}}}})
    create_backfill(defs, storage, "daily_job", ["a", "b"], run_config=run_config)
    BackfillDaemon(defs, storage).tick()
    runs = storage.list_runs()
    assert len(runs) == 2 and all(r.run_config == run_config for r in runs)

    result = tg.materialize(
        [daily], partition_key="a", run_config=run_config, instance=tg.DagsterInstance(storage), raise_on_error=False
    )
    assert not result.success
    again = submit_reexecution(defs, storage, result.run_id, from_failure=True)
    assert storage.get_run(again.run_id).run_config == run_config


# -- schedules and sensors -----------------------------------------------------------------------


def test_sensor_and_schedule_ticks_with_bad_config_fail_naming_the_field_and_create_no_run(storage: Storage) -> None:
    @tg.sensor(job=greet_job, default_status=tg.DefaultSensorStatus.RUNNING)
    def bad_sensor(context: tg.SensorEvaluationContext) -> tg.RunRequest:
        return tg.RunRequest(run_key="k", run_config={"ops": {"greeting": {"config": {"person_name": 7}}}})

    @tg.sensor(job=greet_job, default_status=tg.DefaultSensorStatus.RUNNING)
    def good_sensor(context: tg.SensorEvaluationContext) -> tg.RunRequest:
        return tg.RunRequest(run_key="k", run_config=tg.RunConfig(ops={"greeting": Greeting(person_name="Grace")}))

    @tg.schedule("0 * * * *", job=greet_job, default_status=tg.DefaultScheduleStatus.RUNNING)
    def bad_schedule(context: tg.ScheduleEvaluationContext) -> tg.RunRequest:
        return tg.RunRequest(run_config={"ops": {"greeting": {"config": {}}}})

    h = Harness(_defs(sensors=[bad_sensor, good_sensor], schedules=[bad_schedule]), storage, T0)
    h.at(T0)
    h.at(T0.replace(hour=1))
    sensor_tick = storage.get_ticks("bad_sensor")[0]
    schedule_tick = storage.get_ticks("bad_schedule")[0]
    assert sensor_tick.status == TickStatus.FAILURE and schedule_tick.status == TickStatus.FAILURE
    assert (
        "RunConfigError: sensor 'bad_sensor': job 'greet_job': asset 'greeting': config field 'person_name': "
        "Input should be a valid string" in (sensor_tick.error or "")
    )
    assert (
        "RunConfigError: schedule 'bad_schedule': job 'greet_job': asset 'greeting': config field 'person_name': "
        "Field required" in (schedule_tick.error or "")
    )
    runs = storage.list_runs()
    assert [r.tags[SENSOR_TAG] for r in runs] == ["good_sensor"]  # the bad ticks made none
    assert runs[0].run_config == {"ops": {"greeting": {"config": {"person_name": "Grace", "times": 1}}}}


def test_a_schedule_definition_gives_its_run_config_to_each_run(storage: Storage) -> None:
    nightly = tg.ScheduleDefinition(
        name="nightly",
        cron_schedule="0 * * * *",
        job=greet_job,
        run_config={"ops": {"greeting": {"config": {"person_name": "night"}}}},
        default_status=tg.DefaultScheduleStatus.RUNNING,
    )
    h = Harness(_defs(schedules=[nightly]), storage, T0)
    h.at(T0)
    h.at(T0.replace(hour=1))
    [run] = storage.list_runs()
    assert run.run_config == {"ops": {"greeting": {"config": {"person_name": "night"}}}}


# -- the command line ----------------------------------------------------------------------------


def _tidegate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    from tests.test_cli import _env

    env = _env(tmp_path, MAILER_TOKEN="cli-t0ken-secret")
    return subprocess.run([TIDEGATE, *args], env=env, capture_output=True, text=True, timeout=90, cwd=tmp_path)


def test_cli_launch_checks_config_first_stores_it_and_shows_env_vars_redacted(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ops:\n  greeting:\n    config:\n      person_name: Ada\n      times: many\n")
    failed = _tidegate(tmp_path, "job", "launch", "greet_job", "-f", str(PROJECT), "--config", str(bad))
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "job 'greet_job': asset 'greeting': config field 'times': Input should be a valid integer" in failed.stderr

    given = {"ops": {"greeting": {"config": {"person_name": {"env": "MAILER_TOKEN"}, "times": 2}}}}
    launched = _tidegate(
        tmp_path, "job", "launch", "greet_job", "-f", str(PROJECT), "--config-json", json.dumps(given), "--wait"
    )
    assert launched.returncode == 0, launched.stdout + launched.stderr
    effects = [json.loads(line) for line in (tmp_path / "effects" / "greeting.jsonl").read_text().splitlines()]
    assert effects == [
        {"config": {"person_name": "cli-t0ken-secret", "times": 2}, "sender": "robot", "token": "cli-t0ken-secret"}
    ]
    database = tmp_path / "home" / "tidegate.db"
    with sqlite3.connect(database) as conn:
        [[run_id, run_config]] = conn.execute("SELECT run_id, run_config FROM runs").fetchall()  # the bad one: none
    assert json.loads(run_config) == given
    shown = _tidegate(tmp_path, "runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert '"person_name": "<redacted> (EnvVar MAILER_TOKEN)"' in shown.stdout and '"times": 2' in shown.stdout
    everything = database.read_bytes() + b"".join(p.read_bytes() for p in database.parent.glob("tidegate.db-*"))
    assert b"cli-t0ken-secret" not in everything and "cli-t0ken-secret" not in shown.stdout + launched.stdout

    listed = _tidegate(tmp_path, "job", "list", "-f", str(PROJECT), "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {
            "name": "greet_job",
            "kind": "assets",
            "description": "Greets someone, as often as configured.",
            "metadata": {"owner": "growth@example.com"},
            "tags": {"team": "growth"},
            "run_tags": {"source": "config_project"},
            "partitions": None,
            "nodes": ["greeting"],
            "schedules": ["nightly_greeting"],
            "sensors": ["greet_sensor"],
        }
    ]


# -- Dagster's documented examples, only the import lines changed ---------------------------------


def _example(name: str) -> Any:
    import importlib

    return importlib.import_module(f"tests.projects.dagster_examples.{name}")


def test_dagster_config_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSON_NAME", "Bob")
    assert _example("config_providing_values").asset_result.asset_value("greeting") == "hello Alice"
    env_example = _example("config_using_env_vars").asset_result
    assert env_example.asset_value("greeting") == "hello Bob"
    assert env_example.run.run_config == {"ops": {"greeting": {"config": {"person_name": {"env": "PERSON_NAME"}}}}}
    with pytest.raises(pydantic.ValidationError, match="non_existent_config_value"):
        _example("config_validation")
    assert isinstance(_example("config_resources").resources(), tg.Definitions)

    advanced = _example("config_advanced_types")
    assert advanced.execute_with_config().asset_value("greeting") == "hello Bob"
    assert advanced.basic_data_structures_config().success
    assert advanced.union_schema_config().asset_value("pet_stats") == "Cat meows 10 times"
    assert advanced.optional_config().asset_value("greeting") == "hello"
    with pytest.raises(pydantic.ValidationError, match="age"):
        advanced.metadata_config()
    with pytest.raises(pydantic.ValidationError, match="person_first_name"):
        advanced.required_config()


def test_dagster_configurable_resource_example_configured_per_run() -> None:
    example = _example("config_resource_example")
    defs = example.resources()

    @tg.asset
    def connection(my_db_resource: example.MyDatabaseResource) -> str:
        my_db_resource.query("SELECT 1")
        return my_db_resource.connection_url

    result = tg.materialize(
        [connection],
        resources=defs.resources,
        run_config=tg.RunConfig(resources={"my_db_resource": {"config": {"connection_url": "postgresql://db"}}}),
    )
    assert result.asset_value("connection") == "postgresql://db"


# -- real processes ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sensors_run_config_reaches_the_asset_on_a_real_worker(
    tmp_path: Path, pg_url: str, redis_url: str, worker_factory: Any
) -> None:
    """A ``tidegate beat`` process evaluates the sensor of tests/projects/config_project.py,
    whose RunRequest carries run_config; a ``tidegate worker`` process runs the step, reading
    the resource's EnvVar from its own environment."""
    truncate_all(pg_url)
    env = tidegate_env(
        database_url=pg_url,
        broker_url=redis_url,
        definitions=PROJECT,
        io_dir=tmp_path / "io",
        TIDEGATE_TEST_EFFECTS=str(tmp_path / "effects"),
        MAILER_TOKEN="w0rker-t0ken",
    )
    worker_factory(env, name="config")
    storage = Storage.open(pg_url)
    with (tmp_path / "beat.log").open("wb") as log:
        beat = subprocess.Popen(
            [TIDEGATE, "beat", "-f", str(PROJECT), "--lease-seconds", "1"],
            env={k: v for k, v in env.items() if k != "MAILER_TOKEN"},  # only the worker reads it
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not any(r.status in RunStatus.TERMINAL for r in storage.list_runs()):
            assert time.monotonic() < deadline, (tmp_path / "beat.log").read_text(errors="replace")[-2000:]
            time.sleep(0.2)
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=20)
    [run] = storage.list_runs()
    storage.dispose()
    assert run.status == RunStatus.SUCCESS, run
    assert run.tags[SENSOR_TAG] == "greet_sensor" and run.tags["source"] == "config_project"  # the job's run_tags
    assert run.run_config == {
        "ops": {"greeting": {"config": {"person_name": "sensor", "times": 3}}},
        "resources": {"mailer": {"config": {"sender": "sensor-bot"}}},
    }
    effects = [json.loads(line) for line in (tmp_path / "effects" / "greeting.jsonl").read_text().splitlines()]
    assert effects == [
        {"config": {"person_name": "sensor", "times": 3}, "sender": "sensor-bot", "token": "w0rker-t0ken"}
    ]


def test_a_jobs_op_retry_policy_retries_steps_whose_asset_has_none(storage: Storage) -> None:
    attempts: list[int] = []

    @tg.asset
    def shaky() -> int:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise ConnectionError("the first attempt fails")
        return len(attempts)

    job = tg.define_asset_job("shaky_job", [shaky], op_retry_policy=tg.RetryPolicy(max_retries=1))
    defs = tg.Definitions(assets=[shaky], jobs=[job], resources={"io_manager": tg.InMemoryIOManager()})
    pending: list[Any] = []
    executor = StepExecutor(defs, storage, publish=pending.extend, worker_name="test")
    run_id = storage.submit_run(defs.plan("shaky_job"), origin="test").run_id
    pending.extend(storage.start_run(run_id))
    for _ in range(200):  # a bound, not a timing: each round runs a step or finds the retry due
        if storage.get_run(run_id).status in RunStatus.TERMINAL:
            break
        if pending:
            ref = pending.pop(0)
            executor.execute(ref.run_id, ref.step_key, ref.attempt)
        else:
            pending.extend(storage.steps_to_publish(grace_seconds=0))
            time.sleep(0.02)
    assert storage.get_run(run_id).status == RunStatus.SUCCESS
    assert attempts == [1, 2] and storage.get_steps(run_id)[0].attempt == 2
