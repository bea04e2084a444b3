"""Partitions on real processes: the seed's dynamic-partition sensor and a 30-partition backfill,
each with a real ``tidegate beat`` SIGKILLed and restarted midway, and real ``tidegate worker``
processes over Redis and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support import ROOT, TIDEGATE, WorkerProcess, start_worker, stop_workers, tidegate_env, truncate_all
from tidegate.names import BackfillStatus, RunStatus
from tidegate.storage.api import Storage

PROJECT = ROOT / "tests" / "projects" / "seed_partitions_project.py"

pytestmark = pytest.mark.slow


class Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.beats: list[subprocess.Popen[bytes]] = []
        self.workers: list[WorkerProcess] = []

    def beat(self, name: str) -> subprocess.Popen[bytes]:
        argv = [TIDEGATE, "-v", "beat", "-f", str(PROJECT), "--lease-seconds", "1"]
        with (self.logs / f"beat-{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        self.beats.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def logs_text(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(self.logs.glob("*.log"))
        )


@pytest.fixture
def processes(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[tuple[Processes, Storage]]:
    truncate_all(pg_url)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    env = tidegate_env(
        database_url=pg_url, broker_url=redis_url, definitions=PROJECT, io_dir=tmp_path / "io", SEED_INBOX=str(inbox)
    )
    procs = Processes(env, tmp_path)
    storage = Storage.open(pg_url, upgrade=True)
    procs.workers = [
        start_worker(env, name=f"w{i}", log_dir=tmp_path, concurrency=2)
        for i in (1, 2)  # 4 slots in all
    ]
    try:
        yield procs, storage
    finally:
        for beat in procs.beats:
            procs.kill(beat)
        stop_workers(procs.workers)
        storage.dispose()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, procs: Processes) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{procs.logs_text()}")


def test_seed_dynamic_partition_sensor_on_real_workers_across_a_beat_restart(
    processes: tuple[Processes, Storage], tmp_path: Path
) -> None:
    procs, storage = processes
    inbox = tmp_path / "inbox"

    def drop(name: str, rows: int) -> None:
        staged = tmp_path / f".{name}"
        staged.write_text("".join(f"{name}-row{i}\n" for i in range(rows)))
        staged.rename(inbox / name)  # lands whole

    def succeeded() -> int:
        return sum(r.status == RunStatus.SUCCESS for r in storage.list_runs(limit=100))

    for i in range(3):
        drop(f"orders_{i}.csv", i + 1)
    beat = procs.beat("first")
    wait_for(lambda: succeeded() == 3, 60, "the first three files' runs", procs)
    procs.kill(beat)  # SIGKILL: whatever tick was in flight is lost or committed whole
    for i in range(3, 6):
        drop(f"orders_{i}.csv", i + 1)
    procs.beat("second")
    wait_for(lambda: succeeded() == 6, 60, "all six files' runs", procs)
    time.sleep(1.0)  # more ticks of the restarted beat: nothing may be requested again

    files = sorted(p.name for p in inbox.iterdir())
    assert sorted(storage.dynamic_partition_keys("source_files")) == files
    runs = storage.list_runs(limit=100)
    assert Counter(r.run_key for r in runs) == Counter(dict.fromkeys(files, 1))  # each file once
    assert all(r.tags["tidegate/partition"] == r.run_key and r.status == RunStatus.SUCCESS for r in runs)
    materialized = {m.partition_key: m.metadata for m in storage.get_materializations("import_file")}
    assert materialized == {f"orders_{i}.csv": {"rows": i + 1, "first": f"orders_{i}.csv-row0"} for i in range(6)}
    assert {s.worker.split("@")[0] for r in runs for s in storage.get_steps(r.run_id) if s.worker} <= {"w1", "w2"}


def test_backfill_of_30_partitions_keeps_3_in_flight_and_resumes_after_the_beat_is_killed(
    processes: tuple[Processes, Storage], tmp_path: Path
) -> None:
    procs, storage = processes
    created = subprocess.run(
        [
            TIDEGATE,
            "backfill",
            "daily_job",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-30",
            "--max-concurrent",
            "3",
            "--no-wait",
        ],
        env=procs.env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    backfill = storage.list_backfills()[0]
    assert len(backfill.partition_keys) == 30

    def done() -> int:
        return storage.backfill_progress(storage.get_backfill(backfill.backfill_id)).done

    beat = procs.beat("first")
    wait_for(lambda: done() >= 8, 90, "8 partitions done", procs)
    procs.kill(beat)
    killed_at = done()
    assert killed_at < 30
    procs.beat("second")
    wait_for(
        lambda: storage.get_backfill(backfill.backfill_id).status == BackfillStatus.COMPLETED, 120, "completion", procs
    )

    runs = storage.list_runs(limit=100)
    assert sorted(r.run_key for r in runs) == sorted(backfill.partition_keys)  # type: ignore[type-var]
    assert all(r.status == RunStatus.SUCCESS for r in runs)
    # Never more than 3 runs between start and end at any instant (runs are STARTED by the
    # launcher when the backfill submitted them within its limit).
    edges = sorted(
        [(_aware(r.started_at), 1) for r in runs if r.started_at]
        + [(_aware(r.ended_at), -1) for r in runs if r.ended_at]
    )
    assert len(edges) == 60
    in_flight = peak = 0
    for _, step in edges:
        in_flight += step
        peak = max(peak, in_flight)
    assert 2 <= peak <= 3, peak
    materialized = storage.get_materializations("daily_extract")
    assert sorted(m.partition_key for m in materialized) == sorted(backfill.partition_keys)  # type: ignore[type-var]
    workers = {s.worker.split("@")[0] for r in runs for s in storage.get_steps(r.run_id) if s.worker}
    assert workers == {"w1", "w2"}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
