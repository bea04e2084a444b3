"""Run configuration end to end (tests/test_run_config.py): an asset with a Config and a
ConfigurableResource whose token is an EnvVar; a job with default config, tags, run tags and
metadata; a schedule and a sensor that both carry run_config."""

from __future__ import annotations

import json
import os
from pathlib import Path

import tidegate as tg


class GreetingConfig(tg.Config):
    person_name: str
    times: int = 1


class Mailer(tg.ConfigurableResource):
    sender: str = "robot"
    token: str = ""


def _effect(name: str, record: dict[str, object]) -> None:
    folder = os.environ.get("TIDEGATE_TEST_EFFECTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with (Path(folder) / name).open("a") as handle:
            handle.write(json.dumps(record) + "\n")


@tg.asset
def greeting(context: tg.AssetExecutionContext, config: GreetingConfig, mailer: Mailer) -> int:
    # What the step saw, the token included: the test checks it never reached the database.
    _effect("greeting.jsonl", {"config": context.op_config, "sender": mailer.sender, "token": mailer.token})
    return config.times


greet_job = tg.define_asset_job(
    "greet_job",
    [greeting],
    config=tg.RunConfig(ops={"greeting": GreetingConfig(person_name="everyone")}),
    description="Greets someone, as often as configured.",
    tags={"team": "growth"},
    run_tags={"source": "config_project"},
    metadata={"owner": "growth@example.com"},
)


@tg.sensor(job=greet_job, minimum_interval_seconds=1, default_status=tg.DefaultSensorStatus.RUNNING)
def greet_sensor(context: tg.SensorEvaluationContext) -> tg.RunRequest:
    return tg.RunRequest(
        run_key="once",
        run_config={
            "ops": {"greeting": {"config": {"person_name": "sensor", "times": 3}}},
            "resources": {"mailer": {"config": {"sender": "sensor-bot"}}},
        },
    )


nightly = tg.ScheduleDefinition(
    name="nightly_greeting",
    cron_schedule="0 3 * * *",
    job=greet_job,
    run_config={"ops": {"greeting": {"config": {"person_name": "night"}}}},
)

defs = tg.Definitions(
    assets=[greeting],
    jobs=[greet_job],
    schedules=[nightly],
    sensors=[greet_sensor],
    resources={"mailer": Mailer(token=tg.EnvVar("MAILER_TOKEN"))},
)
