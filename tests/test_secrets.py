"""No command prints a password: every command a user runs, with credentials in the database
URL (PostgreSQL), the broker URL (Redis) and Flower's basic auth, its output grepped for them.

PostgreSQL's trust auth and Redis's passwordless ``default`` user accept any password, so the
URLs work as they would with a real one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, SECRET, TIDEGATE, WorkerProcess, dedicated_pg_database, tidegate_env

PROJECT = ROOT / "tests" / "projects" / "core_project.py"


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    with dedicated_pg_database("tidegate_secrets") as url:
        environment = tidegate_env(
            database_url=url,
            broker_url=redis_url,
            definitions=PROJECT,
            io_dir=tmp_path / "io",
            TIDEGATE_TEST_EFFECTS=str(tmp_path / "effects"),
            TIDEGATE_FLOWER_BASIC_AUTH=f"operator:{SECRET}",
        )
        assert f":{SECRET}@" in environment["TIDEGATE_DATABASE_URL"]
        assert f":{SECRET}@" in environment["TIDEGATE_BROKER_URL"]
        yield environment


def _run(env: dict[str, str], *args: str, expect: int = 0) -> str:
    result = subprocess.run(
        [TIDEGATE, *args], env=env, capture_output=True, text=True, timeout=120, cwd=Path(env["TIDEGATE_HOME"]).parent
    )
    output = result.stdout + result.stderr
    assert result.returncode == expect, f"{args}: exit {result.returncode}\n{output}"
    assert SECRET not in output, f"tidegate {' '.join(args)} printed the password:\n{output}"
    return output


def _run_until(env: dict[str, str], args: list[str], ready: str, linger: float, log_path: Path) -> str:
    """Start a long-running command, wait for ``ready`` in its output, let it work a little,
    stop it as Ctrl-C would and return everything it printed."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [TIDEGATE, *args], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while ready not in log_path.read_text(errors="replace"):
            assert process.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, f"no {ready!r} in:\n{log_path.read_text(errors='replace')}"
            time.sleep(0.1)
        time.sleep(linger)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    output = log_path.read_text(errors="replace")
    assert SECRET not in output, f"tidegate {' '.join(args)} printed the password:\n{output}"
    return output


def test_no_command_prints_a_password(
    env: dict[str, str], tmp_path: Path, worker_factory: Callable[..., WorkerProcess]
) -> None:
    upgraded = _run(env, "db", "upgrade")
    assert f"postgresql+psycopg://postgres:***@127.0.0.1:5432/tidegate_secrets_{os.getpid()}" in upgraded

    worker = worker_factory(env, name="secretive", concurrency=1)
    banner = worker.log()
    assert ".> tidegate " in banner and "transport:" in banner
    assert SECRET not in banner

    launched = _run(env, "job", "launch", "once_job", "-f", str(PROJECT), "--wait")
    assert "SUCCESS" in launched
    assert "SUCCESS" in _run(env, "materialize", "-f", str(PROJECT), "--select", "light_a")
    runs = _run(env, "runs", "list")
    run_id = runs.splitlines()[1].split()[0]
    assert "once_job" in runs
    assert "light_a" in _run(env, "runs", "show", run_id[:8])
    assert SECRET not in _run(env, "runs", "list", "--json")
    assert "once" in _run(env, "assets", "list", "-f", str(PROJECT))
    assert "run(s) in progress" in _run(env, "queue")
    _run(env, "pool", "list")
    _run(env, "schedule", "list", "-f", str(PROJECT))
    _run(env, "sensor", "list", "-f", str(PROJECT))
    _run(env, "backfill", "list")
    _run(env, "ticks", "nothing")
    assert "ffffffff" in _run(env, "runs", "show", "ffffffff", expect=2)

    beat = _run_until(env, ["-v", "beat", "-f", str(PROJECT)], "tidegate", 3.0, tmp_path / "beat.log")
    assert "tidegate.beat: beat " in beat, beat

    dev = _run_until(
        env, ["dev", "-f", str(PROJECT), "--threads", "1"], "queue runs from another shell", 1.0, tmp_path / "dev.log"
    )
    assert "database postgresql://postgres:***@127.0.0.1:5432/" in dev
    assert "broker   redis://default:***@127.0.0.1:6379/" in dev

    no_auth = {k: v for k, v in env.items() if k != "TIDEGATE_FLOWER_BASIC_AUTH"}
    assert "no authentication configured" in _run(no_auth, "flower", expect=2)
    malformed = {**env, "TIDEGATE_FLOWER_BASIC_AUTH": f"operator:{SECRET},nopassword"}
    assert "credential 2 is not user:password" in _run(malformed, "flower", expect=2)

    unreachable = {**env, "TIDEGATE_DATABASE_URL": f"postgresql://postgres:{SECRET}@127.0.0.1:1/nowhere"}
    refused = _run(unreachable, "runs", "list", expect=1)
    assert refused.startswith("error: database postgresql://postgres:***@127.0.0.1:1/nowhere: ")
    assert "Traceback" not in refused
