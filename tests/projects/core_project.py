"""A test project run by real worker processes (tests/test_workers.py).

Every asset appends one line to ``$TIDEGATE_TEST_EFFECTS/<asset>.log`` each time its code
runs, so tests can count executions independently of what tidegate records.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tidegate as tg


def effect(context: tg.AssetExecutionContext) -> None:
    directory = Path(os.environ["TIDEGATE_TEST_EFFECTS"])
    directory.mkdir(parents=True, exist_ok=True)
    line = f"{context.asset_key} {context.run_id} {context.attempt} {os.getpid()}\n"
    fd = os.open(directory / f"{context.asset_key}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    time.sleep(0.05)  # long enough for ordering to be observable in recorded times


# -- big_job: 13 assets with a diamond, a fan-out and an independent branch -------------------


@tg.asset(group_name="big")
def source(context: tg.AssetExecutionContext) -> list[int]:
    effect(context)
    return list(range(10))


@tg.asset(group_name="big")
def left(context: tg.AssetExecutionContext, source: list[int]) -> int:
    effect(context)
    return sum(source)


@tg.asset(group_name="big")
def right(context: tg.AssetExecutionContext, source: list[int]) -> int:
    effect(context)
    return len(source)


@tg.asset(group_name="big")
def joined(context: tg.AssetExecutionContext, left: int, right: int) -> dict[str, int]:
    effect(context)
    return {"sum": left, "count": right}


def _fan(i: int) -> tg.AssetsDefinition:
    def fan(context: tg.AssetExecutionContext, joined: dict[str, int]) -> int:
        effect(context)
        return joined["sum"] * i

    return tg.asset(name=f"fan_{i}", group_name="big")(fan)


FANS = [_fan(i) for i in range(5)]


@tg.asset(group_name="big", deps=FANS)
def gather(context: tg.AssetExecutionContext) -> tg.MaterializeResult:
    effect(context)
    return tg.MaterializeResult(metadata={"fans": len(FANS)})


@tg.asset(group_name="big")
def summary(context: tg.AssetExecutionContext, joined: dict[str, int]) -> tg.MaterializeResult:
    effect(context)
    context.log.info("summary of %s", joined)
    return tg.MaterializeResult(metadata={"sum": joined["sum"], "count": joined["count"]})


@tg.asset(group_name="big")
def lone_root(context: tg.AssetExecutionContext) -> str:
    effect(context)
    return "lone"


@tg.asset(group_name="big")
def lone_leaf(context: tg.AssetExecutionContext, lone_root: str) -> str:
    effect(context)
    return lone_root.upper()


# -- failing_job: a step that always fails after two retries ----------------------------------


@tg.asset(group_name="failing")
def before_flaky(context: tg.AssetExecutionContext) -> int:
    effect(context)
    return 1


@tg.asset(group_name="failing", retry_policy=tg.RetryPolicy(max_retries=2, delay=0.3, backoff=tg.Backoff.LINEAR))
def flaky(context: tg.AssetExecutionContext, before_flaky: int) -> int:
    effect(context)
    raise RuntimeError(f"warehouse unreachable (attempt {context.attempt})")


@tg.asset(group_name="failing")
def after_flaky(context: tg.AssetExecutionContext, flaky: int) -> int:
    effect(context)
    return flaky


@tg.asset(group_name="failing", deps=[after_flaky])
def after_after(context: tg.AssetExecutionContext) -> None:
    effect(context)


@tg.asset(group_name="failing", deps=[before_flaky])
def branch_ok(context: tg.AssetExecutionContext) -> int:
    effect(context)
    return 2


@tg.asset(group_name="failing")
def branch_ok_child(context: tg.AssetExecutionContext, branch_ok: int) -> int:
    effect(context)
    return branch_ok + 1


# -- routing_job: steps on two queues ---------------------------------------------------------


@tg.asset(group_name="routing")
def light_a(context: tg.AssetExecutionContext) -> int:
    effect(context)
    return 1


@tg.asset(group_name="routing", queue="heavy")
def heavy_b(context: tg.AssetExecutionContext, light_a: int) -> int:
    effect(context)
    return light_a + 1


@tg.asset(group_name="routing")
def light_c(context: tg.AssetExecutionContext, heavy_b: int) -> int:
    effect(context)
    return heavy_b + 1


# -- once_job and sentinel_job: duplicate delivery --------------------------------------------


@tg.asset(group_name="once")
def once(context: tg.AssetExecutionContext) -> None:
    effect(context)


@tg.asset(group_name="sentinel")
def sentinel(context: tg.AssetExecutionContext) -> None:
    effect(context)


@tg.asset(group_name="slow")
def slow(context: tg.AssetExecutionContext) -> None:
    effect(context)
    time.sleep(2.3)  # more than two heartbeats at TIDEGATE_HEARTBEAT_SECONDS=1


# -- none_job: None flows downstream; generator_job: an asset written as a generator -----------


@tg.asset(group_name="none")
def returns_none(context: tg.AssetExecutionContext):  # no annotation: its None is stored
    effect(context)
    return None


@tg.asset(group_name="none")
def takes_none(context: tg.AssetExecutionContext, returns_none: object) -> str:
    effect(context)
    return f"got {returns_none!r}"


@tg.asset(group_name="generator")
def generated(context: tg.AssetExecutionContext) -> Iterator[Any]:
    effect(context)
    yield tg.AssetMaterialization(asset_key="generated_mirror", metadata={"copied": True})
    yield tg.AssetObservation(asset_key="generated", metadata={"seen": 3})
    yield tg.Output([1, 2, 3], metadata={"rows": 3})


@tg.asset(group_name="generator")
def after_generated(context: tg.AssetExecutionContext, generated: list[int]) -> int:
    effect(context)
    return sum(generated)


# -- long_job: a long step that logs as it goes (interrupted by cancel or the run monitor) ------


@tg.asset(group_name="long")
def long_logger(context: tg.AssetExecutionContext) -> int:
    for i in range(400):  # 20 s unless interrupted
        effect(context)
        context.log.info("iteration %d", i)
    return 400


defs = tg.Definitions(
    assets=[
        source,
        left,
        right,
        joined,
        *FANS,
        gather,
        summary,
        lone_root,
        lone_leaf,
        before_flaky,
        flaky,
        after_flaky,
        after_after,
        branch_ok,
        branch_ok_child,
        light_a,
        heavy_b,
        light_c,
        once,
        sentinel,
        slow,
        returns_none,
        takes_none,
        generated,
        after_generated,
        long_logger,
    ],
    jobs=[
        tg.define_asset_job("big_job", "group:big"),
        tg.define_asset_job("failing_job", "group:failing"),
        tg.define_asset_job("routing_job", "group:routing"),
        tg.define_asset_job("once_job", "once"),
        tg.define_asset_job("sentinel_job", "sentinel"),
        tg.define_asset_job("slow_job", "slow"),
        tg.define_asset_job("none_job", "group:none"),
        tg.define_asset_job("generator_job", "group:generator"),
        tg.define_asset_job("long_job", "long_logger"),
    ],
)
