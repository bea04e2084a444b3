"""Outages of the broker and the database, on real processes: a private ``redis-server``
frozen with SIGSTOP, a private PostgreSQL cluster stopped and started again, while a real
``tidegate beat`` with a 1 s sensor and real ``tidegate worker`` processes run.

What must hold: the beat keeps committing ticks and runs while the broker is away (the steps
wait READY in SQL, the outbox) and publishes them when it is back; ``tidegate job launch``
returns; once the outage ends every run finishes, none twice, and no step body runs twice.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.fault_injection import Cluster, PrivatePostgres, PrivateRedis, tick_gaps, utcnow
from tests.support import ROOT, TIDEGATE, dedicated_pg_database, require_service
from tidegate.names import RunStatus, TickStatus
from tidegate.storage.schema import runs

OUTAGE_PROJECT = str(ROOT / "tests" / "projects" / "outage_project.py")
FAULT_PROJECT = str(ROOT / "tests" / "projects" / "fault_project.py")
SENSOR = "every_second"
BROKER_FROZEN_SECONDS = 15.0


def run_ids(cluster: Cluster) -> list[str]:
    with cluster.storage.engine.connect() as conn:
        return list(conn.execute(select(runs.c.run_id).order_by(runs.c.created_at)).scalars())


def sensor_ticks(cluster: Cluster) -> int:
    return len(cluster.storage.get_ticks(SENSOR, limit=10_000, status=TickStatus.SUCCESS))


def wait_for(predicate: object, timeout: float, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen after {timeout}s\n{cluster.describe()}")
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_frozen_broker_stops_neither_the_beat_nor_launches(tmp_path: Path, private_redis: PrivateRedis) -> None:
    with dedicated_pg_database("tidegate_broker_outage") as database_url:
        cluster = Cluster(database_url, private_redis.url, tmp_path / "cluster", definitions=OUTAGE_PROJECT)
        cluster.step_seconds = 0.2
        cluster.env["FAULT_PROJECT_STEP_SECONDS"] = "0.2"
        try:
            cluster.start(workers=1)
            wait_for(
                lambda: any(r.status == RunStatus.SUCCESS for r in cluster.run_records(run_ids(cluster)).values()),
                60,
                "a first successful run",
                cluster,
            )
            ticks_before, runs_before = sensor_ticks(cluster), len(run_ids(cluster))
            private_redis.freeze()
            frozen_at, frozen_at_utc = time.monotonic(), utcnow()
            launch = subprocess.run(
                [TIDEGATE, "job", "launch", "victim_job", "-f", FAULT_PROJECT],
                env=cluster.env,
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
            )
            launch_seconds = time.monotonic() - frozen_at
            time.sleep(max(0.0, BROKER_FROZEN_SECONDS - (time.monotonic() - frozen_at)))
            ticks_during = sensor_ticks(cluster) - ticks_before
            runs_during = len(run_ids(cluster)) - runs_before
            _, longest_gap = tick_gaps(cluster, SENSOR, frozen_at_utc, utcnow())
            private_redis.thaw()

            assert launch.returncode == 0, launch.stderr
            assert launch_seconds < 10, f"job launch took {launch_seconds:.1f}s with the broker frozen"
            assert "unreachable" in launch.stderr and "queued" in launch.stderr, launch.stderr
            assert "Traceback" not in launch.stderr, launch.stderr
            # A 1 s sensor: at least one tick (and run) every 2 s during the outage.
            due = BROKER_FROZEN_SECONDS / 2
            assert ticks_during >= due, f"{ticks_during} ticks in {BROKER_FROZEN_SECONDS}s\n{cluster.describe()}"
            assert runs_during >= due, f"{runs_during} runs in {BROKER_FROZEN_SECONDS}s"
            # At most one broker timeout (1.5 s) per 5 s stalls the beat (1.6 s measured).
            assert longest_gap < 4.0, f"the 1 s sensor waited {longest_gap:.1f}s between two ticks"

            everything = run_ids(cluster)
            assert cluster.wait_ended(everything, timeout=90), cluster.describe(everything)
            statuses = {r: rec.status for r, rec in cluster.run_records(everything).items()}
            assert set(statuses.values()) == {RunStatus.SUCCESS}, statuses
            assert cluster.duplicated_successes(everything) == []
            ran_twice = {
                f"{step.step_key} of {run_id}": cluster.executions(step.asset_key, run_id)
                for run_id in everything
                for step in cluster.storage.get_steps(run_id)
                if len(cluster.executions(step.asset_key, run_id)) != 1
            }
            assert ran_twice == {}, ran_twice
        finally:
            cluster.close()


DATABASE_DOWN_SECONDS = 5.0
OUTAGE_LONGER_THAN_RECONNECT = 15.0  # writes reconnect for 10 s (RECONNECT_SECONDS)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    try:
        server = PrivatePostgres().init()
    except RuntimeError as exc:
        require_service("initdb/pg_ctl", str(exc))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_database_restart_with_runs_in_flight_reruns_nothing(
    tmp_path: Path, private_postgres: PrivatePostgres, redis_url: str
) -> None:
    """PostgreSQL stopped for 5 s while two workers run steps: deliveries that cannot reach the
    database are re-queued, outcomes computed meanwhile are recorded when it is back, and no
    step body runs twice (no worker died); nothing waits for the 600 s re-send timeout."""
    database_url = private_postgres.create_database("tidegate")
    cluster = Cluster(database_url, redis_url, tmp_path / "cluster", step_seconds=2.0)
    try:
        cluster.start(workers=2)
        submitted = [cluster.submit("victim_job") for _ in range(4)]
        cluster.running_pid("victim", submitted[0])
        private_postgres.stop()
        stopped_at = time.monotonic()
        time.sleep(DATABASE_DOWN_SECONDS)
        private_postgres.start()
        ended = cluster.wait_ended(submitted, timeout=90)
        recovery = time.monotonic() - stopped_at
        assert ended, cluster.describe(submitted)
        statuses = {r: rec.status for r, rec in cluster.run_records(submitted).items()}
        assert set(statuses.values()) == {RunStatus.SUCCESS}, f"{statuses}\n{cluster.describe(submitted)}"
        assert cluster.duplicated_successes(submitted) == []
        ran_twice = {
            f"{step.step_key} of {run_id}": cluster.executions(step.asset_key, run_id)
            for run_id in submitted
            for step in cluster.storage.get_steps(run_id)
            if len(cluster.executions(step.asset_key, run_id)) != 1
        }
        assert ran_twice == {}, f"{ran_twice}\n{cluster.describe(submitted)}"
        assert all(p.alive() for p in cluster.processes()), cluster.describe(submitted)
        assert recovery < 60, f"runs ended {recovery:.0f}s after the database stopped"
    finally:
        cluster.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_step_delivered_while_the_database_is_away_is_delivered_again_later(
    tmp_path: Path, private_postgres: PrivatePostgres, redis_url: str
) -> None:
    """No beat: the test starts a run in SQL, stops PostgreSQL, then sends the root step to
    Redis as a publisher would. The worker's claim cannot reach the database for longer than
    writes reconnect (10 s): the task goes back to the broker with a countdown instead of being
    dropped (which left the step ENQUEUED until the 600 s re-send), and runs once it is back."""
    from tests.fault_injection import DEFS
    from tidegate.broker import CeleryPublisher, make_celery_app
    from tidegate.storage.records import StepRef

    database_url = private_postgres.create_database("tidegate")
    cluster = Cluster(database_url, redis_url, tmp_path / "cluster", step_seconds=0.2)
    try:
        cluster.start_workers(1)
        run_id = cluster.storage.submit_run(DEFS.plan("victim_job"), origin="test").run_id
        (root,) = cluster.storage.start_run(run_id)
        private_postgres.stop()
        stopped_at = time.monotonic()
        app = make_celery_app(redis_url)
        sent: list[StepRef] = []

        class _Unmarked:  # the database is down: the publisher cannot mark the step ENQUEUED
            def mark_enqueued(self, refs: list[StepRef]) -> None:
                sent.extend(refs)

        CeleryPublisher(app, _Unmarked())([root])  # type: ignore[arg-type]
        assert sent == [root]
        (worker,) = cluster.workers.values()
        deadline = time.monotonic() + 40
        while "delivering again" not in worker.log():
            assert time.monotonic() < deadline, worker.tail(60)
            time.sleep(0.1)
        time.sleep(max(0.0, OUTAGE_LONGER_THAN_RECONNECT - (time.monotonic() - stopped_at)))
        private_postgres.start()
        assert cluster.wait_ended([run_id], timeout=60), cluster.describe([run_id])
        assert time.monotonic() - stopped_at < 60
        assert cluster.storage.get_run(run_id).status == RunStatus.SUCCESS
        for step in cluster.storage.get_steps(run_id):
            assert len(cluster.executions(step.asset_key, run_id)) == 1, step
    finally:
        cluster.close()
