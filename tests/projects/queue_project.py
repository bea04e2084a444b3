"""A test project for the run queue, pools, cancellation, re-execution, run retries and step
timeouts (tests/test_run_queue.py, tests/test_run_control.py).

Every asset appends lines to ``$TIDEGATE_TEST_EFFECTS/<asset>.log`` when its code starts
(``start``) and when it returns (``end``), so tests can tell what ran independently of what
tidegate records. Assets on the control queue are meant for a prefork worker (time limits
and terminating revokes only work there); the others for the threads workers.

``TIDEGATE_TEST_QUEUE_SUFFIX`` (read at import) is appended to both queue names, so a test
session's workers consume only its own steps even when other sessions share the Redis database.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import tidegate as tg

QUEUE_SUFFIX = os.environ.get("TIDEGATE_TEST_QUEUE_SUFFIX", "")
MAIN_QUEUE = f"tidegate{QUEUE_SUFFIX}"
CONTROL_QUEUE = f"control{QUEUE_SUFFIX}"


def effects_dir() -> Path:
    return Path(os.environ["TIDEGATE_TEST_EFFECTS"])


def effect(context: tg.AssetExecutionContext, what: str) -> None:
    directory = effects_dir()
    directory.mkdir(parents=True, exist_ok=True)
    line = f"{what} {context.run_id} {context.attempt} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(directory / f"{context.asset_key}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def executions(context: tg.AssetExecutionContext) -> int:
    """How many times this asset's code started before (in any run)."""
    path = effects_dir() / f"{context.asset_key}.log"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.startswith("start "))


def sleep_steps(seconds: float) -> None:
    """Sleep in small steps (a prefork soft time limit or a terminate lands promptly)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


# -- hold_job: one step that holds its run for a while (run queue tests) ----------------------


@tg.asset(group_name="hold", queue=MAIN_QUEUE)
def hold(context: tg.AssetExecutionContext) -> tg.MaterializeResult:
    effect(context, "start")
    sleep_steps(0.4)
    effect(context, "end")
    return tg.MaterializeResult(metadata={"tags": dict(context.tags)})


# -- pool_job: six steps in the "warehouse" pool, six without a pool, one pooled child --------


def _pooled(i: int) -> tg.AssetsDefinition:
    def pooled(context: tg.AssetExecutionContext) -> int:
        effect(context, "start")
        sleep_steps(0.4)
        effect(context, "end")
        return i

    return tg.asset(name=f"pooled_{i}", group_name="pool", queue=MAIN_QUEUE, pool="warehouse")(pooled)


def _free(i: int) -> tg.AssetsDefinition:
    def free(context: tg.AssetExecutionContext) -> int:
        effect(context, "start")
        sleep_steps(0.4)
        effect(context, "end")
        return i

    return tg.asset(name=f"free_{i}", group_name="pool", queue=MAIN_QUEUE)(free)


POOLED = [_pooled(i) for i in range(6)]
FREE = [_free(i) for i in range(6)]


@tg.asset(group_name="pool", queue=MAIN_QUEUE, pool="warehouse")
def pooled_sink(context: tg.AssetExecutionContext, pooled_0: int) -> int:
    effect(context, "start")
    sleep_steps(0.4)
    effect(context, "end")
    return pooled_0 + 100


# -- reexec_job: a failing middle step; re-executed from failure once it is fixed -------------


@tg.asset(group_name="reexec", queue=MAIN_QUEUE)
def base(context: tg.AssetExecutionContext) -> dict[str, Any]:
    effect(context, "start")
    return {"value": 21, "run_id": context.run_id}


@tg.asset(group_name="reexec", queue=MAIN_QUEUE)
def doubled(context: tg.AssetExecutionContext, base: dict[str, Any]) -> int:
    effect(context, "start")
    if not (effects_dir() / "doubled.fixed").exists():
        raise RuntimeError("doubled is broken until doubled.fixed exists")
    context.add_output_metadata({"input_value": base["value"], "input_run_id": base["run_id"]})
    return int(base["value"]) * 2


@tg.asset(group_name="reexec", queue=MAIN_QUEUE)
def final(context: tg.AssetExecutionContext, doubled: int) -> int:
    effect(context, "start")
    context.add_output_metadata({"input": doubled})
    return doubled + 1


@tg.asset(group_name="reexec", queue=MAIN_QUEUE)
def side(context: tg.AssetExecutionContext) -> int:
    effect(context, "start")
    return 7


# -- retry_job / always_fails_job: run retries through the tidegate/max_retries tag ----------


@tg.asset(group_name="retry", queue=MAIN_QUEUE)
def retry_base(context: tg.AssetExecutionContext) -> int:
    effect(context, "start")
    return 5


@tg.asset(group_name="retry", queue=MAIN_QUEUE)
def retry_flaky(context: tg.AssetExecutionContext, retry_base: int) -> int:
    before = executions(context)
    effect(context, "start")
    if before < 2:
        raise RuntimeError(f"retry_flaky fails on its first two executions (this is #{before + 1})")
    context.add_output_metadata({"input": retry_base})
    return retry_base * 10


@tg.asset(group_name="always_fails", queue=MAIN_QUEUE)
def always_fails(context: tg.AssetExecutionContext) -> None:
    effect(context, "start")
    raise RuntimeError("always fails")


# -- control queue (prefork worker): cancellation and step timeouts ---------------------------


@tg.asset(group_name="cancel", queue=CONTROL_QUEUE)
def long_a(context: tg.AssetExecutionContext) -> int:
    effect(context, "start")
    sleep_steps(20)
    effect(context, "end")
    return 1


@tg.asset(group_name="cancel", queue=CONTROL_QUEUE)
def long_b(context: tg.AssetExecutionContext) -> int:
    effect(context, "start")
    sleep_steps(20)
    effect(context, "end")
    return 2


@tg.asset(group_name="cancel", queue=CONTROL_QUEUE)
def after_long(context: tg.AssetExecutionContext, long_a: int) -> int:
    effect(context, "start")
    return long_a + 1


@tg.asset(group_name="control_sentinel", queue=CONTROL_QUEUE)
def control_sentinel(context: tg.AssetExecutionContext) -> None:
    effect(context, "start")


@tg.asset(group_name="timeout", queue=CONTROL_QUEUE, timeout=1.0)
def too_slow(context: tg.AssetExecutionContext) -> int:
    effect(context, "start")
    sleep_steps(8)
    effect(context, "end")
    return 1


@tg.asset(group_name="timeout", queue=CONTROL_QUEUE, timeout=5.0)
def quick_enough(context: tg.AssetExecutionContext) -> int:
    effect(context, "start")
    sleep_steps(0.2)
    effect(context, "end")
    return 1


# A timeout on a threads worker (no Celery time limits there): the run monitor enforces it.
@tg.asset(group_name="thread_timeout", queue=MAIN_QUEUE, timeout=0.5)
def slow_on_threads(context: tg.AssetExecutionContext) -> int:
    effect(context, "start")
    sleep_steps(3)
    effect(context, "end")
    return 1


defs = tg.Definitions(
    assets=[
        hold,
        *POOLED,
        *FREE,
        pooled_sink,
        base,
        doubled,
        final,
        side,
        retry_base,
        retry_flaky,
        always_fails,
        long_a,
        long_b,
        after_long,
        control_sentinel,
        too_slow,
        quick_enough,
        slow_on_threads,
    ],
    jobs=[
        tg.define_asset_job("hold_job", "hold"),
        tg.define_asset_job("pool_job", "group:pool"),
        tg.define_asset_job("reexec_job", "group:reexec"),
        tg.define_asset_job("retry_job", "group:retry", tags={"tidegate/max_retries": "2"}),
        tg.define_asset_job("always_fails_job", "always_fails", tags={"tidegate/max_retries": "1"}),
        tg.define_asset_job("cancel_job", "group:cancel"),
        tg.define_asset_job("control_sentinel_job", "control_sentinel"),
        tg.define_asset_job("timeout_job", "group:timeout"),
        tg.define_asset_job("thread_timeout_job", "slow_on_threads"),
    ],
)
