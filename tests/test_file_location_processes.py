"""A ``-f file.py`` code location across processes: every process imports the file under one
module name, so values of classes it defines pickle in one worker and unpickle in another."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import WorkerProcess, tidegate_env
from tidegate.broker import CeleryPublisher, make_celery_app
from tidegate.definitions.loading import CodeLocation
from tidegate.names import RunStatus, StepStatus
from tidegate.scheduler.launcher import Launcher
from tidegate.storage.api import Storage

BATCHES = """
import os
from dataclasses import dataclass

import tidegate as tg


@dataclass
class Batch:
    rows: list[int]
    written_by: int


@tg.asset(queue="upstream_q")
def batch() -> Batch:
    return Batch([1, 2, 3], os.getpid())


@tg.asset(queue="downstream_q")
def total(batch: Batch) -> dict:
    assert type(batch).__name__ == "Batch", type(batch)
    return {"total": sum(batch.rows), "written_by": batch.written_by, "read_by": os.getpid()}


defs = tg.Definitions(assets=[batch, total])
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "code" / "batches.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(BATCHES))
    before = set(sys.modules)
    yield path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_a_dataclass_defined_in_the_file_crosses_two_worker_processes(
    project: Path,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    worker_factory: Callable[..., WorkerProcess],
) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    defs = CodeLocation(file=str(project)).load()
    storage = Storage.open(database_url, upgrade=True)
    app = make_celery_app(redis_url)
    try:
        env = tidegate_env(database_url=database_url, broker_url=redis_url, definitions=project, io_dir=tmp_path / "io")
        # One worker per queue: the upstream step runs in one process, the downstream in another.
        worker_factory(env, name="up", queues="upstream_q", concurrency=1, pool="solo")
        worker_factory(env, name="down", queues="downstream_q", concurrency=1, pool="solo")
        launcher = Launcher(storage, CeleryPublisher(app, storage), republish_grace_seconds=5.0)
        run_id = storage.submit_run(defs.plan("__ASSET_JOB"), origin="test").run_id
        deadline = time.monotonic() + 60
        while storage.get_run(run_id).status not in RunStatus.TERMINAL and time.monotonic() < deadline:
            launcher.tick()
            time.sleep(0.05)

        steps = {s.step_key: s for s in storage.get_steps(run_id)}
        errors = {k: s.error for k, s in steps.items() if s.error}
        assert storage.get_run(run_id).status == RunStatus.SUCCESS, errors
        assert all(s.status == StepStatus.SUCCEEDED for s in steps.values())
        assert steps["batch"].worker.startswith("up@") and steps["total"].worker.startswith("down@")
        result = pickle.loads((tmp_path / "io" / "total").read_bytes())
        assert result["total"] == 6
        assert result["written_by"] != result["read_by"]  # pickled in one process, read in another
    finally:
        app.close()
        storage.dispose()


def test_every_process_imports_the_file_under_the_same_name(project: Path, tmp_path: Path) -> None:
    """The module name does not come from the salted hash(): two interpreters with different
    hash seeds agree, and a value pickled by one unpickles in the other."""
    script = textwrap.dedent(
        """
        import pickle, sys
        from tidegate.definitions.loading import CodeLocation
        defs = CodeLocation(file=sys.argv[1]).load()
        module = sys.modules[defs.get_asset("batch").fn.__module__]
        if sys.argv[2] == "write":
            open(sys.argv[3], "wb").write(pickle.dumps(module.Batch([4, 5], 0)))
        else:
            value = pickle.loads(open(sys.argv[3], "rb").read())
            assert isinstance(value, module.Batch), type(value)
            print(type(value).__module__, type(value).__qualname__, sum(value.rows))
        """
    )
    blob = tmp_path / "batch.pickle"
    names = []
    for seed, mode in (("1", "write"), ("2", "read")):
        done = subprocess.run(
            [sys.executable, "-c", script, str(project), mode, str(blob)],
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        names.append(done.stdout.strip())
    assert names[1] == "batches Batch 9"
