"""A project for workers on several hosts (tests/test_multihost.py): outputs go through S3 only.

Each asset is routed to the queue of one "host" (``host_a`` or ``host_b``), alternating along
the graph, so every downstream step reads an output that the other host's worker wrote::

    numbers (a) -> squares (b) -> total (a) -> report (b)
           \\______________________________/

Every asset records the working directory and process it ran in as output metadata.
``local_job`` is the control: the filesystem IO manager (``TIDEGATE_IO_BASE_DIR``, per host)
cannot hand ``local_value`` (a) to ``local_reader`` (b) because the hosts share no directory.

Environment: ``S3_PROJECT_ENDPOINT`` (the S3 server), ``S3_PROJECT_BUCKET``, ``S3_PROJECT_PREFIX``.
"""

from __future__ import annotations

import os

import tidegate as tg
from tidegate.s3 import S3IOManager, S3Resource


def where(context: tg.AssetExecutionContext) -> None:
    context.add_output_metadata({"cwd": os.getcwd(), "pid": os.getpid()})


@tg.asset(queue="host_a")
def numbers(context: tg.AssetExecutionContext) -> list[int]:
    where(context)
    return list(range(1, 11))


@tg.asset(queue="host_b")
def squares(context: tg.AssetExecutionContext, numbers: list[int]) -> dict[int, int]:
    where(context)
    return {n: n * n for n in numbers}


@tg.asset(queue="host_a")
def total(context: tg.AssetExecutionContext, squares: dict[int, int]) -> int:
    where(context)
    return sum(squares.values())


@tg.asset(queue="host_b")
def report(context: tg.AssetExecutionContext, numbers: list[int], total: int) -> str:
    where(context)
    return f"sum of squares of {numbers[0]}..{numbers[-1]} = {total}"


@tg.asset(queue="host_a", io_manager_key="local_io")
def local_value(context: tg.AssetExecutionContext) -> str:
    where(context)
    return "written on host a"


@tg.asset(queue="host_b", io_manager_key="local_io")
def local_reader(local_value: str) -> str:
    return local_value


squares_job = tg.define_asset_job("squares_job", [numbers, squares, total, report])
local_job = tg.define_asset_job("local_job", [local_value, local_reader])

s3 = S3Resource(endpoint_url=os.environ.get("S3_PROJECT_ENDPOINT"), region_name="us-east-1")
defs = tg.Definitions(
    assets=[numbers, squares, total, report, local_value, local_reader],
    jobs=[squares_job, local_job],
    resources={
        "io_manager": S3IOManager(
            bucket=os.environ.get("S3_PROJECT_BUCKET", "tidegate-test"),
            prefix=os.environ.get("S3_PROJECT_PREFIX", "tidegate"),
            s3=s3,
        ),
        "local_io": tg.FilesystemIOManager(),
    },
)
