"""Infrastructure errors in the CLI: the database unreachable, the broker unreachable, the disk
full. Each is one line on stderr naming the component and its URL without password, exit code
1 (2 stays for bad input), no traceback unless ``tidegate -v``. A run interrupted by a full
disk is not left STARTED: once there is room again, the run monitor ends it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tests.fault_injection import PrivatePostgres
from tests.support import ROOT, SECRET, TIDEGATE, require_service, tidegate_env
from tidegate.broker import make_celery_app
from tidegate.cli.common import handle_errors
from tidegate.config import MonitorConfig
from tidegate.definitions.loading import CodeLocation
from tidegate.names import RunStatus, StepStatus
from tidegate.scheduler.monitor import RunMonitor
from tidegate.storage.api import Storage

PROJECT = ROOT / "tests" / "projects" / "core_project.py"
DISK_PROJECT = ROOT / "tests" / "projects" / "disk_project.py"


def _tidegate(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TIDEGATE, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_an_unreachable_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env = tidegate_env(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere",
        broker_url="memory://",
        definitions=PROJECT,
        io_dir=tmp_path / "io",
    )
    for argv in (["runs", "list"], ["job", "launch", "big", "-f", str(PROJECT)], ["sensor", "list"]):
        done = _tidegate(env, *argv)
        assert done.returncode == 1, (argv, done.stderr)
        assert done.stderr.startswith("error: database postgresql://postgres:***@127.0.0.1:1/nowhere: "), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert SECRET not in done.stderr
    verbose = _tidegate(env, "-v", "runs", "list")
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr and verbose.stderr.strip().splitlines()[-1].startswith("error: database ")


@pytest.mark.slow
def test_a_wrong_database_password_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """A PostgreSQL server of our own that asks for a password (scram-sha-256)."""
    try:
        server = PrivatePostgres().init(password="the-right-one")
    except RuntimeError as exc:
        require_service("initdb/pg_ctl", str(exc))
    try:
        server.start()
        env = tidegate_env(
            database_url=f"postgresql://postgres@127.0.0.1:{server.port}/postgres",  # SECRET: wrong
            broker_url="memory://",
            definitions=PROJECT,
            io_dir=tmp_path / "io",
        )
        done = _tidegate(env, "runs", "list")
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith(f"error: database postgresql://postgres:***@127.0.0.1:{server.port}/postgres: ")
        assert "password authentication failed" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and SECRET not in done.stderr
    finally:
        server.close()


def test_an_unreachable_broker_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker call that fails (nothing listens on the port) in any command decorated with
    handle_errors: one line naming the broker's safe URL."""
    url = f"redis://default:{SECRET}@127.0.0.1:1/0"
    monkeypatch.setenv("TIDEGATE_BROKER_URL", url)
    app = make_celery_app(url)

    @click.command()
    @handle_errors
    def send() -> None:
        app.send_task("tidegate.nothing", retry=False)

    started = time.monotonic()
    result = CliRunner().invoke(send, [])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: broker redis://default:***@127.0.0.1:1/0: "), result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert time.monotonic() - started < 10


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs: the database lives there, and an asset fills it."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        require_service("a tmpfs mount (needs root)", done.stderr.strip())
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_full_disk_is_one_line_and_the_run_is_ended_once_there_is_room(tmp_path: Path, small_disk: Path) -> None:
    database_url = f"sqlite:///{small_disk / 'tidegate.db'}"
    Storage.open(database_url, upgrade=True).dispose()
    config = tmp_path / "tidegate.toml"
    config.write_text("[run_monitor]\nheartbeat_timeout_seconds = 2\nworker_lost_retries = 0\n")
    filler = small_disk / "filler"
    env = tidegate_env(
        database_url=database_url,
        broker_url="memory://",
        definitions=DISK_PROJECT,
        io_dir=tmp_path / "io",
        TIDEGATE_CONFIG=str(config),
        DISK_FILLER=str(filler),
    )
    done = _tidegate(env, "materialize", "-f", str(DISK_PROJECT), timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: database sqlite:///{small_disk}/tidegate.db: "), done.stderr
    assert "full" in last, last
    assert "Traceback" not in done.stderr, done.stderr

    # Room again before reading: opening the WAL database needs a few bytes for its -shm file,
    # which a full disk refuses ("disk I/O error") when the writer's last close removed it.
    # Nothing writes until the monitor below runs, so the run is as the full disk left it.
    filler.unlink()
    storage = Storage(database_url)
    try:
        (run,) = storage.list_runs()
        assert run.status == RunStatus.STARTED  # nothing could be written: the disk was full
        # the run monitor of the next beat (or launch) ends the run
        monitor = RunMonitor(
            storage,
            lambda refs: None,
            CodeLocation(file=str(DISK_PROJECT)).load(),
            MonitorConfig(heartbeat_timeout_seconds=2, worker_lost_retries=0),
        )
        deadline = time.monotonic() + 30
        while storage.get_run(run.run_id).status == RunStatus.STARTED and time.monotonic() < deadline:
            monitor.check()
            time.sleep(0.5)
        assert storage.get_run(run.run_id).status == RunStatus.FAILURE
        (step,) = storage.get_steps(run.run_id)
        assert step.status == StepStatus.FAILED, step
        assert "full" in (step.error or "") or "WorkerLostError" in (step.error or ""), step.error
    finally:
        storage.dispose()
