"""The `tidegate` command line, run as real processes on the embedded defaults."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support import ROOT, TIDEGATE
from tidegate.names import RunStatus
from tidegate.storage import migrate
from tidegate.storage.api import Storage

PROJECT = ROOT / "tests" / "projects" / "core_project.py"
EXAMPLE = ROOT / "examples" / "etl" / "definitions.py"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(
        TIDEGATE_HOME=str(tmp_path / "home"),
        TIDEGATE_BROKER_URL="memory://localhost/",
        TIDEGATE_TEST_EFFECTS=str(tmp_path / "effects"),
        **extra,
    )
    return env


def _tidegate(tmp_path: Path, *args: str, timeout: float = 90, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIDEGATE, *args], env=_env(tmp_path, **extra), capture_output=True, text=True, timeout=timeout, cwd=tmp_path
    )


def _storage(tmp_path: Path) -> Storage:
    return Storage.open(f"sqlite:///{tmp_path / 'home' / 'tidegate.db'}")


def test_materialize_a_selection_succeeds_with_exit_code_zero(tmp_path: Path) -> None:
    missing = _tidegate(tmp_path, "materialize", "-f", str(PROJECT), "--select", "joined+")
    assert missing.returncode == 1  # joined's inputs were never materialized
    assert "has no stored output" in missing.stdout

    upstream = _tidegate(tmp_path, "materialize", "-f", str(PROJECT), "--select", "*joined")
    assert upstream.returncode == 0, upstream.stdout + upstream.stderr
    result = _tidegate(tmp_path, "materialize", "-f", str(PROJECT), "--select", "joined+")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    storage = _storage(tmp_path)
    run = storage.list_runs()[0]
    assert run.status == RunStatus.SUCCESS
    assert sorted(s.step_key for s in storage.get_steps(run.run_id)) == sorted(
        ["joined", "fan_0", "fan_1", "fan_2", "fan_3", "fan_4", "summary"]
    )
    summary = storage.get_materializations("summary")[-1]
    assert summary.metadata == {"sum": 45, "count": 10}  # read left and right from the first run
    storage.dispose()


def test_materialize_fails_with_exit_code_one_and_shows_the_error(tmp_path: Path) -> None:
    result = _tidegate(tmp_path, "job", "launch", "failing_job", "-f", str(PROJECT), "--wait")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILURE" in result.stdout
    assert "warehouse unreachable (attempt 3)" in result.stdout
    listed = _tidegate(tmp_path, "runs", "list", "--status", "FAILURE")
    assert "failing_job" in listed.stdout


def test_run_key_makes_a_second_launch_a_no_op(tmp_path: Path) -> None:
    first = _tidegate(tmp_path, "job", "launch", "once_job", "-f", str(PROJECT), "--run-key", "k1", "--wait")
    second = _tidegate(tmp_path, "job", "launch", "once_job", "-f", str(PROJECT), "--run-key", "k1", "--wait")
    assert first.returncode == 0 and second.returncode == 0, second.stdout + second.stderr
    assert "already exists" in second.stdout
    assert len((tmp_path / "effects" / "once.log").read_text().splitlines()) == 1


def test_invalid_definitions_give_one_clear_line_and_exit_two(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text(
        "import tidegate as tg\n"
        "@tg.asset\ndef a(c): return 1\n"
        "@tg.asset\ndef b(a): return 1\n"
        "@tg.asset\ndef c(b): return 1\n"
        "defs = tg.Definitions(assets=[a, b, c])\n"
    )
    result = _tidegate(tmp_path, "materialize", "-f", str(broken))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: asset 'a': dependency cycle a -> b -> c -> a"
    unknown = _tidegate(tmp_path, "job", "launch", "nope", "-f", str(PROJECT))
    assert unknown.returncode == 2
    assert "job 'nope': not defined in the loaded code" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_db_upgrade_and_assets_list(tmp_path: Path) -> None:
    upgraded = _tidegate(tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0 and f"at revision {migrate.head_revision()}" in upgraded.stdout
    before = _tidegate(tmp_path, "assets", "list", "-f", str(EXAMPLE))
    assert "sales_report" in before.stdout and "never" in before.stdout
    launched = _tidegate(tmp_path, "job", "launch", "etl_job", "-f", str(EXAMPLE), "--wait")
    assert launched.returncode == 0, launched.stdout + launched.stderr
    after = _tidegate(tmp_path, "assets", "list", "-f", str(EXAMPLE))
    line = next(x for x in after.stdout.splitlines() if x.startswith("sales_report"))
    assert "never" not in line
    reports = list((tmp_path / ".tidegate" / "reports").glob("sales_report_*.md"))
    assert len(reports) == 1
    text = reports[0].read_text()
    assert "- north: 229.70 EUR" in text  # Alder Bakery 120.50 + 45.00, Elm Pharmacy 64.20
    assert "- unknown: 10.00 EUR" in text


def test_dev_runs_queued_runs_until_stopped(tmp_path: Path) -> None:
    env = _env(tmp_path)
    dev = subprocess.Popen(
        [TIDEGATE, "dev", "-f", str(PROJECT), "--threads", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    status = None
    try:
        queued = _tidegate(tmp_path, "job", "launch", "big_job", "-f", str(PROJECT))
        assert queued.returncode == 0 and "queued" in queued.stdout, queued.stdout + queued.stderr
        storage = _storage(tmp_path)
        run_id = storage.list_runs()[0].run_id
        deadline = time.monotonic() + 60
        while storage.get_run(run_id).status not in RunStatus.TERMINAL and time.monotonic() < deadline:
            time.sleep(0.2)
        status = storage.get_run(run_id).status
        storage.dispose()
    finally:
        dev.send_signal(signal.SIGINT)
        output, _ = dev.communicate(timeout=60)
    assert status == RunStatus.SUCCESS, f"run {status}; tidegate dev (rc {dev.returncode}) said:\n{output}"
    assert dev.returncode == 0, output
    assert "tidegate dev" in output
