"""Flower on tidegate's app: a real ``tidegate flower``, ``tidegate worker`` and ``tidegate beat``
over the test Redis and PostgreSQL, reached over HTTP with basic auth."""

from __future__ import annotations

import ast
import http.client
import json
import os
import re
import signal
import subprocess
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, TIDEGATE, WorkerProcess, tidegate_env, truncate_all
from tidegate.names import LAUNCH_JOB_TASK, RunStatus
from tidegate.storage.api import Storage

PROJECT = ROOT / "tests" / "projects" / "partition_project.py"
USER, PASSWORD = "operator", "tide-Gate-7f3a"
CREDENTIALS = f"{USER}:{PASSWORD}"


@dataclass
class FlowerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body: Any = None, auth: str | None = CREDENTIALS) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = "Basic " + b64encode(auth.encode()).decode()
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def tasks(self) -> dict[str, dict[str, Any]]:
        status, text = self.request("GET", "/api/tasks")
        assert status == 200, text
        tasks: dict[str, dict[str, Any]] = json.loads(text)
        return tasks

    def launch(self, *args: Any, **kwargs: Any) -> str:
        body = {"args": list(args), "kwargs": kwargs}
        status, text = self.request("POST", f"/api/task/async-apply/{LAUNCH_JOB_TASK}", body)
        assert status == 200, text
        task_id: str = json.loads(text)["task-id"]
        return task_id

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def start_flower(env: dict[str, str], log_dir: Path, *args: str, timeout: float = 30.0) -> FlowerProcess:
    """``tidegate flower --port 0`` and the port it reports."""
    log_path = log_dir / "flower.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [TIDEGATE, "flower", "--port", "0", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_dir,
            start_new_session=True,
        )
    flower = FlowerProcess(process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"flower exited with {process.returncode}:\n{flower.log()}")
        found = re.search(r"Visit me at http://127\.0\.0\.1:(\d+)", flower.log())
        if found:
            flower.port = int(found.group(1))
            return flower
        time.sleep(0.1)
    flower.stop()
    raise RuntimeError(f"flower not listening after {timeout}s:\n{flower.log()}")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not after {timeout}s\n{logs()}")


@pytest.fixture
def cluster_env(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    import redis

    truncate_all(pg_url)
    redis.Redis.from_url(redis_url).flushdb()
    yield tidegate_env(
        database_url=pg_url,
        broker_url=redis_url,
        definitions=PROJECT,
        io_dir=tmp_path / "io",
        TIDEGATE_FLOWER_BASIC_AUTH=CREDENTIALS,
    )
    redis.Redis.from_url(redis_url).flushdb()  # no later test should see what was sent here


def test_flower_refuses_to_start_without_authentication(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEGATE_", "FLOWER_"))}
    result = subprocess.run([TIDEGATE, "flower"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: flower: no authentication configured")
    assert "--insecure" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    env["TIDEGATE_FLOWER_BASIC_AUTH"] = "operator:hunter2x,nopassword"
    result = subprocess.run([TIDEGATE, "flower"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "credential 2 is not user:password" in result.stderr
    assert "hunter2x" not in result.stderr  # the password is not echoed


def test_a_job_launched_through_flower_runs_and_its_steps_show_in_flower(
    cluster_env: dict[str, str], pg_url: str, tmp_path: Path, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker = worker_factory(cluster_env, name="fw", concurrency=2)
    beat_log = tmp_path / "beat.log"
    with beat_log.open("wb") as log:
        beat = subprocess.Popen(
            [TIDEGATE, "beat"], env=cluster_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    flower = start_flower(cluster_env, tmp_path)
    storage = Storage.open(pg_url)

    def logs() -> str:
        return "\n".join(
            [f"--- flower\n{flower.log()[-3000:]}", f"--- worker\n{worker.log()[-3000:]}", beat_log.read_text()[-2000:]]
        )

    try:
        # The credentials reach Flower through its environment, never its command line or log.
        cmdline = Path(f"/proc/{flower.process.pid}/cmdline").read_bytes().decode()
        assert PASSWORD not in cmdline
        assert PASSWORD not in flower.log()

        # Without credentials (or with wrong ones) the API refuses, and nothing is launched.
        assert flower.request("GET", "/api/tasks", auth=None)[0] == 401
        assert flower.request("GET", "/api/workers", auth=f"{USER}:wrong")[0] == 401
        status, _ = flower.request(
            "POST", f"/api/task/async-apply/{LAUNCH_JOB_TASK}", {"args": ["daily_job"]}, auth=None
        )
        assert status == 401
        assert storage.list_runs() == []

        # Launch through Flower's API; the run gets the partition, tags, run key and origin.
        launch_id = flower.launch("daily_job", partition_key="2024-01-05", tags={"owner": "ana"}, run_key="flower-1")
        launched = wait_for(
            lambda: flower.tasks().get(launch_id, {}).get("state") == "SUCCESS" and flower.tasks()[launch_id],
            30,
            "the launch_job task succeeds",
            logs,
        )
        run_id = ast.literal_eval(launched["result"])  # Flower shows the repr of the result
        run = storage.get_run(run_id)
        assert (run.job_name, run.origin, run.run_key) == ("daily_job", "flower", "flower-1")
        assert run.tags["owner"] == "ana"
        assert run.tags["tidegate/partition"] == "2024-01-05"
        wait_for(
            lambda: storage.get_run(run_id).status in RunStatus.TERMINAL,
            60,
            "the beat starts the run and it ends",
            logs,
        )
        errors = [(s.step_key, s.status, s.error) for s in storage.get_steps(run_id)]
        assert storage.get_run(run_id).status == RunStatus.SUCCESS, errors

        # The same run key again is a no-op that answers with the first run.
        again_id = flower.launch("daily_job", partition_key="2024-01-05", run_key="flower-1")
        again = wait_for(
            lambda: flower.tasks().get(again_id, {}).get("state") == "SUCCESS" and flower.tasks()[again_id],
            30,
            "the second launch_job task succeeds",
            logs,
        )
        assert again["result"] == repr(run_id)
        assert [r.run_id for r in storage.list_runs()] == [run_id]

        # Each step task shows under its asset, partition and run, with the run id in its args.
        def step_tasks() -> dict[str, dict[str, Any]]:
            steps = {t["name"]: t for t in flower.tasks().values() if t["uuid"].startswith(run_id)}
            return steps if len(steps) == 2 and all(t["state"] == "SUCCESS" for t in steps.values()) else {}

        steps = wait_for(step_tasks, 30, "both step tasks are SUCCESS in Flower", logs)
        short = run_id[:8]
        assert set(steps) == {f"daily_sales[2024-01-05] · run {short}", f"daily_report[2024-01-05] · run {short}"}
        sales = steps[f"daily_sales[2024-01-05] · run {short}"]
        assert sales["uuid"] == f"{run_id}.daily_sales.1"
        assert sales["args"] == repr([run_id, "daily_sales", 1])
        assert sales["worker"].startswith("fw@")
        assert sales["sent"] is not None  # task-sent events are on
        # daily_report ran by continuation inside daily_sales's task: the worker's own task
        # events show it as a task of its own, under its step task id, with that parent.
        report = steps[f"daily_report[2024-01-05] · run {short}"]
        assert report["uuid"] == f"{run_id}.daily_report.1" and report["worker"] == sales["worker"]
        assert report["args"] == repr([run_id, "daily_report", 1])
        assert report["parent_id"] == sales["uuid"], report

        # Flower's Prometheus metrics count the events of each named step.
        status, metrics = flower.request("GET", "/metrics")
        assert status == 200
        for asset in ("daily_sales", "daily_report"):
            line = f'flower_events_total{{task="{asset}[2024-01-05] · run {short}",type="task-succeeded",worker="'
            assert line in metrics, f"no {line!r} in /metrics"

        # The operator's controls reach the real worker: grow its pool, add a queue consumer.
        worker_name = sales["worker"]
        status, text = flower.request("POST", f"/api/worker/pool/grow/{worker_name}?n=1")
        assert status == 200, text
        status, text = flower.request("POST", f"/api/worker/queue/add-consumer/{worker_name}?queue=heavy")
        assert status == 200, text

        def grown_worker() -> dict[str, Any] | None:
            status, text = flower.request("GET", f"/api/workers?workername={worker_name}&refresh=1")
            info: dict[str, Any] = json.loads(text).get(worker_name, {}) if status == 200 else {}
            return info if len(info.get("stats", {}).get("pool", {}).get("processes", [])) == 3 else None

        info = wait_for(grown_worker, 20, "the worker's pool grows from 2 to 3 processes", logs)
        assert "heavy" in {q["name"] for q in info["active_queues"]}

        # Bad requests fail the task in Flower with the typed error naming what is wrong.
        unknown_id = flower.launch("no_such_job")
        bad_partition_id = flower.launch("daily_job", partition_key="1999-01-01")
        failed = wait_for(
            lambda: (
                all(flower.tasks().get(t, {}).get("state") == "FAILURE" for t in (unknown_id, bad_partition_id))
                and flower.tasks()
            ),
            30,
            "the bad launches fail",
            logs,
        )
        assert failed[unknown_id]["exception"].startswith("UnknownJobError(\"job 'no_such_job': not defined")
        assert failed[bad_partition_id]["exception"].startswith("PartitionKeyError(\"job 'daily_job':")
        assert "1999-01-01" in failed[bad_partition_id]["exception"]
        assert [r.run_id for r in storage.list_runs()] == [run_id]
    finally:
        flower.stop()
        beat.send_signal(signal.SIGTERM)
        try:
            beat.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(beat.pid, signal.SIGKILL)
            beat.wait(timeout=5)
        storage.dispose()
