"""Backfills: one run per partition through the run queue, surviving restarts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support import ROOT, TIDEGATE
from tidegate.definitions.loading import CodeLocation
from tidegate.names import BACKFILL_TAG, BackfillStatus, RunStatus
from tidegate.scheduler.backfill import BackfillDaemon, cancel_backfill
from tidegate.storage.api import Storage

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


def _run(tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(TIDEGATE_HOME=str(tmp_path / "home"), TIDEGATE_BROKER_URL="memory://localhost/", **(extra_env or {}))
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
    missing_keys = ["2024-01-01", "2024-01-06", "2024-01-07", "2024-01-08", "2024-01-09", "2024-01-10"]
    assert [line.split() for line in missing.stdout.splitlines()] == [[k, "MISSING", "-", "-"] for k in missing_keys]
    listed_assets = _run(tmp_path, "assets", "list", "-f", str(PROJECT))
    counts = {line.split()[0]: line.split("  ")[-1].strip() for line in listed_assets.stdout.splitlines()[1:]}
    assert counts["daily_report"] == "4 materialized, 0 failed, 6 missing of 10"
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


RANGE_PROJECT = ROOT / "tests" / "projects" / "range_project.py"


def test_single_run_backfill_policy_runs_each_contiguous_range_in_one_run(tmp_path: Path) -> None:
    """Two ranges (a gap at 01-05): two runs; each asset sees the range's keys, stores one output
    per partition and is recorded as materialized per partition."""
    result = _run(
        tmp_path,
        "backfill",
        "events_job",
        "-f",
        str(RANGE_PROJECT),
        "--partitions",
        "2024-01-07,2024-01-02,2024-01-03,2024-01-04,2024-01-06",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 run(s) over ranges" in result.stdout and "5/5 done" in result.stdout
    storage = Storage.open(f"sqlite:///{tmp_path / 'home' / 'tidegate.db'}")
    runs = sorted(storage.list_runs(), key=lambda r: r.created_at)
    assert [r.run_key for r in runs] == ["2024-01-02...2024-01-04", "2024-01-06...2024-01-07"]
    assert [(r.tags["tidegate/partition_range_start"], r.tags["tidegate/partition_range_end"]) for r in runs] == [
        ("2024-01-02", "2024-01-04"),
        ("2024-01-06", "2024-01-07"),
    ]
    assert all(r.status == RunStatus.SUCCESS and "tidegate/partition" not in r.tags for r in runs)
    events = storage.get_materializations("events")
    assert sorted(m.partition_key for m in events) == [
        "2024-01-02",
        "2024-01-03",
        "2024-01-04",
        "2024-01-06",
        "2024-01-07",
    ]  # type: ignore[type-var]
    by_partition = {m.partition_key: m.metadata for m in events}
    assert by_partition["2024-01-02"] == by_partition["2024-01-04"]  # one materialization per partition, same step
    assert by_partition["2024-01-02"]["keys"] == ["2024-01-02", "2024-01-03", "2024-01-04"]
    assert by_partition["2024-01-02"]["window_days"] == 3 and by_partition["2024-01-07"]["window_days"] == 2
    totals = {m.partition_key: m.metadata for m in storage.get_materializations("event_totals")}
    assert totals["2024-01-03"] == {"range": "2024-01-02..2024-01-04", "total": 2 + 3 + 4}
    assert totals["2024-01-07"] == {"range": "2024-01-06..2024-01-07", "total": 6 + 7}
    # The range's outputs are stored one per partition: a single-partition run reads one.
    single = _run(
        tmp_path, "job", "launch", "events_job", "-f", str(RANGE_PROJECT), "--partition", "2024-01-03", "--wait"
    )
    assert single.returncode == 0, single.stdout + single.stderr
    assert storage.get_materializations("event_totals")[-1].metadata == {"range": "2024-01-03..2024-01-03", "total": 3}
    storage.dispose()


def test_failed_partitions_are_counted_until_rematerialized(tmp_path: Path) -> None:
    env_fail = {"RANGE_PROJECT_FAIL_ON": "2024-01-03"}
    failing = _run(
        tmp_path,
        "backfill",
        "fragile_job",
        "-f",
        str(RANGE_PROJECT),
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-04",
        extra_env=env_fail,
    )
    assert failing.returncode == 1 and "4/4 done" in failing.stdout and "1 failed" in failing.stdout
    listed = _run(tmp_path, "assets", "list", "-f", str(RANGE_PROJECT))
    line = next(x for x in listed.stdout.splitlines() if x.startswith("fragile"))
    assert line.endswith("3 materialized, 1 failed, 6 missing of 10")
    statuses = _run(tmp_path, "assets", "partitions", "fragile", "-f", str(RANGE_PROJECT), "--missing")
    assert [x.split()[:2] for x in statuses.stdout.splitlines()][:2] == [
        ["2024-01-03", "FAILED"],
        ["2024-01-05", "MISSING"],
    ]
    fixed = _run(tmp_path, "backfill", "fragile_job", "-f", str(RANGE_PROJECT), "--missing")
    assert fixed.returncode == 0 and "7/7 done" in fixed.stdout, fixed.stdout + fixed.stderr
    listed = _run(tmp_path, "assets", "list", "-f", str(RANGE_PROJECT))
    assert next(x for x in listed.stdout.splitlines() if x.startswith("fragile")).endswith(
        "10 materialized, 0 failed, 0 missing of 10"
    )


def test_a_range_run_whose_asset_returns_too_few_partitions_fails_and_stores_nothing(tmp_path: Path) -> None:
    result = _run(
        tmp_path, "backfill", "lopsided_job", "-f", str(RANGE_PROJECT), "--from", "2024-01-01", "--to", "2024-01-03"
    )
    assert result.returncode == 1 and "3 failed" in result.stdout, result.stdout + result.stderr
    storage = Storage.open(f"sqlite:///{tmp_path / 'home' / 'tidegate.db'}")
    (run,) = storage.list_runs()
    assert run.status == RunStatus.FAILURE
    (step,) = storage.get_steps(run.run_id)
    assert "a run over partitions 2024-01-01..2024-01-03 must return a dict with one value per partition (3 keys)" in (
        step.error or ""
    )
    assert storage.get_materializations("lopsided") == []
    assert storage.partition_statuses("lopsided").keys() == {"2024-01-01", "2024-01-02", "2024-01-03"}
    assert {status for status, _, _ in storage.partition_statuses("lopsided").values()} == {"FAILED"}
    storage.dispose()
