"""The list commands' output: aligned tables whatever the names' lengths, plain text that
scripts can parse when piped, and ``--json`` everywhere. Real processes on embedded SQLite."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support import TIDEGATE

LONG = "a_daily_asset_whose_name_is_much_longer_than_any_column_was"

DEFINITIONS = f"""
import tidegate as tg

daily = tg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")
regions = tg.DynamicPartitionsDefinition("regions")


@tg.asset(partitions_def=daily, group_name="a_group_name_longer_than_sixteen")
def {LONG}(context: tg.AssetExecutionContext) -> int:
    return 1


@tg.asset
def short() -> int:
    return 2


@tg.asset(partitions_def=regions, pool="warehouse")
def per_region(context: tg.AssetExecutionContext) -> str:
    return context.partition_key


short_job = tg.define_asset_job("a_job_name_that_is_longer_than_twenty_four", [short])
daily_job = tg.define_asset_job("daily_job", [{LONG}])


@tg.schedule("0 6 * * *", job=short_job, execution_timezone="America/Argentina/ComodRivadavia")
def a_schedule_name_longer_than_twenty_eight(context: tg.ScheduleEvaluationContext) -> tg.RunRequest:
    return tg.RunRequest()


@tg.sensor(job=short_job, minimum_interval_seconds=30)
def echo(context: tg.SensorEvaluationContext) -> tg.SkipReason:
    return tg.SkipReason("nothing")


defs = tg.Definitions(
    assets=[{LONG}, short, per_region],
    jobs=[short_job, daily_job],
    schedules=[a_schedule_name_longer_than_twenty_eight],
    sensors=[echo],
)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with long names, one run, a pool, dynamic keys and a backfill."""
    tmp = tmp_path_factory.mktemp("output")
    path = tmp / "long_names.py"
    path.write_text(DEFINITIONS)
    run = _tidegate(path, "job", "launch", "a_job_name_that_is_longer_than_twenty_four", "-f", str(path), "--wait")
    assert run.returncode == 0, run.stdout + run.stderr
    for args in (
        ("pool", "set", "warehouse", "2"),
        ("partitions", "add", "regions", "north", "south", "-f", str(path)),
        ("backfill", "daily_job", "-f", str(path), "--all", "--no-wait"),
        ("job", "launch", "daily_job", "--partition", "2024-01-02", "-f", str(path)),  # stays QUEUED
    ):
        result = _tidegate(path, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    return path


def _tidegate(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(
        TIDEGATE_HOME=str(project.parent / "home"),
        TIDEGATE_BROKER_URL="memory://localhost/",
        COLUMNS="40",  # a narrow terminal: piped output must not wrap to it
    )
    return subprocess.run([TIDEGATE, *args], env=env, capture_output=True, text=True, timeout=90, cwd=project.parent)


def _out(project: Path, *args: str) -> str:
    result = _tidegate(project, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _json(project: Path, *args: str) -> Any:
    return json.loads(_out(project, *args, "--json"))


def _columns(output: str) -> list[dict[str, str]]:
    """Rows of a piped table, cut where the header's words start: only works if every row's
    cells start under their header (the table is aligned)."""
    header, *rows = output.splitlines()
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S+(?: \S+)*", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    parsed = []
    for row in rows:
        for start in starts[1:]:  # a cell starts at each header start (after a blank)
            assert row[start - 2 : start] == "  " or row[start - 1 : start] == " ", (row, start)
        cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        parsed.append(dict(zip(names, cells, strict=True)))
    return parsed


def test_assets_list_stays_aligned_with_long_names(project: Path) -> None:
    output = _out(project, "assets", "list", "-f", str(project))
    assert "\x1b[" not in output  # no colour when piped
    rows = {r["ASSET"]: r for r in _columns(output)}
    assert rows[LONG]["GROUP"] == "a_group_name_longer_than_sixteen"
    assert rows[LONG]["PARTITIONS"] == "0 materialized, 0 failed, 3 missing of 3"
    assert rows["short"]["LAST MATERIALIZED"] != "never"
    assert rows["per_region"]["PARTITIONS"] == "0 materialized, 0 failed, 2 missing of 2"
    assert all(line == line.rstrip() for line in output.splitlines())  # no trailing blanks


def test_runs_list_and_show_stay_aligned_and_unwrapped(project: Path) -> None:
    output = _out(project, "runs", "list")
    rows = _columns(output)
    [done] = [r for r in rows if r["JOB"] == "a_job_name_that_is_longer_than_twenty_four"]
    assert done["STATUS"] == "SUCCESS" and done["ORIGIN"] == "cli"
    assert re.fullmatch(r"\d+\.\d\ds", done["DURATION"])
    assert all(len(line) > 40 for line in output.splitlines()[1:])  # wider than COLUMNS, one line each
    shown = _out(project, "runs", "show", done["RUN ID"][:8])
    table = shown.split("\n\n", 1)[1]
    [step] = _columns(table)
    assert (step["STEP"], step["STATUS"], step["ATTEMPT"]) == ("short", "SUCCEEDED", "1")


def test_schedule_and_sensor_lists_stay_aligned(project: Path) -> None:
    [row] = _columns(_out(project, "schedule", "list", "-f", str(project)))
    assert row == {
        "SCHEDULE": "a_schedule_name_longer_than_twenty_eight",
        "CRON": "0 6 * * *",
        "TIMEZONE": "America/Argentina/ComodRivadavia",
        "STATUS": "STOPPED (default)",
        "LAST TICK": "-",
        "TARGET": "job a_job_name_that_is_longer_than_twenty_four",
    }
    [row] = _columns(_out(project, "sensor", "list", "-f", str(project)))
    assert (row["SENSOR"], row["INTERVAL"], row["CURSOR"]) == ("echo", "30s", "-")


def test_every_list_command_prints_json(project: Path) -> None:
    runs = _json(project, "runs", "list")
    assert {r["job_name"] for r in runs} >= {"a_job_name_that_is_longer_than_twenty_four", "daily_job"}
    done = next(r for r in runs if r["status"] == "SUCCESS")
    assert done["origin"] == "cli" and done["duration_seconds"] > 0
    assert done["created_at"].endswith("+00:00")

    assets = {a["asset_key"]: a for a in _json(project, "assets", "list", "-f", str(project))}
    assert assets[LONG]["partitions"] == {"materialized": 0, "failed": 0, "missing": 3, "total": 3}
    assert assets["short"]["last_run_id"] == done["run_id"] and assets["short"]["partitions"] is None

    [schedule] = _json(project, "schedule", "list", "-f", str(project))
    assert schedule["status"] == "STOPPED" and schedule["execution_timezone"] == "America/Argentina/ComodRivadavia"
    [sensor] = _json(project, "sensor", "list", "-f", str(project))
    assert (sensor["name"], sensor["minimum_interval_seconds"], sensor["cursor"]) == ("echo", 30, None)
    assert _json(project, "ticks", "echo") == []

    assert _json(project, "pool", "list") == [{"pool": "warehouse", "slots": 2, "active": 0, "waiting": 0}]
    assert _json(project, "partitions", "list", "regions", "-f", str(project)) == ["north", "south"]
    partitions = _json(project, "assets", "partitions", LONG, "-f", str(project))
    assert [p["partition_key"] for p in partitions] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert {p["status"] for p in partitions} == {"MISSING"}

    [backfill] = _json(project, "backfill", "list")
    assert (backfill["job_name"], backfill["status"], backfill["partitions"]) == ("daily_job", "REQUESTED", 3)

    queue = _json(project, "queue")
    assert queue["max_concurrent_runs"] is None and queue["config"] == "defaults"
    assert [q["job_name"] for q in queue["queued"]] == ["daily_job"]
    assert queue["queued"][0]["starts"] is True and queue["queued"][0]["waits_for"] is None


def test_empty_lists_print_an_empty_json_array(tmp_path: Path) -> None:
    project = tmp_path / "empty.py"
    project.write_text("import tidegate as tg\ndefs = tg.Definitions(assets=[])\n")
    for args in (("runs", "list"), ("pool", "list"), ("backfill", "list"), ("ticks", "nothing")):
        assert _json(project, *args) == [], args


def test_on_a_terminal_statuses_are_coloured_and_ids_are_never_cut(project: Path) -> None:
    import pty

    run_id = next(r["run_id"] for r in _json(project, "runs", "list") if r["status"] == "SUCCESS")
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(TIDEGATE_HOME=str(project.parent / "home"), COLUMNS="60", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    process = subprocess.Popen([TIDEGATE, "runs", "list"], env=env, stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=60) == 0
    text = b"".join(chunks).decode()
    assert "\x1b[32mSUCCESS" in text  # green
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert run_id in plain and "a_job_name_that_is_longer_than_twenty_four" in plain
