"""The code location of the scaling benchmark (bench/scale.py): three fan-out jobs.

* ``sleep_job``: ``sleep_root -> sleep_000 .. sleep_399 -> sleep_sink``. Each middle step
  sleeps ``BENCH_SCALE_SLEEP`` seconds (0.2); root and sink do nothing. All middle steps are
  runnable at once as soon as the root is done, so the job's shape does not cap the speedup.
* ``trivial_job``: ``noop_root -> noop_000 .. noop_399 -> noop_sink``, every body a no-op:
  the same shape as bench/raw_celery.py's ``fan_root -> fan_middle x N -> fan_sink``.
* ``warm_job``: ``warm_root -> warm_00 .. warm_15``, each sleeping 0.1 s, so that every pool
  child of a worker with up to 16 slots runs a step (imports, database connection) before
  anything is measured.

The width of the two fan-outs is ``BENCH_SCALE_STEPS`` (400; ``bench/scale.py --quick`` sets
100); bench/scale.py sets it for itself and for the workers it starts, so both plan the same
jobs. Every edge is a ``deps=`` edge and every body returns None: no IO manager is involved.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import tidegate as tg

WIDTH = int(os.environ.get("BENCH_SCALE_STEPS", "400"))
SLEEP_SECONDS = float(os.environ.get("BENCH_SCALE_SLEEP", "0.2"))
WARM_WIDTH = 16
WARM_SLEEP_SECONDS = 0.1


def _noop() -> None:
    return None


def _sleeper(seconds: float) -> Callable[[], None]:
    def body() -> None:
        time.sleep(seconds)

    return body


def _asset(name: str, group: str, work: Callable[[], None], deps: list[str] | None = None) -> tg.AssetsDefinition:
    def body() -> None:  # a fresh function object per asset
        work()

    body.__name__ = name
    return tg.asset(name=name, deps=deps or None, group_name=group)(body)


def _fan_out(prefix: str, width: int, work: Callable[[], None], sink: bool) -> list[tg.AssetsDefinition]:
    digits = len(str(max(width - 1, 1)))
    middle = [f"{prefix}_{i:0{digits}d}" for i in range(width)]
    root = f"{prefix}_root"
    assets = [_asset(root, prefix, _noop), *(_asset(name, prefix, work, [root]) for name in middle)]
    if sink:
        assets.append(_asset(f"{prefix}_sink", prefix, _noop, middle))
    return assets


sleep_assets = _fan_out("sleep", WIDTH, _sleeper(SLEEP_SECONDS), sink=True)
trivial_assets = _fan_out("noop", WIDTH, _noop, sink=True)
warm_assets = _fan_out("warm", WARM_WIDTH, _sleeper(WARM_SLEEP_SECONDS), sink=False)

sleep_job = tg.define_asset_job("sleep_job", selection=tg.AssetSelection.groups("sleep"))
trivial_job = tg.define_asset_job("trivial_job", selection=tg.AssetSelection.groups("noop"))
warm_job = tg.define_asset_job("warm_job", selection=tg.AssetSelection.groups("warm"))

defs = tg.Definitions(assets=[*sleep_assets, *trivial_assets, *warm_assets], jobs=[sleep_job, trivial_job, warm_job])
