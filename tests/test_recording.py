"""Recording a step's outcome while the database is away, and the run monitor after an outage,
on SQLite and PostgreSQL.

The database "goes away" for a while: every COMMIT (and on PostgreSQL every autocommitted
round trip of the step path) fails as a lost connection (PostgreSQL) or a lock held too long
(SQLite) would, and the transaction is not committed. The worker must
keep the outcome it computed and record it when the database is back, without running the
asset again; past its bound it leaves the step to the run monitor, which ends it.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import tidegate as tg
from tidegate.config import MonitorConfig
from tidegate.definitions.job import IMPLICIT_ASSET_JOB
from tidegate.names import PARTITION_TAG, RunStatus, StepStatus
from tidegate.scheduler.monitor import RunMonitor
from tidegate.storage import engine as storage_engine
from tidegate.storage.api import Storage
from tidegate.workers import execution
from tidegate.workers.execution import Outcome, StepExecutor
from tidegate.workers.io import FilesystemIOManager

AWAY_SECONDS = 3.0  # longer than the old six quick retries (1.55 s)
away_until = [0.0]  # monotonic time until which every COMMIT fails
away_for = [AWAY_SECONDS]  # how long the database goes away when the asset's body ends
bodies: list[str] = []


@tg.asset
def computed() -> int:
    bodies.append("computed")
    away_until[0] = time.monotonic() + away_for[0]  # the database goes away as the body ends
    return 7


DEFS = tg.Definitions(assets=[computed])


@pytest.fixture(autouse=True)
def _reset() -> None:
    away_until[0] = 0.0
    away_for[0] = AWAY_SECONDS
    bodies.clear()


def database_away(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    real_commit = storage.engine.dialect.do_commit

    def commit(dbapi_connection: object) -> None:
        if time.monotonic() < away_until[0]:
            if storage.dialect == "postgresql":
                import psycopg

                dbapi_connection.dbapi_connection.close()  # type: ignore[attr-defined]
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            raise sqlite3.OperationalError("database is locked")
        real_commit(dbapi_connection)

    monkeypatch.setattr(storage.engine.dialect, "do_commit", commit)
    if storage.dialect == "postgresql":
        # A claim or a success on PostgreSQL is not committed by COMMIT: it is sent in
        # autocommit mode, one implicit transaction ending at the pipeline's Sync. Away, that
        # round trip fails as a lost connection does, before anything is sent.
        import psycopg

        real_run = storage_engine._exchange

        def run(raw: psycopg.Connection, statements: object) -> list[object]:
            if time.monotonic() < away_until[0]:
                raw.close()
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return real_run(raw, statements)  # type: ignore[arg-type]

        monkeypatch.setattr(storage_engine, "_exchange", run)
    monkeypatch.setattr(storage_engine, "RECONNECT_SECONDS", 0.2, raising=False)  # let the executor's own loop show


def started_run(storage: Storage) -> str:
    run_id = storage.submit_run(DEFS.plan(IMPLICIT_ASSET_JOB), origin="test").run_id
    storage.start_run(run_id)
    return run_id


def executor(storage: Storage, tmp_path: Path) -> StepExecutor:
    return StepExecutor(
        defs=DEFS,
        storage=storage,
        publish=lambda refs: None,
        worker_name="w@test",
        heartbeat_seconds=0.1,
        default_io_manager=FilesystemIOManager(tmp_path / "io"),
    )


def test_an_outcome_computed_while_the_database_is_away_is_recorded_when_it_is_back(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = started_run(storage)
    database_away(storage, monkeypatch)
    started = time.monotonic()
    outcome = executor(storage, tmp_path).execute(run_id, "computed", 1)
    assert outcome == Outcome.SUCCEEDED
    assert time.monotonic() - started >= AWAY_SECONDS  # it waited for the database
    assert bodies == ["computed"]  # the asset ran once
    (step,) = storage.get_steps(run_id)
    assert step.status == StepStatus.SUCCEEDED and step.attempt == 1
    assert storage.get_run(run_id).status == RunStatus.SUCCESS


def test_an_outcome_that_cannot_be_recorded_in_time_is_left_to_the_run_monitor(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = started_run(storage)
    database_away(storage, monkeypatch)
    monkeypatch.setattr(execution, "RECORD_OUTCOME_SECONDS", 0.5)
    away_for[0] = 60.0
    assert executor(storage, tmp_path).execute(run_id, "computed", 1) == Outcome.UNRECORDED
    away_until[0] = 0.0
    (step,) = storage.get_steps(run_id)
    assert step.status == StepStatus.RUNNING  # its output is kept; the monitor decides
    assert (tmp_path / "io" / "computed").exists()
    monitor = RunMonitor(storage, lambda refs: None, DEFS, MonitorConfig(worker_lost_retries=0))
    assert monitor.check(now=datetime.now(UTC) + timedelta(hours=1))["lost"] == 1
    assert storage.get_run(run_id).status == RunStatus.FAILURE


def test_a_monitor_that_could_not_look_waits_one_heartbeat_timeout_before_judging(storage: Storage) -> None:
    run_id = started_run(storage)
    assert storage.claim_step(run_id, "computed", 1, "w@test") is not None
    monitor = RunMonitor(storage, lambda refs: None, DEFS, MonitorConfig(heartbeat_timeout_seconds=1.0))
    assert monitor.check()["lost"] == 0
    time.sleep(1.3)  # the monitor is blind longer than the heartbeat timeout (say the database was away)
    back = time.monotonic()
    assert monitor.check()["lost"] == 0  # the worker gets one timeout to beat again
    while monitor.check()["lost"] == 0:  # rounds closer together than the timeout, as in a beat
        assert time.monotonic() - back < 3, "the silent step was never declared lost"
        time.sleep(0.2)
    assert time.monotonic() - back >= 1.0
    (step,) = storage.get_steps(run_id)
    assert step.status == StepStatus.READY and step.attempt == 2  # worker_lost_retries


def test_a_step_whose_failure_the_database_refuses_is_still_ended_by_the_monitor(storage: Storage) -> None:
    """A run whose partition key the database cannot hold (PostgreSQL: varchar(255)) used to
    leave its step RUNNING for ever: the monitor's failure, marking that partition FAILED, was
    refused every round. It now fails the step without partition status, saying why."""
    plan = DEFS.plan(IMPLICIT_ASSET_JOB)
    run_id = storage.submit_run(plan, origin="test", tags={PARTITION_TAG: "p" * 300}).run_id
    storage.start_run(run_id)
    assert storage.claim_step(run_id, "computed", 1, "w@test") is not None
    monitor = RunMonitor(storage, lambda refs: None, None, MonitorConfig(worker_lost_retries=0))
    assert monitor.check(now=datetime.now(UTC) + timedelta(hours=1))["lost"] == 1
    (step,) = storage.get_steps(run_id)
    assert step.status == StepStatus.FAILED
    assert "WorkerLostError" in (step.error or "")
    if storage.dialect == "postgresql":
        assert "recording this failure as usual failed" in (step.error or "")
    assert storage.get_run(run_id).status == RunStatus.FAILURE
