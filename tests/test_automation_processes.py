"""An automation condition sensor run by real ``tidegate beat`` processes, SIGKILLed at random
points of its ticks, with a real worker running what it requests, on PostgreSQL
(tests/projects/automation_project.py): ten times, ``source`` is updated, a beat starts and is
killed after a random while. Then one beat runs to the end. No update is lost (the eager graph
ends materialized after the last update) and none is handled twice (between two runs of the
graph there is always an update); each run is listed by exactly one tick.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, TIDEGATE, tidegate_env, truncate_all
from tidegate.names import AUTOMATION_TAG, RunStatus
from tidegate.storage.api import Storage

PROJECT = ROOT / "tests" / "projects" / "automation_project.py"
CHAIN = [f"a{i}" for i in range(10)]
KILLS = 10

pytestmark = pytest.mark.slow


class Beats:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, list[subprocess.Popen[bytes]]()

    def start(self) -> subprocess.Popen[bytes]:
        argv = [TIDEGATE, "-v", "beat", "-f", str(PROJECT), "--lease-seconds", "1"]
        with (self.logs / f"beat-{len(self.procs)}.log").open("wb") as log:
            proc = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=20)

    def logs_text(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.logs.glob("beat-*.log")))


@pytest.fixture
def setup(pg_url: str, tmp_path: Path, redis_url: str) -> Iterator[tuple[Storage, Beats, dict[str, str]]]:
    truncate_all(pg_url)
    storage = Storage.open(pg_url, upgrade=True)
    env = tidegate_env(database_url=pg_url, broker_url=redis_url, definitions=PROJECT, io_dir=tmp_path / "io")
    beats = Beats(env, tmp_path)
    try:
        yield storage, beats, env
    finally:
        for proc in beats.procs:
            beats.kill(proc)
        storage.dispose()
        import redis

        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        client.close()


def _settled(storage: Storage) -> bool:
    """Every asset of the graph materialized after the last update, nothing in progress."""
    latest = storage.latest_materializations()
    if "source" not in latest or any(a not in latest or latest[a].id < latest["source"].id for a in CHAIN):
        return False
    return not [r for r in storage.list_runs(limit=1000) if r.status not in RunStatus.TERMINAL]


def test_a_beat_killed_at_random_points_neither_loses_nor_duplicates_a_request(
    setup: tuple[Storage, Beats, dict[str, str]], worker_factory: Callable[..., Any]
) -> None:
    storage, beats, env = setup
    worker_factory(env, name="automation")
    pace = random.Random(13)
    for _ in range(KILLS):
        storage.report_materialization("source")
        beat = beats.start()
        time.sleep(pace.uniform(0.8, 3.0))  # the beat starts in about a second, then ticks every 0.2 s
        beats.kill(beat)
    beats.start()
    deadline = time.monotonic() + 60
    while not _settled(storage):
        if time.monotonic() > deadline:
            pytest.fail(f"the eager graph did not catch up with the last update\n{beats.logs_text()}")
        time.sleep(0.3)

    runs = [r for r in storage.list_runs(limit=1000) if AUTOMATION_TAG in r.tags]
    assert runs and all(r.status == RunStatus.SUCCESS for r in runs)
    # each run was committed by exactly one tick, with the cursor that moved past its update
    ticks = sorted(storage.get_ticks("automation", limit=10_000), key=lambda t: t.id)
    listed = [run_id for t in ticks for run_id in t.run_ids]
    assert sorted(listed) == sorted(r.run_id for r in runs)
    # no duplicate: a tick requests runs only for an update of source within the event ids it
    # read, (the previous committed cursor, its own cursor]; the first tick sees source missing
    # below the graph
    updates = [m.id for m in storage.get_materializations("source")]
    before = 0
    requesting = 0
    for tick in ticks:
        if tick.cursor is None:  # a FAILURE tick: the cursor did not move
            continue
        upper = int(tick.cursor.split(":", 1)[0])
        if tick.run_ids:
            requesting += 1
            assert before == 0 or any(before < u <= upper for u in updates), (tick, updates)
        before = upper
    assert 1 <= requesting <= KILLS
