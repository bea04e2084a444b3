"""Dagster's own ``DagsterGraphQLClient`` (from the dagster-graphql package) against /graphql of
a real ``tidegate webserver`` process, with a real beat and worker on PostgreSQL and Redis: it
submits a job and reads its status until SUCCESS, reloads the code location, and gets the
errors it knows for a token whose role is too low or no token at all."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    ROOT,
    TIDEGATE,
    WorkerProcess,
    free_port,
    require_service,
    spawn_process,
    start_worker,
    stop_process,
    tidegate_env,
    truncate_all,
    wait_http_ok,
)
from tidegate.names import Role, RunStatus, StepStatus
from tidegate.storage.api import Storage
from tidegate.storage.run_search import RunFilter

PROJECT = ROOT / "tests" / "projects" / "graphql_project.py"
LOCATION = PROJECT.name

pytestmark = [
    pytest.mark.slow,
    # dagster-graphql's client calls gql 4's execute(variable_values=...), which gql deprecates:
    # their warning, not ours, raised by every call the client makes.
    pytest.mark.filterwarnings("ignore:Using variable_values and operation_name:DeprecationWarning"),
]


@dataclass
class Deployment:
    storage: Storage
    port: int
    tokens: dict[Role, str]
    logs: Path

    def client(self, role: Role | None) -> Any:
        from dagster_graphql import DagsterGraphQLClient

        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role is not None else None
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, headers=headers, timeout=30)

    def logs_text(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(self.logs.glob("*.log"))
        )


@pytest.fixture
def deployment(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Deployment]:
    try:
        import dagster_graphql  # noqa: F401
    except ImportError:
        require_service("dagster-graphql", "not installed (pip install -e '.[dev]')")
    truncate_all(pg_url)
    storage = Storage.open(pg_url, upgrade=True)
    tokens = {role: storage.create_token(f"gql-{role.value}", role).token for role in Role}
    env = tidegate_env(database_url=pg_url, broker_url=redis_url, definitions=PROJECT, io_dir=tmp_path / "io")
    port = free_port()
    web_log = tmp_path / "webserver.log"
    procs = [
        spawn_process([TIDEGATE, "-v", "beat", "-f", str(PROJECT), "--lease-seconds", "2"], env, tmp_path / "beat.log"),
        spawn_process([TIDEGATE, "webserver", "-f", str(PROJECT), "--port", str(port)], env, web_log),
    ]
    worker: WorkerProcess | None = None
    try:
        worker = start_worker(env, name="gql", log_dir=tmp_path, concurrency=1)
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", procs[1], web_log)
        yield Deployment(storage, port, tokens, tmp_path)
    finally:
        for proc in procs:
            stop_process(proc)
        if worker is not None:
            worker.stop()
        storage.dispose()


def test_dagster_graphql_client_launches_and_follows_a_run(deployment: Deployment) -> None:
    from dagster import DagsterRunStatus
    from dagster_graphql import DagsterGraphQLClientError, ReloadRepositoryLocationStatus

    launcher = deployment.client(Role.LAUNCHER)
    run_id = launcher.submit_job_execution("orders_job", tags={"team": "sales"})
    assert deployment.storage.get_run(run_id).tags["team"] == "sales"

    deadline = time.monotonic() + 90
    status = launcher.get_run_status(run_id)
    while status not in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
        assert time.monotonic() < deadline, f"run {run_id} still {status}:\n{deployment.logs_text()}"
        time.sleep(0.3)
        status = launcher.get_run_status(run_id)
    assert status == DagsterRunStatus.SUCCESS, deployment.logs_text()
    assert deployment.storage.get_run(run_id).status == RunStatus.SUCCESS
    assert {s.status for s in deployment.storage.get_steps(run_id)} == {StepStatus.SUCCEEDED}

    admin = deployment.client(Role.ADMIN)
    assert admin.reload_repository_location(LOCATION).status == ReloadRepositoryLocationStatus.SUCCESS
    unknown = admin.reload_repository_location("elsewhere.py")
    assert unknown.failure_type == "RepositoryLocationNotFound"
    with pytest.raises(DagsterGraphQLClientError) as low_role:
        deployment.client(Role.VIEWER).submit_job_execution("orders_job")
    assert low_role.value.args[0] == "UnauthorizedError"
    with pytest.raises(DagsterGraphQLClientError) as bad_config:
        launcher.submit_job_execution("orders_job", run_config={"ops": {"orders": {"config": {"n": 1}}}})
    assert bad_config.value.args[0] == "RunConfigValidationInvalid"
    configured = launcher.submit_job_execution(
        "discount_job", run_config={"ops": {"discount": {"config": {"rate": 0.25}}}}
    )
    assert deployment.storage.get_run(configured).run_config == {"ops": {"discount": {"config": {"rate": 0.25}}}}
    with pytest.raises(DagsterGraphQLClientError) as missing:
        launcher.submit_job_execution("discount_job", run_config={"ops": {"discount": {"config": {"label": "x"}}}})
    assert missing.value.args[0] == "RunConfigValidationInvalid" and "'rate'" in str(missing.value.args[1])
    with pytest.raises(DagsterGraphQLClientError) as no_token:
        deployment.client(None).get_run_status(run_id)
    assert "401" in str(no_token.value)
    assert {r.run_id for r in deployment.storage.search_runs(RunFilter())} == {run_id, configured}  # no other run
