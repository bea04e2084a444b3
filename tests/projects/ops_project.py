"""Op jobs run on real worker processes (tests/test_op_processes.py): a diamond, a nested graph,
an optional output left out, a dynamic fan-out of 50 mapped steps (one failing once, retried)
collected, and a daily-partitioned op job driven by its schedule."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import tidegate as dg

EFFECTS = Path(os.environ.get("TIDEGATE_TEST_EFFECTS", "/tmp/tidegate-ops-effects"))


def note(name: str, line: str) -> None:
    EFFECTS.mkdir(parents=True, exist_ok=True)
    with (EFFECTS / f"{name}.log").open("a") as handle:
        handle.write(line + "\n")


@dg.op
def source() -> int:
    return 3


@dg.op
def left(x: int) -> int:
    return x + 1


@dg.op
def right(x: int) -> int:
    return x * 10


@dg.op
def join(context: dg.OpExecutionContext, a: int, b: int) -> int:
    context.log.info(f"joined {a} and {b}")
    note("join", f"{a + b}")
    return a + b


@dg.job(tags={"team": "ops"}, metadata={"owner": "data"}, description="A diamond of ops.")
def diamond_job() -> None:
    value = source()
    join(left(value), right(value))


@dg.graph
def inner(x: int) -> int:
    return right(left(x))


@dg.graph
def outer(x: int) -> int:
    return left(inner(x))


@dg.op
def record(value: int) -> None:
    note("nested", str(value))


@dg.job
def nested_job() -> None:
    record(outer(source()))


@dg.op(out={"maybe": dg.Out(is_required=False), "always": dg.Out()})
def branch():  # type: ignore[no-untyped-def]
    yield dg.Output(1, "always")


@dg.op
def on_maybe(value: int) -> None:
    note("on_maybe", str(value))


@dg.op
def on_always(value: int) -> None:
    note("on_always", str(value))


@dg.job
def optional_job() -> None:
    maybe, always = branch()
    on_always(always)
    on_maybe(maybe)


@dg.op(out=dg.DynamicOut())
def split():  # type: ignore[no-untyped-def]
    for i in range(50):
        yield dg.DynamicOutput(i, mapping_key=f"n{i}")


@dg.op(retry_policy=dg.RetryPolicy(max_retries=2))
def square(context: dg.OpExecutionContext, n: int) -> int:
    note("square", f"{context.get_mapping_key()} {context.retry_number}")
    if n == 13 and context.retry_number == 0:
        raise RuntimeError("unlucky thirteen (first attempt)")
    return n * n


@dg.op
def total(values: list[int]) -> int:
    note("total", str(sum(values)))
    return sum(values)


@dg.job
def fan_out_job() -> None:
    total(split().map(square).collect())


@dg.op
def daily_report(context: dg.OpExecutionContext) -> str:
    note("daily_report", context.partition_key)
    return context.partition_key


@dg.daily_partitioned_config(start_date=datetime(2024, 1, 1))
def daily_config(start: datetime, end: datetime) -> dict[str, object]:
    return {}


@dg.job(config=daily_config)
def daily_job() -> None:
    daily_report()


daily_schedule = dg.build_schedule_from_partitioned_job(daily_job, default_status=dg.DefaultScheduleStatus.RUNNING)

defs = dg.Definitions(
    jobs=[diamond_job, nested_job, optional_job, fan_out_job, daily_job],
    schedules=[daily_schedule],
)
