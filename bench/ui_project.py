"""The project bench/ui.py serves: 1,000 assets (one with 100,000 partitions) in a layered
graph, a 200-asset job (its runs have 200 steps) and a sensor (its ticks fill the tick table)."""

from __future__ import annotations

import os

import tidegate as tg

ASSETS = int(os.environ.get("BENCH_UI_ASSETS", "1000"))
PARTITIONS = int(os.environ.get("BENCH_UI_PARTITIONS", "100000"))
BIG = "a0000"  # the partitioned asset
WIDTH = 25  # assets per layer: 40 layers of 25 at 1,000 assets

partitions = tg.StaticPartitionsDefinition([f"p{i:06d}" for i in range(PARTITIONS)])


def _deps(i: int) -> list[str]:
    """Two assets of the layer before (none for the first layer)."""
    if i < WIDTH:
        return []
    base = (i // WIDTH - 1) * WIDTH
    return sorted({f"a{base + (i * 7) % WIDTH:04d}", f"a{base + (i * 3 + 1) % WIDTH:04d}"})


def _asset(i: int) -> tg.AssetsDefinition:
    def compute() -> int:
        return i

    if i == 0:
        return tg.asset(name=BIG, partitions_def=partitions, group_name="big")(compute)
    return tg.asset(name=f"a{i:04d}", deps=_deps(i), group_name=f"g{i // 100}")(compute)


specs = [_asset(i) for i in range(ASSETS)]

bench_job = tg.define_asset_job("bench_job", selection=[f"a{i:04d}" for i in range(1, 201)])


@tg.sensor(job=bench_job, minimum_interval_seconds=3600)
def bench_sensor(context: tg.SensorEvaluationContext) -> tg.SkipReason:
    return tg.SkipReason("bench")


defs = tg.Definitions(assets=specs, sensors=[bench_sensor])
