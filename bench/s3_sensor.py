"""S3 requests and milliseconds per sensor tick, by mode, against a bucket of many keys.

    .venv/bin/python bench/s3_sensor.py [--sizes 5000,20000] [--new 10]

Starts moto in server mode on a free port (S3 and SQS over HTTP on this machine), fills one
bucket to each size in ``--sizes``, lets every strategy catch up, then adds ``--new`` keys and
measures one tick of each strategy in the same run, then one idle tick:

- ``ordered``, ``any``, ``events``: ``tidegate.s3_sensor``'s evaluation (the events mode
  including its after-commit delete), called directly: no database, only the S3/SQS cost;
- ``naive``: the reference approach: list the whole prefix, sort by LastModified, return the
  keys after the last one seen (all keys if that one is gone).

Requests are counted with a botocore ``before-call`` hook (one per API call). Requests per
tick at 1,000,000 keys are extrapolated from the largest size: linear in the bucket for the
strategies whose count grew between sizes, constant for the others. Peak RSS is this process's
(the moto server runs in its own process).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
import moto

import tidegate as tg
from tests.s3_support import DUMMY_AWS_ENV, RequestCounter, moto_server, new_bucket, put_objects
from tidegate.definitions.context import Resources
from tidegate.definitions.sensor import SensorEvaluationContext

PREFIX = "data/"
EXTRAPOLATE_TO = 1_000_000
MODES = ("ordered", "any", "events", "naive")


@tg.asset
def ingest() -> None:
    return None


JOB = tg.define_asset_job("ingest_job", [ingest])


def key_name(i: int) -> str:
    return f"{PREFIX}{i // 1000:04}/part-{i:08}.csv"  # increasing: valid for the ordered mode too


@dataclass
class Strategy:
    name: str
    tick: Callable[[], list[str]]  # one tick: the keys it requests (and commits its state)
    cursor: list[str | None] | None = None  # a sensor's stored cursor, in a one-item list


def sensor_strategy(mode: str, sensor: tg.SensorDefinition, reader: tg.S3Resource) -> Strategy:
    cursor: list[str | None] = [None]

    def tick() -> list[str]:
        context = SensorEvaluationContext(
            sensor.name, cursor[0], None, None, Resources({"s3": reader}), logging.getLogger("bench")
        )
        evaluation = sensor.evaluate(context, {"s3": reader})
        if evaluation.cursor_set:
            cursor[0] = evaluation.cursor
        if evaluation.on_commit is not None:  # what the beat does once the tick is committed
            evaluation.on_commit()
        return [r.tags["tidegate/s3_key"] for r in evaluation.run_requests]

    return Strategy(mode, tick, cursor)


def naive_strategy(client: Any, bucket: str) -> Strategy:
    since: list[str | None] = [None]

    def tick() -> list[str]:
        objects = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX):
            objects.extend(page.get("Contents", ()))
        keys = [o["Key"] for o in sorted(objects, key=lambda o: o["LastModified"])]
        new = keys[keys.index(since[0]) + 1 :] if since[0] in keys else keys
        if new:
            since[0] = new[-1]
        return new

    return Strategy("naive", tick)


def catch_up(strategy: Strategy) -> None:
    while strategy.tick():
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,20000", help="bucket sizes to measure at, increasing")
    parser.add_argument("--new", type=int, default=10, help="new keys per measured tick")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    os.environ.update(DUMMY_AWS_ENV)
    logging.basicConfig(level=logging.WARNING)
    print(
        f"conditions: Python {platform.python_version()}, boto3 {boto3.__version__}, moto {moto.__version__} "
        f"server on 127.0.0.1, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
        f"{platform.platform()}"
    )
    print(f"bucket sizes {sizes}, {args.new} new keys per measured tick, keys like {key_name(12345)!r}")
    with moto_server() as url:
        writer = tg.S3Resource(endpoint_url=url, region_name="us-east-1")
        reader = tg.S3Resource(endpoint_url=url, region_name="us-east-1")
        s3, sqs = writer.get_client(), writer.get_sqs_client()
        counter = RequestCounter(reader.get_client(), reader.get_sqs_client())
        bucket = new_bucket(s3, "bench")
        queue_url = sqs.create_queue(QueueName="bench-events")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

        def sensor(mode: str, **extra: Any) -> tg.SensorDefinition:
            return tg.s3_sensor(f"bench_{mode}", bucket, PREFIX, target=JOB, mode=mode, **extra)

        strategies = [
            sensor_strategy("ordered", sensor("ordered", max_runs_per_tick=100_000), reader),
            sensor_strategy("any", sensor("any", max_runs_per_tick=100_000), reader),
            sensor_strategy("events", sensor("events", queue_url=queue_url, wait_time_seconds=0), reader),
            naive_strategy(reader.get_client(), bucket),
        ]
        written = 0
        results: dict[int, dict[str, tuple[int, float, int, float]]] = {}
        for size in sizes:
            # Fill without notifications (moto's SQS slows down with the queue's length), then
            # turn them on for the keys the measured tick will find.
            s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
            started = time.perf_counter()
            put_objects(s3, bucket, [key_name(i) for i in range(written, size - args.new)])
            written = size - args.new
            print(f"filled to {written} keys in {time.perf_counter() - started:.1f}s", flush=True)
            s3.put_bucket_notification_configuration(
                Bucket=bucket,
                NotificationConfiguration={
                    "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
                },
            )
            for strategy in strategies:
                catch_up(strategy)  # includes the s3:TestEvent for the events mode
            new_keys = [key_name(i) for i in range(written, size)]
            put_objects(s3, bucket, new_keys)
            written = size
            results[size] = {}
            for strategy in strategies:
                counter.reset()
                started = time.perf_counter()
                found = strategy.tick()
                busy_ms = (time.perf_counter() - started) * 1000
                busy_requests = sum(counter.reset().values())
                if sorted(found) != new_keys:
                    raise SystemExit(f"{strategy.name}: found {len(found)} keys, expected the {args.new} new ones")
                started = time.perf_counter()
                idle = strategy.tick()
                idle_ms = (time.perf_counter() - started) * 1000
                idle_requests = sum(counter.reset().values())
                if idle:
                    raise SystemExit(f"{strategy.name}: an idle tick found {len(idle)} keys")
                results[size][strategy.name] = (busy_requests, busy_ms, idle_requests, idle_ms)
        any_cursor = (strategies[1].cursor or [None])[0] or ""

    print()
    print(f"{'mode':<9}{'keys':>8}{'req/tick':>10}{'ms/tick':>10}{'idle req':>10}{'idle ms':>9}{'req @1M keys':>14}")
    largest, smallest = sizes[-1], sizes[0]
    for name in MODES:
        for size in sizes:
            busy_requests, busy_ms, idle_requests, idle_ms = results[size][name]
            extrapolated = ""
            if size == largest:
                grows = busy_requests > results[smallest][name][0] or (len(sizes) == 1 and name in ("any", "naive"))
                projected = (
                    busy_requests
                    - math.ceil(largest / 1000)
                    + math.ceil(EXTRAPOLATE_TO / 1000)  # the listing's pages grow, the rest does not
                    if grows
                    else busy_requests
                )
                extrapolated = str(projected)
            print(
                f"{name:<9}{size:>8}{busy_requests:>10}{busy_ms:>10.1f}{idle_requests:>10}{idle_ms:>9.1f}"
                f"{extrapolated:>14}"
            )
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print()
    hashes = len(json.loads(any_cursor).get("seen", ())) if any_cursor else 0
    print(
        f"any-mode cursor after the last tick: {len(any_cursor.encode())} bytes, {hashes} (key, ETag) hashes "
        "(every object here was written within lag_seconds=900 of the listing; older ones fall below the "
        "watermark and leave the cursor)"
    )
    print(f"peak RSS of this process: {peak_kb / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
