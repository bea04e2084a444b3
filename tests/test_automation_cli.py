"""`tidegate schedule|sensor|ticks`, run as real processes on the embedded SQLite database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import TIDEGATE
from tidegate.definitions.loading import CodeLocation
from tidegate.names import InstigatorStatus
from tidegate.scheduler.beat import Beat
from tidegate.scheduler.clock import FakeClock
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRef

DEFINITIONS = '''
import tidegate as tg


@tg.asset
def raw() -> int:
    return 1


import_job = tg.define_asset_job("import_job", [raw])


@tg.schedule("0 6 * * *", job=import_job, execution_timezone="Asia/Kolkata")
def morning(context: tg.ScheduleEvaluationContext) -> tg.RunRequest:
    day = context.scheduled_execution_time.date().isoformat()
    return tg.RunRequest(run_key=day, tags={"day": day})


hourly = tg.ScheduleDefinition(
    "hourly", cron_schedule="0 * * * *", job=import_job, default_status=tg.DefaultScheduleStatus.RUNNING
)


@tg.sensor(job=import_job, minimum_interval_seconds=15)
def echo(context: tg.SensorEvaluationContext) -> tg.RunRequest:
    """Requests one run per cursor value and counts the cursor up."""
    current = context.cursor or "0"
    context.update_cursor(str(int(current) + 1))
    return tg.RunRequest(run_key=f"from-{current}")


defs = tg.Definitions(assets=[raw], jobs=[import_job], schedules=[morning, hourly], sensors=[echo])
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "automation_defs.py"
    path.write_text(DEFINITIONS)
    return path


def _tidegate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(TIDEGATE_HOME=str(tmp_path / "home"), TIDEGATE_BROKER_URL="memory://localhost/")
    return subprocess.run([TIDEGATE, *args], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _storage(tmp_path: Path) -> Storage:
    return Storage.open(f"sqlite:///{tmp_path / 'home' / 'tidegate.db'}")


def _line(output: str, name: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith(name + " ")]
    return line


def _nothing_stored(tmp_path: Path) -> bool:
    storage = _storage(tmp_path)
    try:
        return storage.instigator_states() == {} and storage.list_runs() == [] and storage.get_ticks("echo") == []
    finally:
        storage.dispose()


def test_schedule_list_start_and_stop(tmp_path: Path, project: Path) -> None:
    listed = _ok(_tidegate(tmp_path, "schedule", "list", "-f", str(project)))
    assert re.search(
        r"^morning\s+0 6 \* \* \*\s+Asia/Kolkata\s+STOPPED \(default\)\s+-\s+job import_job$", listed, re.M
    )
    assert re.search(r"^hourly\s+0 \* \* \* \*\s+UTC\s+RUNNING \(default\)\s+-", listed, re.M), listed

    before = datetime.now(UTC)
    assert _ok(_tidegate(tmp_path, "schedule", "start", "morning", "-f", str(project))).strip() == (
        "schedule morning: RUNNING"
    )
    storage = _storage(tmp_path)
    state = storage.get_instigator("morning")
    assert state is not None and state.status == InstigatorStatus.RUNNING
    assert state.running_since is not None and before <= state.running_since <= datetime.now(UTC)
    assert state.last_tick_at == state.running_since  # no tick from before the start

    assert _ok(_tidegate(tmp_path, "schedule", "stop", "morning", "-f", str(project))).strip() == (
        "schedule morning: STOPPED"
    )
    state = storage.get_instigator("morning")
    assert state is not None and state.status == InstigatorStatus.STOPPED
    storage.dispose()

    unknown = _tidegate(tmp_path, "schedule", "start", "nightly", "-f", str(project))
    assert unknown.returncode == 2
    assert "schedule 'nightly': not defined in the loaded code (schedules: hourly, morning)" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_schedule_preview_shows_the_next_ticks_and_commits_nothing(tmp_path: Path, project: Path) -> None:
    before = datetime.now(UTC)
    output = _ok(_tidegate(tmp_path, "schedule", "preview", "morning", "--ticks", "3", "-f", str(project)))
    lines = output.splitlines()
    assert len(lines) == 3, output
    days = []
    for line in lines:
        match = re.fullmatch(r"(\d{4}-\d\d-\d\d)T06:00:00\+05:30  run_key='(\S+)' tags=\{'day': '(\S+)'\}", line)
        assert match, line
        assert match.group(1) == match.group(2) == match.group(3)
        days.append(date.fromisoformat(match.group(1)))
    assert [d - days[0] for d in days] == [timedelta(0), timedelta(days=1), timedelta(days=2)]
    first = datetime.fromisoformat(lines[0].split()[0])
    assert before < first <= before + timedelta(days=1)
    assert _nothing_stored(tmp_path)


def test_sensor_preview_cursor_set_and_reset(tmp_path: Path, project: Path) -> None:
    output = _ok(_tidegate(tmp_path, "sensor", "preview", "echo", "-f", str(project)))
    assert output.splitlines() == ["RunRequest run_key='from-0' tags={}", "cursor: '1'"]
    output = _ok(_tidegate(tmp_path, "sensor", "preview", "echo", "--cursor", "41", "-f", str(project)))
    assert output.splitlines() == ["RunRequest run_key='from-41' tags={}", "cursor: '42'"]
    assert _nothing_stored(tmp_path)

    assert _ok(_tidegate(tmp_path, "sensor", "cursor", "echo", "--set", "7", "-f", str(project))).strip() == (
        "echo: cursor 7"
    )
    listed = _ok(_tidegate(tmp_path, "sensor", "list", "-f", str(project)))
    assert re.fullmatch(r"echo\s+15s\s+STOPPED \(default\)\s+-\s+7\s+-\s+job import_job", _line(listed, "echo")), listed
    output = _ok(_tidegate(tmp_path, "sensor", "preview", "echo", "-f", str(project)))
    assert output.splitlines() == ["RunRequest run_key='from-7' tags={}", "cursor: '8'"]
    storage = _storage(tmp_path)
    state = storage.get_instigator("echo")
    assert state is not None and state.cursor == "7"  # the preview stored nothing
    assert storage.list_runs() == [] and storage.get_ticks("echo") == []

    assert _ok(_tidegate(tmp_path, "sensor", "cursor", "echo", "--reset", "-f", str(project))).strip() == (
        "echo: cursor (none)"
    )
    state = storage.get_instigator("echo")
    assert state is not None and state.cursor is None
    storage.dispose()


def test_sensor_start_stop_and_tick_history(tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _ok(_tidegate(tmp_path, "sensor", "start", "echo", "-f", str(project))).strip() == "sensor echo: RUNNING"
    storage = _storage(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader adds the project's folder
    defs = CodeLocation(file=str(project)).load()
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    clock = FakeClock(start)
    published: list[StepRef] = []
    beat = Beat(defs, storage, published.extend, clock=clock, holder="cli-test")
    for _ in range(3):
        beat.tick()
        clock.advance(15)
    assert [r.run_key for r in storage.list_runs() if r.run_key and r.run_key.startswith("from-")] == [
        "from-2",
        "from-1",
        "from-0",
    ]

    output = _ok(_tidegate(tmp_path, "ticks", "echo", "--limit", "2"))
    lines = output.splitlines()
    assert len(lines) == 2, output
    newest, older = lines
    assert newest.startswith((start + timedelta(seconds=30)).isoformat(timespec="seconds") + "  SUCCESS")
    assert "new_keys=['from-2']" in newest and "new_keys=['from-1']" in older
    assert older.startswith((start + timedelta(seconds=15)).isoformat(timespec="seconds"))
    run_prefix = re.search(r"runs=(\w{8})", newest)
    [from_2] = [r for r in storage.list_runs() if r.run_key == "from-2"]
    assert run_prefix and from_2.run_id.startswith(run_prefix.group(1))
    assert _ok(_tidegate(tmp_path, "ticks", "morning")).strip() == "no ticks for morning"

    assert _ok(_tidegate(tmp_path, "sensor", "stop", "echo", "-f", str(project))).strip() == "sensor echo: STOPPED"
    state = storage.get_instigator("echo")
    assert state is not None and state.status == InstigatorStatus.STOPPED and state.cursor == "3"
    storage.dispose()
    for name in [n for n in sys.modules if n.startswith("tidegate_user_code.automation_defs")]:
        del sys.modules[name]
