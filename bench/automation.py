"""Declarative automation at graph scale: ``python bench/automation.py``.

On PostgreSQL (database ``tidegate_bench_automation``, or ``BENCH_AUTOMATION_PG_DB``, created if
missing through ``BENCH_PG_ADMIN_URL``, truncated first), in one process:

1. A graph of ``BENCH_AUTOMATION_ASSETS`` (5,000) assets in layers of 100, each asset depending
   on up to 10 assets of the layer above (seeded at random), every asset ``eager()``; the
   layers 10..19 (1,000 assets) are daily-partitioned over three years (1,095 partitions).
   Every (asset, partition) is materialized once (server-side INSERT ... SELECT).
2. The automation tick as the beat runs it: ``AutomationTicks.evaluate`` (the reads and the
   evaluation) then ``Storage.commit_tick`` (cursor, tick, evaluation records, runs in one
   transaction), with the cyclic garbage collector paused from the one through the other as
   the beat's sensor thread does (``collector_paused``: the collection that follows the tick,
   ~12-17 ms after the 1%-updated tick, is not in its figures), SQL statements counted on the
   engine. First the cold tick (a beat's first:
   it reads the history), then: nothing changed (median of ``BENCH_AUTOMATION_IDLE``, 10);
   1% of the assets updated (a new materialization of each, the latest partition for a
   partitioned one), then the tick after it (the runs it requested are deleted, not done: the
   requested assets and their children evaluate again); 10% updated, and the tick after. The
   runs a scenario requested are deleted before the next.
3. The naive way in the same run (Dagster's reported behaviour): each asset's facts read with
   its own queries (materialized partitions, updates after the cursor, failures, runs in
   progress: four per asset) and every asset evaluated (no skipping), for the idle and the
   1% scenarios, one tick each.

Prints the conditions, a table (time of the reads+evaluation, of the commit, the CPU time of
this process for both (less sensitive than the times to the load of a shared machine), SQL
statements, runs requested), the ratios against the naive way and the peak RSS of this process. The aim
(issue 13): nothing changed <= 50 ms, 1% updated <= 500 ms, statements independent of the
graph size.
"""

from __future__ import annotations

import cProfile
import os
import platform
import pstats
import random
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tidegate as tg
from bench.common import load_avg, ms, prepare_postgres, progress, table, version
from tidegate.definitions.automation_evaluator import AssetSlice, evaluate_automation
from tidegate.definitions.automation_sensor import AutomationConditionSensorDefinition
from tidegate.definitions.key import AssetKey
from tidegate.names import PartitionStatus, RunStatus, StepStatus
from tidegate.scheduler.automation import AutomationTick, AutomationTicks, collector_paused, parse_cursor
from tidegate.storage.api import Storage
from tidegate.storage.schema import asset_partitions, materializations, metadata, runs, steps

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_DB = os.environ.get("BENCH_AUTOMATION_PG_DB", "tidegate_bench_automation")
ASSETS = int(os.environ.get("BENCH_AUTOMATION_ASSETS", "5000"))
IDLE = int(os.environ.get("BENCH_AUTOMATION_IDLE", "10"))
PROFILE = os.environ.get(
    "BENCH_AUTOMATION_PROFILE", ""
)  # a path: the 1%-updated tick under cProfile, stats written there
NAIVE = os.environ.get("BENCH_AUTOMATION_NAIVE", "1") != "0"  # 0: skip the naive evaluator (it is slow)
LAYER, FAN_IN = 100, 10
PARTITIONED_LAYERS = range(10, 20)
DAYS = tg.DailyPartitionsDefinition(start_date="2021-01-01", end_date="2024-01-01")
T0 = datetime(2024, 6, 1, tzinfo=UTC)


def build_defs(count: int) -> tg.Definitions:
    rng = random.Random(5000)
    eager = tg.AutomationCondition.eager()
    made: list[tg.AssetsDefinition] = []
    names: list[list[str]] = []
    for index in range(count):
        layer = index // LAYER
        if layer == len(names):
            names.append([])
        name = f"n{index:05d}"
        above = names[layer - 1] if layer else []
        deps = rng.sample(above, min(len(above), rng.randint(1, FAN_IN))) if above else []
        partitioned = layer in PARTITIONED_LAYERS

        def body() -> None:
            return None

        made.append(
            tg.asset(name=name, deps=deps, automation_condition=eager, partitions_def=DAYS if partitioned else None)(
                body
            )
        )
        names[layer].append(name)
    sensor = AutomationConditionSensorDefinition("bench", target=tg.AssetSelection.all())
    return tg.Definitions(assets=made, sensors=[sensor])


class Counter:
    def __init__(self, storage: Storage) -> None:
        self.n = 0
        event.listen(storage.engine, "before_cursor_execute", self._count)

    def _count(self, *args: Any) -> None:
        self.n += 1


def seed(storage: Storage, defs: tg.Definitions) -> None:
    """Every (asset, partition) materialized once, in two statements."""
    keys = [k.to_user_string() for k in defs.graph.order]
    partitioned = [k.to_user_string() for k in defs.graph.order if defs.graph.assets[k].partitions_def]
    plain = sorted(set(keys) - set(partitioned))
    with storage.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO materializations (asset_key, partition_key, run_id, step_key, metadata, timestamp) "
                "SELECT k, NULL, '', k, '{}', now() FROM unnest(CAST(:keys AS text[])) AS k"
            ),
            {"keys": plain},
        )
        conn.execute(
            text(
                "INSERT INTO materializations (asset_key, partition_key, run_id, step_key, metadata, timestamp) "
                "SELECT k, to_char(DATE '2021-01-01' + d, 'YYYY-MM-DD'), '', k, '{}', now() "
                "FROM unnest(CAST(:keys AS text[])) AS k, generate_series(0, 1094) AS d"
            ),
            {"keys": partitioned},
        )


def update(
    storage: Storage,
    defs: tg.Definitions,
    share: float,
    rng: random.Random,
    pool: Sequence[AssetKey] | None = None,
) -> int:
    """A new materialization of ``share`` of the graph's assets, drawn from ``pool`` (default:
    every asset)."""
    count = max(1, int(len(defs.graph.order) * share))
    chosen = rng.sample(list(defs.graph.order if pool is None else pool), count)
    rows: list[dict[str, Any]] = [
        dict(
            asset_key=k.to_user_string(),
            partition_key="2023-12-31" if defs.graph.assets[k].partitions_def else None,
            run_id="",
            step_key=k.to_user_string(),
            metadata={},
            timestamp=datetime.now(UTC),
        )
        for k in chosen
    ]
    with storage.engine.begin() as conn:
        conn.execute(materializations.insert(), rows)
    return len(chosen)


Tick = tuple[float, float, int, int, float, int, int]


def tick(
    storage: Storage,
    ticks: AutomationTicks,
    sensor: AutomationConditionSensorDefinition,
    when: datetime,
    profile: str = "",
) -> Tick:
    """(evaluation seconds, commit seconds, statements, runs requested, CPU seconds of this
    process for both, assets evaluated, assets requested) of one tick; ``profile``: a path
    where the cProfile statistics of the evaluation and the commit are written."""
    counter = Counter(storage)
    state = storage.get_instigator(sensor.name) or storage.initialize_instigator(sensor.name, "sensor", when)
    counter.n = 0
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    cpu = time.process_time()
    start = time.perf_counter()
    with collector_paused():  # as the beat's sensor thread: the collector paused until committed
        evaluated: AutomationTick = ticks.evaluate(sensor, state.cursor, when)
        middle = time.perf_counter()
        record = storage.commit_tick(
            sensor.name,
            "sensor",
            expected_version=state.version,
            tick_time=when,
            started_at=when,
            outcome=evaluated.outcome,
            origin=f"sensor:{sensor.name}",
            next_tick_at=when + timedelta(seconds=30),
        )
        end = time.perf_counter()
        cpu = time.process_time() - cpu
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
        pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    assert record is not None
    assert evaluated.result is not None
    asked = sum(len(v) for v in evaluated.result.requested.values())
    evaluated.install()
    statements = counter.n - 2  # get_instigator and the listener's own setup are not the tick's
    event.remove(storage.engine, "before_cursor_execute", counter._count)
    return middle - start, end - middle, statements, len(evaluated.outcome.runs), cpu, evaluated.evaluated, asked


class NaiveInputs:
    """Each asset's facts read with its own queries, as an evaluator that asks per asset does."""

    def __init__(self, storage: Storage, defs: tg.Definitions, after: int) -> None:
        self.storage, self.defs, self.after = storage, defs, after
        self.keys = DAYS.get_partition_keys(T0)

    def slice(self, key: AssetKey) -> AssetSlice:
        name = key.to_user_string()
        m = materializations
        with self.storage.engine.connect() as conn:
            done = frozenset(conn.execute(select(m.c.partition_key).where(m.c.asset_key == name).distinct()).scalars())
            new = frozenset(
                conn.execute(select(m.c.partition_key).where(m.c.asset_key == name, m.c.id > self.after)).scalars()
            )
            failed = frozenset(
                conn.execute(
                    select(asset_partitions.c.partition_key).where(
                        asset_partitions.c.asset_key == name, asset_partitions.c.status == PartitionStatus.FAILED
                    )
                ).scalars()
            )
            running = conn.execute(
                select(func.count())
                .select_from(steps.join(runs, runs.c.run_id == steps.c.run_id))
                .where(steps.c.asset_key == name, runs.c.status.in_([RunStatus.QUEUED, RunStatus.STARTED]))
                .where(steps.c.status.not_in(list(StepStatus.TERMINAL)))
            ).scalar_one()
        return AssetSlice(
            materialized=done, updated=new, failed=failed, run_in_progress=frozenset([None]) if running else frozenset()
        )

    def partition_keys(self, key: AssetKey) -> Sequence[str | None]:
        return [None] if self.defs.graph.assets[key].partitions_def is None else self.keys


def naive_tick(
    storage: Storage, defs: tg.Definitions, ticks: AutomationTicks, cursor: str | None, when: datetime
) -> tuple[float, int, int]:
    parsed = parse_cursor("bench", cursor)
    assert parsed is not None
    sensor = defs.sensors["bench"]
    assert isinstance(sensor, AutomationConditionSensorDefinition)
    conditions = ticks.conditions_cursor(sensor, cursor)  # every asset's state, as our next tick's
    counter = Counter(storage)
    start = time.perf_counter()
    result = evaluate_automation(
        defs.graph, list(defs.graph.order), NaiveInputs(storage, defs, parsed[0]), when, conditions, None
    )
    took = time.perf_counter() - start
    event.remove(storage.engine, "before_cursor_execute", counter._count)
    return took, counter.n, sum(len(v) for v in result.requested.values())


def row(title: str, r: Tick) -> list[str]:
    return [title, ms(r[0]), ms(r[1]), ms(r[4]), str(r[2]), str(r[3]), str(r[5]), str(r[6])]


def clear_runs(storage: Storage) -> None:
    with storage.engine.begin() as conn:
        conn.execute(text("TRUNCATE runs, steps, events, backfills"))


def main() -> None:
    url, pg_version = prepare_postgres(PG_DB, PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql"))
    storage = Storage.open(url, upgrade=True)
    with storage.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)} RESTART IDENTITY"))
    progress(f"load at start {load_avg()}; building a graph of {ASSETS} assets")
    defs = build_defs(ASSETS)
    sensor = defs.sensors["bench"]
    assert isinstance(sensor, AutomationConditionSensorDefinition)
    partitioned = sum(1 for a in defs.graph.assets.values() if a.partitions_def)
    progress("seeding materializations")
    seed(storage, defs)
    with storage.engine.connect() as conn:
        seeded = conn.execute(select(func.count()).select_from(materializations)).scalar_one()
    ticks = AutomationTicks(defs, storage)
    rng = random.Random(13)
    rows: list[list[str]] = []
    when = T0
    progress("cold tick")
    cold = tick(storage, ticks, sensor, when)
    rows.append(row("cold (first tick: reads the history)", cold))
    progress(f"ours: {rows[-1]}")
    clear_runs(storage)
    idle = []
    for _ in range(IDLE):
        when += timedelta(seconds=30)
        idle.append(tick(storage, ticks, sensor, when))
    middle = sorted(idle)[len(idle) // 2]
    rows.append(
        [
            f"nothing changed (median of {IDLE})",
            ms(statistics.median(t[0] for t in idle)),
            ms(statistics.median(t[1] for t in idle)),
            ms(statistics.median(t[4] for t in idle)),
            str(int(statistics.median(t[2] for t in idle))),
            str(idle[-1][3]),
            str(middle[5]),
            str(middle[6]),
        ]
    )
    progress(f"ours: {rows[-1]}")
    results: dict[str, Tick] = {"idle": middle}
    last_layer = list(defs.graph.order)[-LAYER:]  # no asset depends on them
    scenarios: list[tuple[str, str, float, Sequence[AssetKey] | None, random.Random]] = [
        ("1%", "1% updated", 0.01, None, rng),
        ("10%", "10% updated", 0.10, None, rng),
        # the same count of updates, drawn from the last layer: each one's eager closure is itself
        ("1% leaves", "1% updated, leaves (last layer)", 0.01, last_layer, random.Random(31)),
    ]
    for label, title, share, pool, draw in scenarios:
        clear_runs(storage)
        if pool is not None:
            # from a settled state (the earlier scenarios' requests flip for two ticks): only
            # what this update changes evaluates
            for _ in range(5):
                when += timedelta(seconds=30)
                if tick(storage, ticks, sensor, when)[5] == 0:
                    break
                clear_runs(storage)
        when += timedelta(seconds=30)
        touched = update(storage, defs, share, draw, pool)
        progress(f"{title} ({touched} assets)")
        results[label] = r = tick(storage, ticks, sensor, when, PROFILE if label == "1%" else "")
        rows.append(row(f"{title} ({touched} assets)", r))
        progress(f"ours: {rows[-1]}")
        # the next tick: nothing new, but what was requested flips newly_requested (its runs
        # are not done: deleted below), so the requested assets and their children evaluate again
        clear_runs(storage)
        when += timedelta(seconds=30)
        r = tick(storage, ticks, sensor, when)
        rows.append(row(f"  the tick after {label}", r))
        progress(f"ours: {rows[-1]}")
    # the naive way, last (it is slow): idle, then after a fresh 1% update, from the same cursor
    clear_runs(storage)
    naive: dict[str, tuple[float, int, int]] = {}
    if NAIVE:
        cursor = storage.get_instigator("bench").cursor  # type: ignore[union-attr]
        progress("naive, nothing changed")
        naive["idle"] = naive_tick(storage, defs, ticks, cursor, when + timedelta(seconds=1))
        progress(f"naive: {naive['idle']}")
        touched = update(storage, defs, 0.01, rng)
        progress(f"naive, 1% updated ({touched} assets)")
        naive["1%"] = naive_tick(storage, defs, ticks, cursor, when + timedelta(seconds=2))
        progress(f"naive: {naive['1%']}")
    for label, (took, statements, requested) in naive.items():
        rows.append(
            [
                f"naive, {label}: per-asset queries, no skipping",
                ms(took),
                "-",
                "-",
                str(statements),
                "-",
                str(len(defs.graph.order)),
                f"{requested}*",
            ]
        )
    print(
        f"conditions: {platform.node()} {os.cpu_count()} CPUs, load {load_avg()}, Python {platform.python_version()}, "
        f"PostgreSQL {pg_version}, SQLAlchemy {version('sqlalchemy')}, psycopg {version('psycopg')}"
    )
    print(
        f"graph: {ASSETS} assets in layers of {LAYER}, fan-in up to {FAN_IN}, all eager(); {partitioned} "
        f"daily-partitioned over 3 years ({len(DAYS.get_partition_keys(T0))} partitions); {seeded:,} materializations"
    )
    print(
        table(
            ["tick", "reads+evaluation", "commit", "CPU (both)", "SQL statements", "runs", "evaluated", "requested"],
            rows,
            [False, True, True, True, True, True, True, True],
        )
    )
    print("evaluated: assets; requested: (asset, partition)s; * naive: requested, not grouped into runs or committed")
    for label, r in results.items():
        if r[5]:
            print(f"CPU per evaluated asset, {label}: {r[4] / r[5] * 1000:.2f} ms ({r[5]} evaluated, {r[6]} requested)")
    for label in naive:
        ours, theirs = results[label][0], naive[label][0]
        fewer = naive[label][1] / max(1, results[label][2])
        print(f"ratio naive/ours, {label}: time {theirs / ours:,.1f}x, statements {fewer:,.0f}x")
    print(
        f"aims: nothing changed {ms(results['idle'][0] + results['idle'][1])} (<= 50 ms), 1% updated "
        f"{ms(results['1%'][0] + results['1%'][1])} (<= 500 ms)"
    )
    for label, aim in (("idle", 0.05), ("1%", 0.5)):
        total = results[label][0] + results[label][1]
        print(f"aim {label}: {'met' if total <= aim else 'NOT met'} ({ms(total)} <= {ms(aim)})")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    storage.dispose()


if __name__ == "__main__":
    main()
