# ruff: noqa: F811  (pytest fixtures imported from tests.s3_support are parameters here)
"""End to end on real processes: files uploaded to an S3 bucket become runs and dynamic
partitions, each exactly once, across a SIGKILLed and restarted ``tidegate beat``; each run
reads its file from S3 and passes it downstream through ``S3IOManager``.

A real beat (``s3_sensor`` every 0.2 s, the run queue, publishing) and a real worker run
tests/projects/s3_inbox_project.py on PostgreSQL, Redis and a moto S3 server.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.s3_support import REGION, delete_bucket, new_bucket, s3_endpoint  # noqa: F401  (fixture)
from tests.support import ROOT, TIDEGATE, WorkerProcess, tidegate_env, truncate_all
from tidegate.names import PARTITION_TAG, RunStatus
from tidegate.names import S3_BUCKET_TAG as BUCKET_TAG
from tidegate.names import S3_KEY_TAG as KEY_TAG
from tidegate.s3 import S3Resource
from tidegate.s3.sensor import default_partition_key
from tidegate.storage.api import Storage

PROJECT = ROOT / "tests" / "projects" / "s3_inbox_project.py"
SENSOR, JOB, PARTITIONS = "inbox_sensor", "inbox_job", "inbox_files"

pytestmark = pytest.mark.slow


@dataclass
class Inbox:
    storage: Storage
    env: dict[str, str]
    bucket: str
    client: Any  # boto3 S3 client of the test
    logs: Path
    beats: list[subprocess.Popen[bytes]]
    uploaded: dict[str, str]  # object key -> its text

    def upload(self, key: str, lines: int) -> None:
        text = "".join(f"{key} line {i}\n" for i in range(lines))
        self.client.put_object(Bucket=self.bucket, Key=key, Body=text.encode())
        self.uploaded[key] = text

    def start_beat(self) -> subprocess.Popen[bytes]:
        log_path = self.logs / f"beat-{len(self.beats)}.log"
        argv = [TIDEGATE, "-v", "beat", "-f", str(PROJECT), "--lease-seconds", "1"]
        with log_path.open("wb") as log:
            beat = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        self.beats.append(beat)
        return beat

    def runs(self) -> list[Any]:
        return [r for r in self.storage.list_runs(limit=1000) if r.job_name == JOB]

    def wait_for_runs(self, count: int, timeout: float = 45.0) -> None:
        """Until ``count`` runs of the job succeeded (failing at once if one did not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs()
            failed = [r for r in runs if r.status in RunStatus.TERMINAL and r.status != RunStatus.SUCCESS]
            assert not failed, [(r.run_id, r.status, self.storage.get_steps(r.run_id)) for r in failed]
            if sum(r.status == RunStatus.SUCCESS for r in runs) >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"{count} runs did not succeed in {timeout}s: {self.runs()}\n{self.beat_logs()}")

    def wait_for_ticks(self, count: int, timeout: float = 20.0) -> None:
        """Until ``count`` more sensor ticks are committed than now."""

        def newest() -> int:
            return max((t.id for t in self.storage.get_ticks(SENSOR, limit=1)), default=0)

        start, deadline = newest(), time.monotonic() + timeout
        while newest() < start + count:
            assert time.monotonic() < deadline, f"no {count} new ticks in {timeout}s\n{self.beat_logs()}"
            time.sleep(0.1)

    def beat_logs(self) -> str:
        return "\n".join(
            f"--- beat {i}\n{p.read_text()[-3000:]}" for i, p in enumerate(sorted(self.logs.glob("beat-*")))
        )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture
def inbox(pg_url: str, redis_url: str, s3_endpoint: str, tmp_path: Path) -> Iterator[Inbox]:
    import redis

    truncate_all(pg_url)
    redis.Redis.from_url(redis_url).flushdb()
    client = S3Resource(endpoint_url=s3_endpoint, region_name=REGION).get_client()
    bucket = new_bucket(client, "tg-inbox")
    env = tidegate_env(
        database_url=pg_url,
        broker_url=redis_url,
        definitions=PROJECT,
        io_dir=tmp_path / "io",
        S3_PROJECT_ENDPOINT=s3_endpoint,
        S3_PROJECT_BUCKET=bucket,
    )
    storage = Storage.open(pg_url, upgrade=True)
    box = Inbox(storage, env, bucket, client, tmp_path, [], {})
    try:
        yield box
    finally:
        for beat in box.beats:
            kill_group(beat)
        storage.dispose()
        redis.Redis.from_url(redis_url).flushdb()
        delete_bucket(client, bucket)


def test_uploaded_files_become_runs_and_partitions_once_across_a_beat_kill(
    inbox: Inbox, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker_factory(inbox.env, name="w1", concurrency=2)
    first = ["inbox/a.csv", "inbox/2024/01/b c.csv", "inbox/naïve,café.txt"]
    for i, key in enumerate(first):
        inbox.upload(key, lines=i + 1)
    beat = inbox.start_beat()
    inbox.wait_for_runs(len(first))

    # More files arrive while the beat works; it is SIGKILLed among them, more land while it
    # is down, and a new beat takes over (after the dead one's 1 s lease expires).
    inbox.upload("inbox/d.csv", lines=4)
    inbox.upload("inbox/e%20f.csv", lines=5)
    time.sleep(0.3)  # about one sensor interval: the kill may hit a tick in flight
    kill_group(beat)
    inbox.upload("inbox/g.csv", lines=6)
    inbox.upload("inbox/deep/er/h.csv", lines=7)
    inbox.start_beat()
    inbox.wait_for_runs(len(inbox.uploaded))
    inbox.wait_for_ticks(3)  # later ticks see every object again and must request nothing

    runs = inbox.runs()
    keys = Counter(r.tags[KEY_TAG] for r in runs)
    assert keys == Counter(list(inbox.uploaded)), "each object exactly one run"
    assert all(r.status == RunStatus.SUCCESS and r.origin == f"sensor:{SENSOR}" for r in runs)
    assert all(r.tags[BUCKET_TAG] == inbox.bucket for r in runs)
    partitions = inbox.storage.dynamic_partition_keys(PARTITIONS)
    assert sorted(partitions) == sorted(default_partition_key(k) for k in inbox.uploaded), "one partition each"
    assert {r.tags[KEY_TAG]: r.tags[PARTITION_TAG] for r in runs} == {
        k: default_partition_key(k) for k in inbox.uploaded
    }
    ticks = inbox.storage.get_ticks(SENSOR, limit=1000)
    assert not [t for t in ticks if t.status == "FAILURE"], [t.error for t in ticks if t.error]

    # each run read its own object from S3 and handed it downstream through S3IOManager
    materialized = {(m.asset_key, m.run_id): m for m in inbox.storage.get_materializations()}
    for run in runs:
        key, partition = run.tags[KEY_TAG], run.tags[PARTITION_TAG]
        text = inbox.uploaded[key]
        metadata = materialized[("inbox_file", run.run_id)].metadata
        assert metadata["s3_key"] == key and metadata["bytes"] == len(text.encode())
        output = f"outputs/inbox_file/{quote(partition, safe='')}"
        assert metadata["uri"] == f"s3://{inbox.bucket}/{output}"
        stored = pickle.loads(inbox.client.get_object(Bucket=inbox.bucket, Key=output)["Body"].read())
        assert stored == {"key": key, "partition": partition, "text": text}
        lines = inbox.client.get_object(Bucket=inbox.bucket, Key=f"outputs/inbox_lines/{quote(partition, safe='')}")
        assert pickle.loads(lines["Body"].read()) == len(text.splitlines())
