"""Asset, multi-asset and run-failure sensors driven by real ``tidegate beat`` processes (and a
real worker running what they request), on PostgreSQL and SQLite
(tests/projects/event_sensor_project.py):

* ten partitions materialized between two ticks: ten runs from the per-event asset sensor,
  one from the ``latest_only`` one;
* a multi-asset sensor waiting for two assets fires once per pair, across beat SIGKILLs;
* 50 runs failing while the beat is stopped: exactly 50 notification runs once it starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tidegate as tg
from tests.support import ROOT, TIDEGATE, tidegate_env, truncate_all
from tidegate.names import SENSOR_TAG, RunStatus
from tidegate.storage.api import Storage

PROJECT = ROOT / "tests" / "projects" / "event_sensor_project.py"
DAYS = [f"2024-01-{d:02d}" for d in range(1, 11)]

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
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(self.logs.glob("beat-*.log")))


@pytest.fixture(params=["postgresql", "sqlite"])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, worker_factory: Callable[..., Any]
) -> Iterator[tuple[Storage, Beats, dict[str, str]]]:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        truncate_all(url)
    else:
        url = f"sqlite:///{tmp_path / 'tidegate.db'}"
    storage = Storage.open(url, upgrade=True)
    env = tidegate_env(database_url=url, broker_url=redis_url, definitions=PROJECT, io_dir=tmp_path / "io")
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


def _runs(storage: Storage, sensor: str) -> list[Any]:
    return [r for r in storage.list_runs(limit=10_000) if r.tags.get(SENSOR_TAG) == sensor]


def _wait(what: str, check: Callable[[], bool], beats: Beats, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}\n{beats.logs_text()}")


def _started(storage: Storage, *names: str) -> Callable[[], bool]:
    def check() -> bool:
        return all(storage.get_ticks(n, limit=1) for n in names)

    return check


def test_ten_partitions_between_two_ticks(
    setup: tuple[Storage, Beats, dict[str, str]], worker_factory: Callable[..., Any]
) -> None:
    storage, beats, env = setup
    beat = beats.start()
    _wait("the first ticks", _started(storage, "on_each_day", "on_latest_day"), beats)
    beats.kill(beat, signal.SIGTERM)  # between two ticks
    for day in DAYS:
        storage.report_materialization("daily", partition_key=day)
    worker_factory(env, name="events")
    beats.start()
    _wait(
        "ten runs",
        lambda: len(_runs(storage, "on_each_day")) >= 10 and len(_runs(storage, "on_latest_day")) >= 1,
        beats,
    )
    _wait(
        "the runs to finish",
        lambda: all(
            r.status == RunStatus.SUCCESS for r in _runs(storage, "on_each_day") + _runs(storage, "on_latest_day")
        ),
        beats,
    )
    time.sleep(1.0)  # more ticks: nothing more
    assert sorted(r.tags["day"] for r in _runs(storage, "on_each_day")) == DAYS
    assert [r.tags["day"] for r in _runs(storage, "on_latest_day")] == [DAYS[-1]]


def test_multi_asset_pairs_across_beat_sigkills(setup: tuple[Storage, Beats, dict[str, str]]) -> None:
    storage, beats, _ = setup
    beat = beats.start()
    _wait("the first tick", _started(storage, "on_pair"), beats)
    for pair in range(1, 6):
        storage.report_materialization("left")
        if pair % 2:
            beats.kill(beat)  # SIGKILL between the two updates of a pair
            beat = beats.start()
        storage.report_materialization("right")
        _wait(f"pair {pair}", lambda n=pair: len(_runs(storage, "on_pair")) >= n, beats)  # type: ignore[misc]
        if pair % 2 == 0:
            beats.kill(beat)  # and after a pair fired
            beat = beats.start()
    time.sleep(1.0)
    runs = _runs(storage, "on_pair")
    assert len(runs) == 5 and len({r.run_key for r in runs}) == 5


@tg.asset
def broken() -> int:
    raise RuntimeError("the warehouse is down")


def test_fifty_failures_while_the_beat_is_stopped(
    setup: tuple[Storage, Beats, dict[str, str]], worker_factory: Callable[..., Any]
) -> None:
    storage, beats, env = setup
    beat = beats.start()
    _wait("the first tick", _started(storage, "on_failure"), beats)
    beats.kill(beat, signal.SIGTERM)
    instance = tg.DagsterInstance(storage)
    failed = [tg.materialize([broken], instance=instance, raise_on_error=False).run_id for _ in range(50)]
    assert {storage.get_run(r).status for r in failed} == {RunStatus.FAILURE}
    worker_factory(env, name="notify")
    beat = beats.start()
    _wait("50 notifications", lambda: len(_runs(storage, "on_failure")) >= 50, beats)
    beats.kill(beat)  # SIGKILL, restart: nothing is handled twice
    beats.start()
    _wait(
        "the notifications to run",
        lambda: all(r.status == RunStatus.SUCCESS for r in _runs(storage, "on_failure")),
        beats,
    )
    time.sleep(1.0)
    runs = _runs(storage, "on_failure")
    assert sorted(r.tags["failed_run"] for r in runs) == sorted(failed)  # exactly 50, none twice
