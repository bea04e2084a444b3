"""The REST API on real processes: ``tidegate webserver``, ``tidegate beat`` and a ``tidegate
worker`` over PostgreSQL and Redis, driven by tidegate.client.TidegateClient."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    ROOT,
    SECRET,
    TIDEGATE,
    free_port,
    spawn_process,
    start_worker,
    stop_process,
    tidegate_env,
    truncate_all,
    wait_http_ok,
)
from tidegate.client import TidegateAPIError, TidegateClient
from tidegate.names import Role, RunStatus
from tidegate.storage.api import Storage

PROJECT = ROOT / "tests" / "projects" / "api_project.py"

pytestmark = pytest.mark.slow


class Served:
    def __init__(self, url: str, storage: Storage, tokens: dict[Role, str], logs: Path) -> None:
        self.url, self.storage, self.tokens, self.logs = url, storage, tokens, logs

    def client(self, role: Role = Role.LAUNCHER) -> TidegateClient:
        return TidegateClient(self.url, self.tokens[role], timeout=10)

    def logs_text(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.logs.glob("*.log"))
        )


@pytest.fixture
def served(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Served]:
    truncate_all(pg_url)
    env = tidegate_env(database_url=pg_url, broker_url=redis_url, definitions=PROJECT, io_dir=tmp_path / "io")
    port = free_port(3101, 3119)
    argv = [TIDEGATE, "webserver", "-f", str(PROJECT), "--port", str(port)]
    refused = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "no active API token" in refused.stderr
    storage = Storage.open(pg_url, upgrade=True)
    tokens = {role: storage.create_token(f"proc-{role.value}", role).token for role in Role}
    worker = start_worker(env, name="api", log_dir=tmp_path, concurrency=2)
    beat = spawn_process([TIDEGATE, "-v", "beat", "--lease-seconds", "1"], env, tmp_path / "beat.log")
    webserver = spawn_process(argv, env, tmp_path / "webserver.log")
    url = f"http://127.0.0.1:{port}"
    served = Served(url, storage, tokens, tmp_path)
    try:
        ready = wait_http_ok(f"{url}/readyz", webserver, tmp_path / "webserver.log", timeout=30)
        assert json.loads(ready) == {"status": "ok", "database": "reachable"}
        yield served
    finally:
        stop_process(webserver)
        stop_process(beat)
        worker.stop()
        storage.dispose()


def test_launch_wait_success_and_failure_through_the_client_on_real_processes(served: Served) -> None:
    client = served.client()
    run_id = client.launch("numbers_job", tags={"team": "data"}, run_key="first")
    result = client.wait(run_id, timeout=90)
    assert result.status == RunStatus.SUCCESS, served.logs_text()
    steps = {s["step_key"]: s for s in result.run["steps"]}
    assert {s["status"] for s in steps.values()} == {"SUCCEEDED"} and steps["numbers"]["worker"]
    logs = client.request("GET", f"/runs/{run_id}/steps/numbers/logs")
    assert "making numbers" in [e["message"] for e in logs["logs"]]

    failed = client.wait(client.launch("broken_job"), timeout=90)
    assert failed.status == RunStatus.FAILURE
    assert "broken asset fails on purpose" in failed.step_errors["broken"]

    with pytest.raises(TidegateAPIError) as duplicate:
        client.launch("numbers_job", run_key="first")
    assert (
        duplicate.value.status == 409 and duplicate.value.code == "duplicate_run_key" and run_id in str(duplicate.value)
    )
    with pytest.raises(TidegateAPIError) as invalid:
        client.launch("daily_job", partition="2031-02-30")
    assert invalid.value.status == 400 and "2031-02-30" in invalid.value.message
    assert len(client.list_runs(limit=100)["runs"]) == 2  # neither refused launch made a run

    with pytest.raises(TidegateAPIError) as viewer:
        served.client(Role.VIEWER).launch("numbers_job")
    assert viewer.value.status == 403

    # the event stream of a finished run, over real HTTP, ends with the run's status
    request = urllib.request.Request(
        f"{served.url}/api/v1/runs/{run_id}/events/stream",
        headers={"Authorization": f"Bearer {served.tokens[Role.VIEWER]}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        stream = response.read().decode()
    kinds = [line[7:] for line in stream.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "RUN_QUEUED" and "STEP_SUCCESS" in kinds and kinds[-2:] == ["RUN_SUCCESS", "end"]

    backfill = client.backfill("daily_job", from_key="2024-01-04", to_key="2024-01-05")
    assert backfill["partitions"] == 2
    deadline = time.monotonic() + 90
    while client.get_backfill(backfill["backfill_id"])["status"] != "COMPLETED":
        assert time.monotonic() < deadline, served.logs_text()
        time.sleep(0.5)
    assert client.get_backfill(backfill["backfill_id"])["partitions_by_run_status"] == {"SUCCESS": 2}
    request = urllib.request.Request(
        f"{served.url}/metrics", headers={"Authorization": f"Bearer {served.tokens[Role.VIEWER]}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    assert 'tidegate_runs{status="SUCCESS"} 3' in text.splitlines(), text
    for path in ("/runs", f"/runs/{run_id}", "/queue", "/sensors", "/assets"):
        assert SECRET not in json.dumps(served.client(Role.ADMIN).request("GET", path))
