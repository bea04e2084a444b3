# ruff: noqa: F811  (pytest fixtures imported from tests.s3_support are parameters here)
"""Workers on several "hosts" that share nothing but Redis, PostgreSQL and S3.

Two real ``tidegate worker`` processes run with their own working directory, ``HOME``,
``TMPDIR``, ``TIDEGATE_HOME`` and ``TIDEGATE_IO_BASE_DIR``, each consuming its own queue, so
the steps of one run alternate between them (tests/projects/s3_project.py) and every
downstream step reads an output the other process wrote, through ``S3IOManager`` on a moto
server. The control run shows the isolation is real: the filesystem IO manager cannot pass a
value between the two.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.s3_support import REGION, delete_bucket, new_bucket, s3_endpoint  # noqa: F401  (fixture)
from tests.support import ROOT, TIDEGATE, WorkerProcess, tidegate_env, truncate_all
from tidegate.broker import CeleryPublisher, make_celery_app
from tidegate.definitions.loading import CodeLocation
from tidegate.names import RunStatus, StepStatus
from tidegate.scheduler.launcher import Launcher
from tidegate.storage.api import Storage

PROJECT = ROOT / "tests" / "projects" / "s3_project.py"
PREFIX = "multihost"

pytestmark = pytest.mark.slow


@dataclass
class Host:
    """One simulated machine: its own directories and one worker process on its own queue."""

    name: str
    root: Path
    worker: WorkerProcess

    @property
    def cwd(self) -> Path:
        return self.root / "work"

    @property
    def io_dir(self) -> Path:
        return self.root / "tidegate-io"


def start_host(name: str, queue: str, base_env: dict[str, str], root: Path) -> Host:
    """Start the host's worker; ``wait_ready`` waits for it (hosts start in parallel)."""
    for sub in ("work", "home", "tmp"):
        (root / sub).mkdir(parents=True)
    env = {
        **base_env,
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "TIDEGATE_HOME": str(root / "tidegate-home"),
        "TIDEGATE_IO_BASE_DIR": str(root / "tidegate-io"),
    }
    log_path = root / "worker.log"
    argv = [TIDEGATE, "worker", "-c", "1", "-P", "prefork", "-n", f"{name}@%h", "-Q", queue, "-l", "INFO"]
    argv += ["--", "--without-mingle", "--without-gossip"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root / "work", start_new_session=True
        )
    return Host(name, root, WorkerProcess(name, process, log_path))


def wait_ready(host: Host, timeout: float = 60.0) -> None:
    worker = host.worker
    deadline = time.monotonic() + timeout
    while " ready." not in worker.log():
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker {host.name} did not start (rc {worker.process.poll()}):\n{worker.log()}")
        time.sleep(0.1)


@dataclass
class Cluster:
    storage: Storage
    launcher: Launcher
    hosts: dict[str, Host]
    bucket: str
    s3: Any  # the S3Resource the test reads the bucket with

    def run(self, job: str, timeout: float = 60.0) -> str:
        defs = CodeLocation(file=str(PROJECT)).load()
        run_id = self.storage.submit_run(defs.plan(job), origin="test").run_id
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.launcher.tick()
            if self.storage.get_run(run_id).status in RunStatus.TERMINAL:
                return run_id
            time.sleep(0.05)
        steps = {s.step_key: s.status for s in self.storage.get_steps(run_id)}
        logs = "\n".join(f"--- {h.name}\n{h.worker.log()[-2000:]}" for h in self.hosts.values())
        raise AssertionError(f"run {run_id} did not finish in {timeout}s: {steps}\n{logs}")

    def objects(self) -> dict[str, bytes]:
        client = self.s3.get_client()
        listing = client.list_objects_v2(Bucket=self.bucket)
        return {
            o["Key"]: client.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
            for o in listing.get("Contents", [])
        }


@pytest.fixture(scope="module")
def cluster(
    pg_url: str, redis_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Both hosts, started once for this module's tests (worker start-up dominates their time)."""
    import redis

    from tidegate.s3 import S3Resource

    truncate_all(pg_url)
    redis.Redis.from_url(redis_url).flushdb()
    s3 = S3Resource(endpoint_url=s3_endpoint, region_name=REGION)
    bucket = new_bucket(s3.get_client(), "tg-multihost")
    tmp_path = tmp_path_factory.mktemp("hosts")
    base_env = tidegate_env(
        database_url=pg_url,
        broker_url=redis_url,
        definitions=PROJECT,
        io_dir=tmp_path / "unused-io",  # replaced per host below
        S3_PROJECT_ENDPOINT=s3_endpoint,
        S3_PROJECT_BUCKET=bucket,
        S3_PROJECT_PREFIX=PREFIX,
    )
    hosts: dict[str, Host] = {}
    storage = Storage.open(pg_url, upgrade=True)
    app = make_celery_app(redis_url)
    try:
        for name, queue in (("hostA", "host_a"), ("hostB", "host_b")):
            hosts[name] = start_host(name, queue, base_env, tmp_path / name)
        for host in hosts.values():
            wait_ready(host)
        launcher = Launcher(storage, CeleryPublisher(app, storage), republish_grace_seconds=5.0)
        yield Cluster(storage, launcher, hosts, bucket, s3)
    finally:
        stop_all([h.worker for h in hosts.values()])
        app.close()
        storage.dispose()
        redis.Redis.from_url(redis_url).flushdb()
        delete_bucket(s3.get_client(), bucket)


def stop_all(workers: list[WorkerProcess]) -> None:
    """SIGTERM every worker first, then wait: their warm shutdowns overlap."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait(timeout=5)


def test_steps_on_two_hosts_share_outputs_only_through_s3(cluster: Cluster) -> None:
    run_id = cluster.run("squares_job")

    storage = cluster.storage
    run = storage.get_run(run_id)
    steps = {s.step_key: s for s in storage.get_steps(run_id)}
    assert run.status == RunStatus.SUCCESS, {k: (s.status, s.error) for k, s in steps.items()}
    assert all(s.status == StepStatus.SUCCEEDED for s in steps.values())
    # the workers recorded in SQL: the run alternated between the two hosts
    ran_on = {key: (s.worker or "").split("@")[0] for key, s in steps.items()}
    assert ran_on == {"numbers": "hostA", "squares": "hostB", "total": "hostA", "report": "hostB"}

    materialized = {m.asset_key: m.metadata for m in storage.get_materializations() if m.run_id == run_id}
    assert set(materialized) == set(steps)
    host_of = cluster.hosts
    for key, metadata in materialized.items():
        assert metadata["cwd"] == str(host_of[ran_on[key]].cwd), key  # the step ran in its host's directory
        assert metadata["uri"] == f"s3://{cluster.bucket}/{PREFIX}/{key}/__unpartitioned__"

    # every output is an object in the bucket, of the size recorded, and nothing else is
    import pickle

    objects = cluster.objects()  # the control run (local_job) stores nothing in S3
    assert set(objects) == {f"{PREFIX}/{key}/__unpartitioned__" for key in steps}
    for key in steps:
        assert len(objects[f"{PREFIX}/{key}/__unpartitioned__"]) == materialized[key]["size"]
    numbers = pickle.loads(objects[f"{PREFIX}/numbers/__unpartitioned__"])
    squares = pickle.loads(objects[f"{PREFIX}/squares/__unpartitioned__"])
    assert squares == {n: n * n for n in numbers}
    assert pickle.loads(objects[f"{PREFIX}/total/__unpartitioned__"]) == sum(n * n for n in numbers)
    report = pickle.loads(objects[f"{PREFIX}/report/__unpartitioned__"])
    assert report == f"sum of squares of {numbers[0]}..{numbers[-1]} = {sum(n * n for n in numbers)}"

    # and no host wrote an output to its local disk
    for host in cluster.hosts.values():
        assert not host.io_dir.exists() or not any(p.is_file() for p in host.io_dir.rglob("*")), host.name


def test_control_the_filesystem_io_manager_cannot_cross_hosts(cluster: Cluster) -> None:
    run_id = cluster.run("local_job")

    steps = {s.step_key: s for s in cluster.storage.get_steps(run_id)}
    assert cluster.storage.get_run(run_id).status == RunStatus.FAILURE
    assert steps["local_value"].status == StepStatus.SUCCEEDED
    assert steps["local_value"].worker is not None and steps["local_value"].worker.startswith("hostA@")
    written = cluster.hosts["hostA"].io_dir / "local_value"
    assert written.is_file()
    reader = steps["local_reader"]
    assert reader.status == StepStatus.FAILED and reader.worker is not None and reader.worker.startswith("hostB@")
    assert reader.error is not None
    assert "FileNotFoundError" in reader.error
    assert str(cluster.hosts["hostB"].io_dir / "local_value") in reader.error  # it looked on its own disk
