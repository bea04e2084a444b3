"""An automation condition sensor run by real ``tidegate beat`` processes, SIGKILLed at random
points of its ticks, with a real worker running what it requests, on PostgreSQL
(tests/projects/automation_project.py): ten times, ``source`` is updated once the graph has
caught up with the previous update, and the beat is SIGKILLed a random 0-0.6 s later (it ticks
every 0.2 s: before, during or after the tick that handles the update) and started again. No
update is lost (the graph catches up with each), none is handled twice (each run is requested
by a tick whose event ids include exactly a new update; ten updates, ten runs), and each run is
listed by exactly one tick.
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
    """Every asset of the graph materialized after the last update, nothing in progress, and
    the sensor's cursor past it all: the next update is the only news of the tick that sees it
    (an asset updated in the same tick window as its dependency's next update counts as
    handled, as in Dagster's ``since``)."""
    latest = storage.latest_materializations()
    if "source" not in latest or any(a not in latest or latest[a].id < latest["source"].id for a in CHAIN):
        return False
    if [r for r in storage.list_runs(limit=1000) if r.status not in RunStatus.TERMINAL]:
        return False
    state = storage.get_instigator("automation")
    seen = int(state.cursor.split(":", 1)[0]) if state is not None and state.cursor else 0
    return seen >= max(m.id for m in latest.values())


def _wait_settled(storage: Storage, beats: Beats) -> None:
    deadline = time.monotonic() + 40
    while not _settled(storage):
        if time.monotonic() > deadline:
            pytest.fail(f"the eager graph did not catch up with the last update\n{beats.logs_text()}")
        time.sleep(0.1)


@pytest.mark.timeout(240)  # ten beat starts (a few seconds each on a loaded machine) and ten runs
def test_a_beat_killed_at_random_points_neither_loses_nor_duplicates_a_request(
    setup: tuple[Storage, Beats, dict[str, str]], worker_factory: Callable[..., Any]
) -> None:
    storage, beats, env = setup
    worker_factory(env, name="automation")
    pace = random.Random(13)
    beat = beats.start()
    deadline = time.monotonic() + 30
    while not storage.get_ticks("automation", limit=1):  # its first tick: the history before it is no update
        assert time.monotonic() < deadline, beats.logs_text()
        time.sleep(0.1)
    for kill in range(KILLS):
        if kill:  # the previous update handled: the graph ran once, after it
            _wait_settled(storage, beats)
        storage.report_materialization("source")
        time.sleep(pace.uniform(0.0, 0.6))  # the beat ticks every 0.2 s: killed before, while or after one
        beats.kill(beat)
        beat = beats.start()
    _wait_settled(storage, beats)

    runs = [r for r in storage.list_runs(limit=1000) if AUTOMATION_TAG in r.tags]
    assert runs and all(r.status == RunStatus.SUCCESS for r in runs)
    assert all(sorted(r.asset_selection or ()) == CHAIN for r in runs)  # the whole graph in one run each time
    # each run was committed by exactly one tick, with the cursor that moved past its update
    ticks = sorted(storage.get_ticks("automation", limit=10_000), key=lambda t: t.id)
    listed = [run_id for t in ticks for run_id in t.run_ids]
    assert sorted(listed) == sorted(r.run_id for r in runs)
    # no duplicate: a tick requests runs only for an update of source within the event ids it
    # read, (the previous committed cursor, its own cursor]
    updates = [m.id for m in storage.get_materializations("source")]
    before = 0
    requesting = 0
    for tick in ticks:
        if tick.cursor is None:  # a FAILURE tick: the cursor did not move
            continue
        upper = int(tick.cursor.split(":", 1)[0])
        if tick.run_ids:
            requesting += 1
            assert any(before < u <= upper for u in updates), (tick, updates)
        before = upper
    assert requesting == KILLS  # one run per update: the graph settled before each next update
