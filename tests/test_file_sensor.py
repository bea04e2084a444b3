"""``file_sensor`` and the ETL course's hand-written ``dynamic_sensor``, evaluated by a real beat
on SQLite and PostgreSQL (the ``storage`` fixture) with a fake clock."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tidegate as tg
from tidegate.definitions.loading import CodeLocation
from tidegate.names import FILE_TAG, InstigatorStatus, TickStatus
from tidegate.scheduler.beat import Beat
from tidegate.scheduler.clock import FakeClock
from tidegate.storage.api import Storage
from tidegate.storage.records import RunRecord, StepRef

RUNNING = tg.DefaultSensorStatus.RUNNING
T0 = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)


@tg.asset
def ingest() -> None:
    return None


INGEST = tg.define_asset_job("ingest_job", [ingest])


class Ticker:
    """A beat stepped by its fake clock, one sensor interval per ``tick()``."""

    def __init__(self, defs: tg.Definitions, storage: Storage, interval: float = 30) -> None:
        self.clock = FakeClock(T0)
        self.interval = interval
        self.published: list[StepRef] = []
        self.beat = Beat(defs, storage, self.published.extend, clock=self.clock, holder="file-test")
        self.storage = storage

    def tick(self) -> Any:
        report = self.beat.tick()
        assert not report.failures, report.failures
        self.clock.advance(self.interval)
        return report


def _watch(storage: Storage, directory: Path, **kwargs: Any) -> tuple[Ticker, tg.SensorDefinition]:
    sensor = tg.file_sensor(
        "inbox", directory, target=INGEST, minimum_interval_seconds=30, default_status=RUNNING, **kwargs
    )
    return Ticker(tg.Definitions(assets=[ingest], jobs=[INGEST], sensors=[sensor]), storage), sensor


def _runs(storage: Storage) -> list[RunRecord]:
    return storage.list_runs(limit=10_000)


def _keys(storage: Storage) -> list[str]:
    return sorted(r.run_key or "" for r in _runs(storage))


def _write(path: Path, text: str = "id,amount\n1,2\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _cursor(storage: Storage, name: str = "inbox") -> str | None:
    state = storage.get_instigator(name)
    return state.cursor if state else None


# -- file_sensor -------------------------------------------------------------------------------


def test_one_run_per_new_file_with_its_path_in_the_tags(storage: Storage, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    _write(inbox / "a.csv")
    _write(inbox / "b.csv")
    _write(inbox / "notes.txt")
    (inbox / "folder.csv").mkdir()  # matches the pattern but is not a file
    ticker, _ = _watch(storage, inbox)
    ticker.tick()
    runs = {r.run_key: r for r in _runs(storage)}
    assert sorted(runs) == ["a.csv", "b.csv"]
    assert runs["a.csv"].tags[FILE_TAG] == str(inbox / "a.csv")
    assert runs["a.csv"].job_name == "ingest_job"
    first = storage.get_ticks("inbox")[0]
    assert first.status == TickStatus.SUCCESS and sorted(first.new_run_keys) == ["a.csv", "b.csv"]

    ticker.tick()
    assert _keys(storage) == ["a.csv", "b.csv"]  # nothing new: no second run of a or b
    _write(inbox / "c.csv")
    _write(inbox / "a.csv", "id,amount\n1,3\n")  # re-written under the same name: not a new arrival
    ticker.tick()
    assert _keys(storage) == ["a.csv", "b.csv", "c.csv"]
    assert storage.get_ticks("inbox")[0].new_run_keys == ("c.csv",)


def test_many_files_sharing_one_mtime_each_get_one_run(storage: Storage, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    shared = int(time.time())  # a coarse (1 s) mtime, as on NFS or FAT: every file has the same one
    for i in range(30):
        os.utime(_write(inbox / f"first-{i:02}.csv"), (shared, shared))
    ticker, _ = _watch(storage, inbox)
    ticker.tick()
    assert len(_runs(storage)) == 30
    for i in range(30):  # more files with exactly the same mtime, after the cursor moved
        os.utime(_write(inbox / f"second-{i:02}.csv"), (shared, shared))
    ticker.tick()
    for i in range(5):  # and some whose mtime is in the future (a clock-skewed writer)
        future = shared + 3600
        os.utime(_write(inbox / f"third-{i}.csv"), (future, future))
    ticker.tick()
    ticker.tick()
    keys = _keys(storage)
    assert len(keys) == len(set(keys)) == 65
    assert keys[:2] == ["first-00.csv", "first-01.csv"] and keys[-1] == "third-4.csv"


def test_a_file_moved_in_with_an_old_mtime_is_new(storage: Storage, tmp_path: Path) -> None:
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    _write(inbox / "early.csv")
    ticker, _ = _watch(storage, inbox)
    ticker.tick()
    ticker.tick()
    old = time.time() - 86_400
    staged = _write(staging / "late.csv")
    os.utime(staged, (old, old))  # written yesterday, moved (mv keeps the mtime) into the inbox now
    staged.rename(inbox / "late.csv")
    ticker.tick()
    assert _keys(storage) == ["early.csv", "late.csv"]


def test_files_landing_while_the_sensor_lists_are_each_run_once(storage: Storage, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    for i in range(80):  # a listing long enough for writes to land in the middle of it
        _write(inbox / f"base-{i:03}.csv")
    written: list[str] = []
    stop = threading.Event()  # set only if a tick fails

    def writer() -> None:
        while not stop.is_set() and len(written) < 80:
            name = f"live-{len(written):04}.csv"
            part = inbox / f".{name}.part"  # written aside, renamed into place: never half a file
            part.write_text("id\n1\n")
            part.rename(inbox / name)
            written.append(name)
            time.sleep(0.003)

    ticker, _ = _watch(storage, inbox)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(2):  # ticks while files keep landing
            ticker.tick()
        thread.join()
    finally:
        stop.set()
        thread.join()
    ticker.tick()  # everything has landed: one more tick picks up the rest
    keys = _keys(storage)
    assert len(keys) == len(set(keys))  # never two runs of one file
    assert len(written) == 80
    assert set(keys) == {f"base-{i:03}.csv" for i in range(80)} | set(written)


def test_the_cursor_stays_one_integer(storage: Storage, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    ticker, _ = _watch(storage, inbox)
    ticker.tick()  # the directory does not exist yet: skipped, no cursor
    skipped = storage.get_ticks("inbox")[0]
    assert skipped.status == TickStatus.SKIPPED and "does not exist" in (skipped.skip_reason or "")
    assert _cursor(storage) is None
    cursors = []
    for batch in range(4):
        for i in range(20):
            _write(inbox / f"b{batch}-{i:02}.csv")
        ticker.tick()
        cursor = _cursor(storage)
        assert cursor is not None and cursor.isdigit() and len(cursor) <= 20
        cursors.append(int(cursor))
    assert cursors == sorted(cursors)  # it only moves forward
    assert int(cursors[-1]) <= time.time_ns()
    assert len(_runs(storage)) == 80


def test_recursive_file_sensor_keys_runs_by_relative_path(storage: Storage, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    _write(inbox / "top.json")
    _write(inbox / "2024" / "03" / "deep.json")
    _write(inbox / "2024" / "deep.csv")
    ticker, _ = _watch(storage, inbox, pattern="*.json", recursive=True)
    ticker.tick()
    runs = {r.run_key: r for r in _runs(storage)}
    assert sorted(runs) == ["2024/03/deep.json", "top.json"]
    assert runs["2024/03/deep.json"].tags[FILE_TAG] == str(inbox / "2024" / "03" / "deep.json")


def test_file_sensor_validates_its_pattern_and_target() -> None:
    with pytest.raises(tg.InvalidDefinitionError, match="sensor 'inbox': pattern"):
        tg.file_sensor("inbox", "/tmp", pattern="", target=INGEST)
    with pytest.raises(tg.InvalidDefinitionError, match="sensor 'inbox': no target"):
        tg.file_sensor("inbox", "/tmp")


# -- the ETL course's dynamic_sensor, ported by changing the import line ------------------------

SEED_SENSOR = """
import json
import os
from pathlib import Path

import tidegate as dg

import {jobs_module} as jobs


@dg.sensor(target=jobs.import_dynamic_partition_job)
def dynamic_sensor(context: dg.SensorEvaluationContext):
    file_path = Path(__file__).absolute().parent / "../data/source/"

    previous_state = json.loads(context.cursor) if context.cursor else {{}}
    current_state = {{}}
    runs_to_request = []

    for filename in os.listdir(file_path):
        if filename not in previous_state:
            last_modified = os.path.getmtime(file_path)
            current_state[filename] = last_modified

            runs_to_request.append(
                dg.RunRequest(
                    run_key=filename,
                )
            )

    return dg.SensorResult(
        run_requests=runs_to_request, cursor=json.dumps(current_state)
    )


defs = dg.Definitions(assets=[jobs.import_file], jobs=[jobs.import_dynamic_partition_job], sensors=[dynamic_sensor])
"""

SEED_JOBS = """
import tidegate as dg


@dg.asset
def import_file() -> None:
    return None


import_dynamic_partition_job = dg.define_asset_job("import_dynamic_partition_job", [import_file])
"""


def test_the_seed_dynamic_sensor_runs_once_per_file(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its cursor holds only the files that were new at the last tick, so a file seen two ticks
    ago is requested again; the run key keeps it to one run."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader adds the project's folder
    project = tmp_path / "dagster_and_etl"
    jobs_module = f"seed_jobs_{uuid.uuid4().hex[:8]}"
    (project / "defs").mkdir(parents=True)
    (project / "defs" / f"{jobs_module}.py").write_text(SEED_JOBS)
    (project / "defs" / "sensors.py").write_text(SEED_SENSOR.format(jobs_module=jobs_module))
    source = project / "data" / "source"
    source.mkdir(parents=True)
    _write(source / "2018-01-22.csv")
    _write(source / "2018-01-23.csv")
    try:
        defs = CodeLocation(file=str(project / "defs" / "sensors.py")).load()
        storage.set_instigator_status("dynamic_sensor", "sensor", InstigatorStatus.RUNNING, T0 - timedelta(seconds=1))
        ticker = Ticker(defs, storage, interval=30)

        ticker.tick()
        assert _keys(storage) == ["2018-01-22.csv", "2018-01-23.csv"]
        assert sorted(json.loads(_cursor(storage, "dynamic_sensor") or "{}")) == [
            "2018-01-22.csv",
            "2018-01-23.csv",
        ]
        _write(source / "2018-01-24.csv")
        ticker.tick()
        assert _keys(storage) == ["2018-01-22.csv", "2018-01-23.csv", "2018-01-24.csv"]
        assert sorted(json.loads(_cursor(storage, "dynamic_sensor") or "{}")) == ["2018-01-24.csv"]

        ticker.tick()  # the cursor forgot the first two files: they are requested again
        tick = storage.get_ticks("dynamic_sensor")[0]
        assert sorted(tick.skipped_run_keys) == ["2018-01-22.csv", "2018-01-23.csv"]
        assert tick.new_run_keys == () and tick.status == TickStatus.SKIPPED
        ticker.tick()
        assert storage.get_ticks("dynamic_sensor")[0].skipped_run_keys == ("2018-01-24.csv",)

        runs = _runs(storage)
        assert sorted(r.run_key or "" for r in runs) == ["2018-01-22.csv", "2018-01-23.csv", "2018-01-24.csv"]
        assert {r.job_name for r in runs} == {"import_dynamic_partition_job"}
        assert len(storage.get_ticks("dynamic_sensor")) == 4
    finally:
        for name in [n for n in sys.modules if jobs_module in n or n.startswith("tidegate_user_code.sensors")]:
            del sys.modules[name]
