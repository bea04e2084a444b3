"""Backfills: one run per partition through the run queue, surviving restarts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support import ROOT, TIDEGATE
from tidegate.definitions.loading import CodeLocation
from tidegate.names import RunStatus
from tidegate.scheduler.backfill import BackfillDaemon, cancel_backfill
from tidegate.storage.api import Storage
from tidegate.storage.backfills import BACKFILL_TAG, BackfillStatus

PROJECT = ROOT / "tests" / "projects" / "partition_project.py"
DEFS = CodeLocation(file=str(PROJECT)).load()


def test_the_daemon_keeps_max_concurrent_and_never_submits_twice_across_restarts(storage: Storage) -> None:
    keys = [f"2024-01-0{d}" for d in range(1, 6)]
    backfill = storage.create_backfill("daily_job", keys, max_concurrent=2)
    assert BackfillDaemon(DEFS, storage).tick() == 2
    assert BackfillDaemon(DEFS, storage).tick() == 0  # a restarted beat: two in flight already
    runs = storage.list_runs()
    assert sorted(r.run_key for r in runs) == keys[:2]  # type: ignore[type-var]
    assert all(r.tags[BACKFILL_TAG] == backfill.backfill_id and r.origin == backfill.origin for r in runs)
    storage.cancel_run(runs[0].run_id)  # one ends: room for one more
    assert BackfillDaemon(DEFS, storage).tick() == 1
    assert storage.backfill_progress(storage.get_backfill(backfill.backfill_id)).in_flight == 2
    canceled = cancel_backfill(storage, backfill.backfill_id)
    assert len(canceled) == 2
    assert storage.get_backfill(backfill.backfill_id).status == BackfillStatus.CANCELED
    assert BackfillDaemon(DEFS, storage).tick() == 0


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(TIDEGATE_HOME=str(tmp_path / "home"), TIDEGATE_BROKER_URL="memory://localhost/")
    return subprocess.run([TIDEGATE, *args], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_backfill_cli_runs_a_range_then_the_missing_partitions(tmp_path: Path) -> None:
    first = _run(
        tmp_path,
        "backfill",
        "daily_job",
        "-f",
        str(PROJECT),
        "--from",
        "2024-01-02",
        "--to",
        "2024-01-05",
        "--max-concurrent",
        "2",
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "4/4 done" in first.stdout and "COMPLETED" in first.stdout
    storage = Storage.open(f"sqlite:///{tmp_path / 'home' / 'tidegate.db'}")
    runs = storage.list_runs(limit=50)
    assert sorted(r.tags["tidegate/partition"] for r in runs) == [
        "2024-01-02",
        "2024-01-03",
        "2024-01-04",
        "2024-01-05",
    ]
    assert all(r.status == RunStatus.SUCCESS for r in runs)
    reports = {m.partition_key: m.metadata for m in storage.get_materializations("daily_report")}
    assert reports["2024-01-04"] == {"sales": 4, "partition": "2024-01-04"}

    missing = _run(tmp_path, "assets", "partitions", "daily_report", "-f", str(PROJECT), "--missing")
    assert missing.stdout.split() == [
        "2024-01-01",
        "missing",
        "2024-01-06",
        "missing",
        "2024-01-07",
        "missing",
        "2024-01-08",
        "missing",
        "2024-01-09",
        "missing",
        "2024-01-10",
        "missing",
    ]
    rest = _run(tmp_path, "backfill", "daily_job", "-f", str(PROJECT), "--missing")
    assert rest.returncode == 0, rest.stdout + rest.stderr
    assert "6/6 done" in rest.stdout
    none_left = _run(tmp_path, "backfill", "daily_job", "-f", str(PROJECT), "--missing")
    assert "no partitions to backfill" in none_left.stdout
    listed = _run(tmp_path, "backfill", "list")
    assert listed.stdout.count("COMPLETED") == 2
    bad = _run(tmp_path, "backfill", "daily_job", "-f", str(PROJECT), "--partitions", "2024-02-30")
    assert bad.returncode == 2 and "malformed partition key '2024-02-30'" in bad.stderr
    storage.dispose()
