"""A project for the S3 end-to-end test (tests/test_s3_e2e.py): files uploaded under ``inbox/``
become runs and dynamic partitions through ``s3_sensor``; each run reads its file from S3.

* ``inbox_sensor`` (running by default) requests one run of ``inbox_job`` per new object, with
  the object's partition key (``default_partition_key``) added to ``inbox_files`` in the
  same transaction.
* ``inbox_file`` reads the object named by the run's tags through the ``s3`` resource.
* ``inbox_lines`` counts its lines, loading ``inbox_file``'s output through ``S3IOManager``
  (objects under ``outputs/``, which the sensor does not watch).

Environment: ``S3_PROJECT_ENDPOINT`` and ``S3_PROJECT_BUCKET``.
"""

from __future__ import annotations

import os
from typing import Any

import tidegate as tg
from tidegate.names import S3_BUCKET_TAG as BUCKET_TAG
from tidegate.names import S3_KEY_TAG as KEY_TAG
from tidegate.s3 import S3IOManager, S3Resource, s3_sensor

BUCKET = os.environ.get("S3_PROJECT_BUCKET", "tidegate-test")
inbox_files = tg.DynamicPartitionsDefinition(name="inbox_files")


@tg.asset(partitions_def=inbox_files)
def inbox_file(context: tg.AssetExecutionContext, s3: S3Resource) -> dict[str, Any]:
    bucket, key = context.tags[BUCKET_TAG], context.tags[KEY_TAG]
    body = s3.get_client().get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    context.add_output_metadata({"s3_key": key, "bytes": len(body.encode())})
    return {"key": key, "partition": context.partition_key, "text": body}


@tg.asset(partitions_def=inbox_files)
def inbox_lines(inbox_file: dict[str, Any]) -> int:
    return len(inbox_file["text"].splitlines())


inbox_job = tg.define_asset_job("inbox_job", [inbox_file, inbox_lines])

inbox_sensor = s3_sensor(
    "inbox_sensor",
    bucket=BUCKET,
    prefix="inbox/",
    target=inbox_job,
    partitions_def=inbox_files,
    minimum_interval_seconds=0.2,
    default_status=tg.DefaultSensorStatus.RUNNING,
)

s3 = S3Resource(endpoint_url=os.environ.get("S3_PROJECT_ENDPOINT"), region_name="us-east-1")
defs = tg.Definitions(
    assets=[inbox_file, inbox_lines],
    jobs=[inbox_job],
    sensors=[inbox_sensor],
    resources={"s3": s3, "io_manager": S3IOManager(bucket=BUCKET, prefix="outputs", s3=s3)},
)
