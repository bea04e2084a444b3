"""Surviving faults, on real processes: ``tidegate worker`` (prefork), ``tidegate beat``, Redis
and PostgreSQL. Each fault is injected ``FAULT_TRIALS`` times (default 2) while a step sleeps
mid-run; after each trial every submitted run must have ended as expected (SUCCESS, or
FAILURE where the fault must fail it), no step may be recorded SUCCEEDED twice (STEP_SUCCESS
events and materializations) and, at the end, no run or step may be left unfinished.

The machinery (processes, fault injection, measurements) is in tests/fault_injection.py and is
shared with bench/faults.py. Workers heartbeat every 0.5 s; ``tidegate.toml`` (TIDEGATE_CONFIG)
sets the monitor's heartbeat timeout to 3 s. The shared Redis server is used on db 8 (flushed),
PostgreSQL in a database of its own, ``tidegate_faults``, whose connections the database fault
terminates.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fault_injection import (
    WITHOUT_GONE_JOB,
    Cluster,
    PrivateRedis,
    Scenario,
    trial_database_dropped,
    trial_kill_pool_child,
    trial_kill_worker,
    trial_redis_restart,
    trial_removed_job,
    trial_stalled_heartbeat,
)
from tests.support import PG_ADMIN_URL, REDIS_HOST, REDIS_PORT, require_service

TRIALS = int(os.environ.get("FAULT_TRIALS", "2"))
DEADLINE = 30.0  # per trial: recovery takes about 3 s of heartbeat timeout + the step's re-run
# Shared by every session unless set: sessions running this module at once break each other.
FAULTS_DB = os.environ.get("TIDEGATE_TEST_FAULTS_DB", "tidegate_faults")
FAULTS_REDIS_DB = int(os.environ.get("TIDEGATE_TEST_FAULTS_REDIS_DB", "8"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60 + TRIALS * 2 * (DEADLINE + 15))]


@pytest.fixture(scope="session")
def faults_database(pg_url: str) -> str:
    """A database of its own: the database fault terminates every connection to it."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (FAULTS_DB,)).fetchone():
            conn.execute(f'CREATE DATABASE "{FAULTS_DB}"')
    return pg_url.rsplit("/", 1)[0] + f"/{FAULTS_DB}"


@pytest.fixture(scope="session")
def faults_redis_url() -> str:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=FAULTS_REDIS_DB, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        require_service("Redis", f"{REDIS_HOST}:{REDIS_PORT}: {exc}")
    finally:
        client.close()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{FAULTS_REDIS_DB}"


@pytest.fixture
def cluster_factory(faults_database: str, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(broker_url: str, **kwargs: object) -> Cluster:
        cluster = Cluster(faults_database, broker_url, tmp_path / f"cluster{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster.start()

    yield make
    for cluster in made:
        cluster.close()


@pytest.fixture
def cluster(cluster_factory: Callable[..., Cluster], faults_redis_url: str) -> Cluster:
    return cluster_factory(faults_redis_url)


def survive(cluster: Cluster, scenario: Scenario, trials: int = TRIALS) -> None:
    """Inject the fault ``trials`` times; every trial must meet every guarantee."""
    for number in range(1, trials + 1):
        trial = scenario(cluster, DEADLINE)
        completed, submitted, duplicated = trial.completed, trial.submitted, trial.duplicated
        assert completed == submitted, f"trial {number}: {trial.report()}"
        assert duplicated == [], f"trial {number}: {trial.report()}"
        assert trial.failures == [], f"trial {number}: {trial.report()}"
    assert cluster.unfinished() == [], cluster.describe()


def test_sigkill_of_a_pool_child_mid_step_reruns_the_step(cluster: Cluster) -> None:
    survive(cluster, trial_kill_pool_child)


def test_sigkill_of_a_whole_worker_mid_step_reruns_the_step_on_another(cluster: Cluster) -> None:
    survive(cluster, trial_kill_worker)


def test_a_step_whose_heartbeat_stops_is_retried_under_its_retry_policy(cluster: Cluster) -> None:
    survive(cluster, trial_stalled_heartbeat("guarded_job"))


def test_a_step_whose_heartbeat_stops_without_retries_left_fails(cluster: Cluster) -> None:
    survive(cluster, trial_stalled_heartbeat("fragile_job"))


def test_redis_restarted_empty_loses_no_run(
    cluster_factory: Callable[..., Cluster], private_redis: PrivateRedis
) -> None:
    # One slot per worker: with three runs in flight, some steps wait on Redis when it dies.
    cluster = cluster_factory(private_redis.url, concurrency=1)
    survive(cluster, trial_redis_restart(private_redis))


def test_dropped_database_connections_are_reopened(cluster: Cluster) -> None:
    survive(cluster, trial_database_dropped)


def test_a_run_of_a_job_removed_from_the_code_fails_clearly(
    cluster_factory: Callable[..., Cluster], faults_redis_url: str
) -> None:
    cluster = cluster_factory(faults_redis_url, definitions=WITHOUT_GONE_JOB)
    survive(cluster, trial_removed_job)
