"""``s3_sensor`` in its three modes against moto in server mode (S3, SNS and SQS over HTTP),
ticked by a real beat on SQLite and PostgreSQL with a fake clock, so exactly-once is checked
in SQL; plus the beat's ``SensorResult.on_commit`` hook and ``tidegate sensor preview``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tidegate as tg
from tests.s3_support import (
    DUMMY_AWS_ENV,
    REGION,
    RequestCounter,
    delete_bucket,
    new_bucket,
    put_objects,
    s3_endpoint,  # noqa: F401
    seed_objects,
)
from tests.support import TIDEGATE
from tidegate.config import Settings
from tidegate.errors import InvalidDefinitionError
from tidegate.names import PARTITION_TAG, TickStatus
from tidegate.names import S3_BUCKET_TAG as BUCKET_TAG
from tidegate.names import S3_ETAG_TAG as ETAG_TAG
from tidegate.names import S3_KEY_TAG as KEY_TAG
from tidegate.names import S3_SIZE_TAG as SIZE_TAG
from tidegate.s3 import S3Resource
from tidegate.s3.sensor import default_partition_key
from tidegate.scheduler.beat import LEASE_NAME, Beat, TickReport
from tidegate.scheduler.clock import FakeClock
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRef

RUNNING = tg.DefaultSensorStatus.RUNNING
NO_LAUNCH = {"run_queue": {"max_concurrent_runs": 0}}  # the beat's launcher starts no run
T0 = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)
EXISTING = 2500  # three list pages
SEED_PREFIX = "data/2024-01-01/"
# keys that sort after every seeded key (for ordered mode), with the characters that break naive code
ODD_KEYS = [
    "data/2024-01-02/with space.csv",
    "data/2024-01-02/plus+sign.csv",
    "data/2024-01-02/per%cent%2F.csv",
    "data/2024-01-02/ünïcødé-数据.csv",
    "data/2024-01-02/deep/er/and/deeper/still/x.csv",
    "data/2024-01-02/comma,[brackets].csv",
]


@tg.asset
def ingest() -> None:
    return None


INGEST = tg.define_asset_job("ingest_job", [ingest])
FILES = tg.DynamicPartitionsDefinition(name="s3_files")


@tg.asset(partitions_def=FILES)
def per_file() -> None:
    return None


PER_FILE = tg.define_asset_job("per_file_job", [per_file])


class Ticker:
    """A beat stepped by its fake clock, one sensor interval per ``tick()``."""

    def __init__(
        self, defs: tg.Definitions, storage: Storage, interval: float = 30, config: Settings | None = None
    ) -> None:
        self.defs, self.storage, self.interval, self.config = defs, storage, interval, config
        self.clock = FakeClock(T0)
        self.published: list[StepRef] = []
        self.beat = Beat(defs, storage, self.published.extend, clock=self.clock, holder="s3-test-1", config=config)
        self.restarts = 1

    def tick(self, *, failures_allowed: bool = False) -> TickReport:
        report = self.beat.tick()
        if not failures_allowed:
            assert not report.failures, report.failures
        self.clock.advance(self.interval)
        return report

    def restart(self) -> None:
        """A new beat process on the same storage, after the old one died: its lease, which
        runs on the database's real clock, is over (released here instead of waited out)."""
        self.restarts += 1
        self.storage.release_lease(LEASE_NAME, self.beat.holder)
        self.clock.advance(self.beat.lease_seconds + 1)
        self.beat = Beat(
            self.defs,
            self.storage,
            self.published.extend,
            clock=self.clock,
            holder=f"s3-test-{self.restarts}",
            config=self.config,
        )


def _defs(sensor: tg.SensorDefinition, resource: S3Resource, partitioned: bool = False) -> tg.Definitions:
    if partitioned:
        return tg.Definitions(assets=[per_file], jobs=[PER_FILE], sensors=[sensor], resources={"s3": resource})
    return tg.Definitions(assets=[ingest], jobs=[INGEST], sensors=[sensor], resources={"s3": resource})


def _run_keys(storage: Storage) -> list[str]:
    return sorted(r.run_key or "" for r in storage.list_runs(limit=100_000))


def _etag(client: Any, bucket: str, key: str) -> str:
    return str(client.head_object(Bucket=bucket, Key=key)["ETag"]).strip('"')


def _expected(client: Any, bucket: str, keys: list[str]) -> list[str]:
    """``key@etag`` of each key, in the order given, listed by a separate client (not counted)."""
    endpoint = client.meta.endpoint_url
    lister = S3Resource(endpoint_url=endpoint, region_name=REGION).get_client()
    etags = {}
    for page in lister.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        etags.update({o["Key"]: o["ETag"].strip('"') for o in page.get("Contents", ())})
    return [f"{key}@{etags[key]}" for key in keys]


def _cursor(storage: Storage, name: str) -> dict[str, Any]:
    state = storage.get_instigator(name)
    assert state is not None and state.cursor is not None
    loaded: dict[str, Any] = json.loads(state.cursor)
    return loaded


def _waiting_messages(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


# -- a bucket of 2,500 objects, shared by the module ---------------------------------------------


@dataclass
class Seeded:
    endpoint: str
    bucket: str
    keys: list[str]


@pytest.fixture(scope="module")
def seeded(s3_endpoint: str) -> Iterator[Seeded]:  # noqa: F811
    resource = S3Resource(endpoint_url=s3_endpoint, region_name=REGION)
    s3 = resource.get_client()
    bucket = new_bucket(s3, "tg-seeded")
    keys = [f"{SEED_PREFIX}part-{i:05}.csv" for i in range(EXISTING)]
    seed_objects(s3_endpoint, bucket, keys)
    assert (
        sum(page.get("KeyCount", 0) for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)) == EXISTING
    )
    yield Seeded(s3_endpoint, bucket, keys)
    delete_bucket(s3, bucket)


@pytest.mark.parametrize("mode", ["ordered", "any"])
def test_existing_keys_and_new_arrivals_each_run_once(mode: str, seeded: Seeded, storage: Storage) -> None:
    resource = S3Resource(endpoint_url=seeded.endpoint, region_name=REGION)
    s3 = resource.get_client()
    counter = RequestCounter(s3)
    sensor = tg.s3_sensor(
        "uploads",
        seeded.bucket,
        prefix="data/",
        pattern="*.csv",
        target=INGEST,
        mode=mode,
        max_runs_per_tick=1000,
        default_status=RUNNING,
    )
    # The runs stay QUEUED: what is checked is which runs the sensor requested, and the beat's
    # launcher starting 2,500 runs, one transaction each, took ~12 s of each of these 4 tests
    # (the launcher has tests of its own: test_run_queue, test_beat_load).
    ticker = Ticker(_defs(sensor, resource), storage, config=Settings.from_dict(NO_LAUNCH))
    try:
        per_tick = []
        for _ in range(3):  # 2,500 objects at 1,000 per tick
            ticker.tick()
            per_tick.append(len(storage.get_ticks("uploads")[0].new_run_keys))
            # ordered: StartAfter the cursor, one page per 1,000 new keys; any: ceil(2,500 / 1,000) pages
            assert counter.reset() == {"ListObjectsV2": 1 if mode == "ordered" else 3}
        assert per_tick == [1000, 1000, 500]
        before = sorted(_expected(s3, seeded.bucket, seeded.keys))
        assert _run_keys(storage) == before

        ticker.tick()  # nothing new
        assert _run_keys(storage) == before
        assert storage.get_ticks("uploads")[0].status == TickStatus.SKIPPED
        assert counter.reset() == {"ListObjectsV2": 1 if mode == "ordered" else 3}

        put_objects(s3, seeded.bucket, [*ODD_KEYS, "data/2024-01-02/skipped.txt"])  # the .txt: no pattern match
        counter.reset()
        ticker.restart()  # and a new beat process picks them up
        ticker.tick()
        runs = {r.run_key: r for r in storage.list_runs(limit=10_000)}
        assert sorted(runs) == sorted([*before, *_expected(s3, seeded.bucket, ODD_KEYS)])
        _check_tags(s3, seeded.bucket, runs, ODD_KEYS)
        assert counter.reset() == {"ListObjectsV2": 1 if mode == "ordered" else 3}
        ticker.tick()
        assert len(_run_keys(storage)) == len(runs)
    finally:
        s3.delete_objects(
            Bucket=seeded.bucket,
            Delete={"Objects": [{"Key": k} for k in [*ODD_KEYS, "data/2024-01-02/skipped.txt"]]},
        )


def test_events_mode_on_a_large_bucket_costs_per_event(seeded: Seeded, storage: Storage) -> None:
    """The 2,500 objects already there cost nothing; 25 arrivals at 10 per tick cost one receive
    and one delete per tick. (A backlog of thousands of messages is not tested here: moto's SQS
    takes time proportional to the queue's length for each call.)"""
    resource = S3Resource(endpoint_url=seeded.endpoint, region_name=REGION)
    s3, sqs = resource.get_client(), resource.get_sqs_client()
    queue_url = _notify(s3, sqs, seeded.bucket)
    counter = RequestCounter(s3, sqs)
    sensor = tg.s3_sensor(
        "uploads",
        seeded.bucket,
        prefix="data/",
        target=INGEST,
        mode="events",
        queue_url=queue_url,
        wait_time_seconds=0,
        max_runs_per_tick=10,
        default_status=RUNNING,
    )
    arrivals = [*ODD_KEYS, *(f"data/2024-01-03/n-{i:02}.csv" for i in range(19))]
    ticker = Ticker(_defs(sensor, resource), storage)
    try:
        ticker.tick()  # the s3:TestEvent sent when the notification was configured
        assert _run_keys(storage) == [] and counter.reset() == {"ReceiveMessage": 1, "DeleteMessageBatch": 1}
        put_objects(s3, seeded.bucket, arrivals)
        counter.reset()
        per_tick = []
        for i in range(4):
            if i == 2:
                ticker.restart()
            ticker.tick()
            per_tick.append(len(storage.get_ticks("uploads")[0].new_run_keys))
            calls = counter.reset()
            assert calls["ReceiveMessage"] + calls["DeleteMessageBatch"] <= 2, calls
        assert per_tick == [10, 10, 5, 0]
        runs = {r.run_key: r for r in storage.list_runs(limit=100)}
        assert sorted(runs) == sorted(_expected(s3, seeded.bucket, arrivals))
        _check_tags(s3, seeded.bucket, runs, arrivals)
        assert _waiting_messages(sqs, queue_url) == 0  # every message deleted
    finally:
        s3.put_bucket_notification_configuration(Bucket=seeded.bucket, NotificationConfiguration={})
        s3.delete_objects(Bucket=seeded.bucket, Delete={"Objects": [{"Key": k} for k in arrivals]})
        sqs.delete_queue(QueueUrl=queue_url)


def _notify(s3: Any, sqs: Any, bucket: str, events: tuple[str, ...] = ("s3:ObjectCreated:*",)) -> str:
    """A new queue that receives the bucket's notifications (a real S3 -> SQS configuration)."""
    queue_url: str = sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": list(events)}]},
    )
    return queue_url


def _check_tags(s3: Any, bucket: str, runs: dict[str | None, Any], keys: list[str]) -> None:
    for key, run_key in zip(keys, _expected(s3, bucket, keys), strict=True):
        etag = run_key.rsplit("@", 1)[1]
        run = runs[run_key]
        assert run.tags[KEY_TAG] == key and run.tags[BUCKET_TAG] == bucket
        assert run.tags[ETAG_TAG] == etag and run.tags[SIZE_TAG] == "1"


# -- any mode: naming, re-writes, deletions, ties, bounded state ---------------------------------


@pytest.fixture
def s3(s3_endpoint: str) -> Iterator[tuple[S3Resource, Any, str]]:  # noqa: F811
    """A resource, its client and a fresh bucket deleted afterwards."""
    resource = S3Resource(endpoint_url=s3_endpoint, region_name=REGION)
    client = resource.get_client()
    bucket = new_bucket(client)
    yield resource, client, bucket
    delete_bucket(client, bucket)


def test_any_mode_finds_out_of_order_and_rewritten_keys_and_ignores_deleted_ones(
    s3: tuple[S3Resource, Any, str], storage: Storage
) -> None:
    resource, client, bucket = s3
    put_objects(client, bucket, ["m.csv", "z.csv", "a.csv"])
    sensor = tg.s3_sensor("anything", bucket, target=INGEST, default_status=RUNNING, lag_seconds=1)
    ticker = Ticker(_defs(sensor, resource), storage)
    ticker.tick()
    first = sorted(_expected(client, bucket, ["a.csv", "m.csv", "z.csv"]))
    assert _run_keys(storage) == first

    put_objects(client, bucket, ["b.csv"])  # sorts before keys already seen
    client.put_object(Bucket=bucket, Key="z.csv", Body=b"new content")  # re-written: a new ETag
    client.delete_object(Bucket=bucket, Key="a.csv")  # deleted: nothing to do
    ticker.tick()
    assert _run_keys(storage) == sorted([*first, *_expected(client, bucket, ["b.csv", "z.csv"])])
    assert len(_run_keys(storage)) == 5

    ticker.tick()
    assert len(_run_keys(storage)) == 5  # nothing twice
    time.sleep(2.1)  # past lag_seconds on S3's clock: every object is now below the watermark
    ticker.tick()
    cursor = _cursor(storage, "anything")
    assert cursor["seen"] == [] and cursor["watermark_ms"] > 0  # the state does not grow with the bucket
    assert len(_run_keys(storage)) == 5


def test_any_mode_cap_with_objects_sharing_one_second_loses_nothing(
    s3: tuple[S3Resource, Any, str], storage: Storage
) -> None:
    resource, client, bucket = s3
    keys = [f"in/{name}.json" for name in ("q", "c", "x", "a", "k", "e", "w", "b", "t", "f")]
    put_objects(client, bucket, keys)  # within a second or so: equal LastModified values
    sensor = tg.s3_sensor("capped", bucket, "in/", target=INGEST, max_runs_per_tick=3, default_status=RUNNING)
    ticker = Ticker(_defs(sensor, resource), storage)
    sizes = []
    for _ in range(5):
        ticker.tick()
        sizes.append(len(storage.get_ticks("capped")[0].new_run_keys))
    assert sizes == [3, 3, 3, 1, 0]
    assert _run_keys(storage) == sorted(_expected(client, bucket, keys))


# -- events mode: a real S3 -> SQS notification configuration ------------------------------------


@pytest.fixture
def notified(s3: tuple[S3Resource, Any, str]) -> Iterator[tuple[S3Resource, Any, Any, str, str]]:
    resource, client, bucket = s3
    sqs = resource.get_sqs_client()
    queue_url = _notify(client, sqs, bucket, ("s3:ObjectCreated:*", "s3:ObjectRemoved:*"))
    yield resource, client, sqs, bucket, queue_url
    sqs.delete_queue(QueueUrl=queue_url)


def test_events_mode_decodes_keys_ignores_test_and_removal_events(
    notified: tuple[S3Resource, Any, Any, str, str], storage: Storage
) -> None:
    resource, client, sqs, bucket, queue_url = notified
    assert _waiting_messages(sqs, queue_url) == 1  # S3 (and moto) send an s3:TestEvent on configuration
    sensor = tg.s3_sensor(
        "events", bucket, target=INGEST, mode="events", queue_url=queue_url, wait_time_seconds=0, default_status=RUNNING
    )
    ticker = Ticker(_defs(sensor, resource), storage)
    ticker.tick()
    assert _run_keys(storage) == [] and _waiting_messages(sqs, queue_url) == 0  # the test event is consumed

    put_objects(client, bucket, ODD_KEYS)
    client.put_object(Bucket=bucket, Key=ODD_KEYS[0], Body=b"re-written")  # a second event, new ETag
    client.delete_object(Bucket=bucket, Key=ODD_KEYS[1])  # an ObjectRemoved event: no run
    body = json.loads(sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=0)["Messages"][0]["Body"])
    raw_key = body["Records"][0]["s3"]["object"]["key"]
    assert urllib.parse.unquote_plus(raw_key) in ODD_KEYS and ("+" in raw_key or "%" in raw_key)  # URL-encoded
    ticker.tick()
    runs = {r.run_key: r for r in storage.list_runs(limit=100)}
    assert len(runs) == len(ODD_KEYS) + 1
    assert {r.tags[KEY_TAG] for r in runs.values()} == set(ODD_KEYS)
    assert f"{ODD_KEYS[0]}@{_etag(client, bucket, ODD_KEYS[0])}" in runs
    assert _waiting_messages(sqs, queue_url) == 0


def test_events_mode_deletes_nothing_when_the_commit_fails(
    notified: tuple[S3Resource, Any, Any, str, str], storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    resource, client, sqs, bucket, queue_url = notified
    sqs.purge_queue(QueueUrl=queue_url)
    sensor = tg.s3_sensor(
        "events",
        bucket,
        target=INGEST,
        mode="events",
        queue_url=queue_url,
        wait_time_seconds=0,
        visibility_timeout_seconds=1,
        default_status=RUNNING,
    )
    ticker = Ticker(_defs(sensor, resource), storage)
    put_objects(client, bucket, ["one.csv", "two.csv"])
    real_commit = storage.commit_tick
    failures = []

    def refuse(*args: Any, **kwargs: Any) -> Any:  # the database refuses the tick (both attempts)
        failures.append(kwargs["outcome"].status)
        raise RuntimeError("injected: the database went away")

    monkeypatch.setattr(storage, "commit_tick", refuse)
    report = ticker.tick(failures_allowed=True)
    assert report.failures and failures == [TickStatus.SUCCESS, TickStatus.FAILURE]
    assert _run_keys(storage) == [] and _waiting_messages(sqs, queue_url) == 2  # received, not deleted

    # The run commit fails but the FAILURE tick is recorded: still nothing deleted.
    def refuse_runs(*args: Any, **kwargs: Any) -> Any:
        if kwargs["outcome"].status == TickStatus.SUCCESS:
            raise RuntimeError("injected: value too long")
        return real_commit(*args, **kwargs)

    time.sleep(1.2)  # the visibility timeout: the messages come back
    monkeypatch.setattr(storage, "commit_tick", refuse_runs)
    ticker.tick(failures_allowed=True)
    assert storage.get_ticks("events")[0].status == TickStatus.FAILURE
    assert _run_keys(storage) == [] and _waiting_messages(sqs, queue_url) == 2

    time.sleep(1.2)
    monkeypatch.setattr(storage, "commit_tick", real_commit)
    ticker.restart()  # a fresh beat process takes over and commits
    ticker.tick()
    assert _run_keys(storage) == sorted(_expected(client, bucket, ["one.csv", "two.csv"]))
    assert _waiting_messages(sqs, queue_url) == 0


# -- partitions --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ordered", "any"])
def test_one_dynamic_partition_per_object_added_with_its_run(
    mode: str, s3: tuple[S3Resource, Any, str], storage: Storage
) -> None:
    resource, client, bucket = s3
    keys = ["p/2024/01/a,b.csv", "p/2024/01/c d.csv", "p/top.csv", "p/" + "long-" * 60 + ".csv"]
    put_objects(client, bucket, keys)
    sensor = tg.s3_sensor(
        "files", bucket, "p/", target=PER_FILE, mode=mode, partitions_def=FILES, default_status=RUNNING
    )
    ticker = Ticker(_defs(sensor, resource, partitioned=True), storage)
    ticker.tick()
    ticker.tick()
    partition_keys = [default_partition_key(k) for k in keys]
    assert sorted(storage.dynamic_partition_keys("s3_files")) == sorted(partition_keys)
    assert "p%2F2024%2F01%2Fa%2Cb.csv" in partition_keys and all(len(k) <= 255 for k in partition_keys)
    assert urllib.parse.unquote(partition_keys[0]) == keys[0]
    runs = storage.list_runs(limit=100)
    assert sorted(r.tags[PARTITION_TAG] for r in runs) == sorted(partition_keys)
    assert {r.tags[PARTITION_TAG]: r.tags[KEY_TAG] for r in runs} == dict(zip(partition_keys, keys, strict=True))


# -- definitions, credentials ------------------------------------------------------------------


def test_bad_definitions_fail_at_import_naming_the_sensor() -> None:
    with pytest.raises(InvalidDefinitionError, match="sensor 'x': mode must be one of"):
        tg.s3_sensor("x", "b", target=INGEST, mode="fifo")
    with pytest.raises(InvalidDefinitionError, match="needs queue_url"):
        tg.s3_sensor("x", "b", target=INGEST, mode="events")
    with pytest.raises(InvalidDefinitionError, match="only used with mode='events'"):
        tg.s3_sensor("x", "b", target=INGEST, queue_url="https://sqs/q")
    with pytest.raises(InvalidDefinitionError, match="bucket must be a bucket name"):
        tg.s3_sensor("x", "s3://b/prefix", target=INGEST)
    with pytest.raises(InvalidDefinitionError, match="DynamicPartitionsDefinition"):
        tg.s3_sensor("x", "b", target=INGEST, partitions_def=tg.StaticPartitionsDefinition(["a"]))  # type: ignore[arg-type]
    with pytest.raises(InvalidDefinitionError, match="max_runs_per_tick"):
        tg.s3_sensor("x", "b", target=INGEST, max_runs_per_tick=0)
    with pytest.raises(tg.MissingResourceError, match="missing resource 's3'"):
        tg.Definitions(assets=[ingest], sensors=[tg.s3_sensor("x", "b", target=INGEST)])
    with pytest.raises(InvalidDefinitionError, match="aws_access_key_id and aws_secret_access_key"):
        S3Resource(aws_access_key_id="AKIA-ONLY-HALF")


def test_credentials_never_appear_in_repr_ticks_or_errors(s3_endpoint: str, storage: Storage) -> None:  # noqa: F811
    secret = "s3cr3t-" + uuid.uuid4().hex
    resource = S3Resource(
        endpoint_url=s3_endpoint, region_name=REGION, aws_access_key_id="AKIDTIDEGATE", aws_secret_access_key=secret
    )
    assert secret not in repr(resource) and "AKIDTIDEGATE" not in repr(resource)
    sensor = tg.s3_sensor("missing", "no-such-bucket-" + uuid.uuid4().hex[:8], target=INGEST, default_status=RUNNING)
    ticker = Ticker(_defs(sensor, resource), storage)
    report = ticker.tick(failures_allowed=True)
    [tick] = storage.get_ticks("missing")
    assert tick.status == TickStatus.FAILURE and "NoSuchBucket" in (tick.error or "")
    assert secret not in (tick.error or "") and secret not in " ".join(report.failures)


# -- the beat's on_commit hook -------------------------------------------------------------------


def test_on_commit_runs_after_the_commit_and_never_on_failure(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    @tg.sensor(target=INGEST, default_status=RUNNING)
    def hooked(context: tg.SensorEvaluationContext) -> tg.SensorResult:
        n = int(context.cursor or 0)

        def acknowledge() -> None:
            state = storage.get_instigator("hooked")
            calls.append(f"{n}:{state.cursor if state else None}:{len(storage.list_runs(limit=10))}")

        return tg.SensorResult(run_requests=[tg.RunRequest(run_key=f"r{n}")], cursor=str(n + 1), on_commit=acknowledge)

    ticker = Ticker(tg.Definitions(assets=[ingest], jobs=[INGEST], sensors=[hooked]), storage)
    ticker.tick()
    assert calls == ["0:1:1"]  # called once, and the cursor and the run were already committed

    real_commit = storage.commit_tick

    def refuse(*args: Any, **kwargs: Any) -> Any:
        if kwargs["outcome"].status == TickStatus.SUCCESS:
            raise RuntimeError("injected")
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(storage, "commit_tick", refuse)
    ticker.tick(failures_allowed=True)  # recorded as a FAILURE tick: no hook
    monkeypatch.setattr(storage, "commit_tick", lambda *a, **k: None)  # superseded by another beat: no hook
    ticker.tick()
    assert calls == ["0:1:1"]
    monkeypatch.setattr(storage, "commit_tick", real_commit)
    ticker.tick()
    assert calls == ["0:1:1", "1:2:2"]


# -- tidegate sensor preview ---------------------------------------------------------------------

PREVIEW_DEFS = """
import os
import tidegate as tg


@tg.asset
def ingest() -> None:
    return None


job = tg.define_asset_job("ingest_job", [ingest])
s3 = tg.S3Resource(endpoint_url=os.environ["TEST_S3_ENDPOINT"], region_name="us-east-1")
sensors = [
    tg.s3_sensor("listing", os.environ["TEST_BUCKET"], target=job, mode="any"),
    tg.s3_sensor("queue", os.environ["TEST_BUCKET"], target=job, mode="events", queue_url=os.environ["TEST_QUEUE"],
                 wait_time_seconds=0, visibility_timeout_seconds=1),
]
defs = tg.Definitions(assets=[ingest], jobs=[job], sensors=sensors, resources={"s3": s3})
"""


def test_sensor_preview_shows_requests_and_commits_and_deletes_nothing(
    notified: tuple[S3Resource, Any, Any, str, str], tmp_path: Path
) -> None:
    resource, client, sqs, bucket, queue_url = notified
    sqs.purge_queue(QueueUrl=queue_url)
    put_objects(client, bucket, ["in/with space.csv"])
    project = tmp_path / "s3_defs.py"
    project.write_text(PREVIEW_DEFS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(DUMMY_AWS_ENV)
    env.update(
        TIDEGATE_HOME=str(tmp_path / "home"),
        TIDEGATE_BROKER_URL="memory://localhost/",
        TEST_S3_ENDPOINT=resource.endpoint_url or "",
        TEST_BUCKET=bucket,
        TEST_QUEUE=queue_url,
    )
    etag = _etag(client, bucket, "in/with space.csv")
    for name in ("listing", "queue"):
        result = subprocess.run(
            [TIDEGATE, "sensor", "preview", name, "-f", str(project)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"run_key='in/with space.csv@{etag}'" in result.stdout
        assert '"tidegate/s3_key": "in/with space.csv"' in result.stdout
    assert _waiting_messages(sqs, queue_url) == 1  # the preview received the event but did not delete it
    storage = Storage.open(f"sqlite:///{tmp_path / 'home' / 'tidegate.db'}")
    try:
        assert storage.list_runs() == [] and storage.get_instigator("listing") is None
    finally:
        storage.dispose()


# -- keys, and running without boto3 ---------------------------------------------------------------


@given(st.text(min_size=1, max_size=400))
@settings(max_examples=300, deadline=None)
def test_default_partition_keys_are_valid_and_reversible(key: str) -> None:
    partition_key = default_partition_key(key)
    assert len(partition_key) <= 255
    tg.DynamicPartitionsDefinition(name="p").build_add_request([partition_key])  # raises if not a valid key
    if "~" not in partition_key[-17:]:
        assert urllib.parse.unquote(partition_key, errors="strict") == key


def test_import_tidegate_without_boto3_names_the_extra() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, *args):\n"
        "        if name.split('.')[0] in ('boto3', 'botocore'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import tidegate as tg\n"
        "sensor = tg.s3_sensor('x', 'b', target=tg.define_asset_job('j', '*'))\n"
        "try:\n"
        "    tg.S3Resource().get_client()\n"
        "except tg.TidegateError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'tidegate[s3]'" in result.stdout
