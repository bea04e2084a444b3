"""Asset, multi-asset and run-status sensors over a long history: ``python bench/event_sensors.py``.

In one process, on PostgreSQL (database ``tidegate_bench_events``, created if missing through
``BENCH_PG_ADMIN_URL``, truncated first) and on SQLite (a temporary file):

1. Seed: first a short history (1,000 materializations, one per asset, and 100 runs), measured
   as below; then 100,000 materializations across 1,000 assets (100 each, ids interleaved) and 10,000
   runs that succeeded, each with its RUN_SUCCESS event (bulk inserts).
2. Idle tick (nothing new after the cursor; the sensor's ``evaluate`` as the beat calls it,
   median of ``BENCH_EVENTS_IDLE`` (30) ticks, SQL statements counted on the engine): an asset
   sensor, a multi-asset sensor over 100 assets and a run-status sensor. The same after a
   history of 1,000 materializations / 100 runs, to show the cost does not grow with history.
   Baselines measured in the same run: a Dagster-style multi-asset tick (one query per asset)
   and a naive asset sensor that reads every materialization of the asset and filters by id.
3. Drain: a run-status sensor started ``--from-beginning`` works through the 10,000 events,
   tick after tick (each committed with ``commit_tick``, as the beat does), with a function
   that returns None; events/s against the aim of 5,000/s, and against Dagster's way (at most
   5 events per tick, one run lookup per event), run for 500 events and extrapolated. Then the
   same drain through a real ``Beat`` (fake clock, its launcher off so runs stay QUEUED) with a
   sensor that requests a run for every fifth event: planning and submitting 2,000 runs in the
   ticks' transactions included.

Prints the conditions, a table per database, ratios and the peak RSS of this process. The
machine may be shared: the conditions line says how many CPUs and the load average.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tidegate as tg
from tidegate.definitions.context import Resources
from tidegate.definitions.sensor import SensorEvaluationContext
from tidegate.names import EventType, RunStatus, TickStatus
from tidegate.storage.api import Storage
from tidegate.storage.instigators import TickOutcome
from tidegate.storage.schema import events, materializations, metadata, runs

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_DB = "tidegate_bench_events"
ASSETS, PER_ASSET, RUNS = 1000, 100, 10_000
IDLE_TICKS = int(os.environ.get("BENCH_EVENTS_IDLE", "30"))
AIM_DRAIN = 5000.0
T0 = datetime(2024, 1, 1, tzinfo=UTC)


class Counter:
    def __init__(self, storage: Storage) -> None:
        self.n = 0
        event.listen(storage.engine, "before_cursor_execute", self._count)

    def _count(self, *args: Any) -> None:
        self.n += 1


def _pg_url() -> str:
    import psycopg

    admin = PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,)).fetchone():
            conn.execute(f'CREATE DATABASE "{PG_DB}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{PG_DB}"


def _truncate(storage: Storage) -> None:
    if storage.dialect != "postgresql":
        return
    with storage.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)} RESTART IDENTITY"))


def seed(storage: Storage, assets: int, per_asset: int, run_count: int) -> None:
    rows = [
        {
            "asset_key": f"asset_{a:04d}",
            "partition_key": None,
            "run_id": "",
            "step_key": "",
            "metadata": {},
            "timestamp": T0,
        }
        for _ in range(per_asset)
        for a in range(assets)
    ]
    run_rows = [
        {
            "run_id": f"run{i:06d}",
            "job_name": "job_a" if i % 2 else "job_b",
            "status": RunStatus.SUCCESS,
            "origin": "bench",
            "priority": 0,
            "tags": {},
            "steps_remaining": 0,
            "created_at": T0,
        }
        for i in range(run_count)
    ]
    event_rows = [
        {
            "run_id": r["run_id"],
            "step_key": None,
            "event_type": "RUN_SUCCESS",
            "timestamp": T0,
            "message": None,
            "data": None,
        }
        for r in run_rows
    ]
    with storage.engine.begin() as conn:
        for start in range(0, len(rows), 10_000):
            conn.execute(insert(materializations), rows[start : start + 10_000])
        if run_rows:
            conn.execute(insert(runs), run_rows)
            conn.execute(insert(events), event_rows)


@tg.asset
def target() -> int:
    return 1


JOB = tg.define_asset_job("bench_job", [target])


@tg.asset_sensor(asset_key="asset_0500", job=JOB)
def one_asset(context: Any, asset_event: Any) -> tg.RunRequest:
    return tg.RunRequest()


@tg.multi_asset_sensor(monitored_assets=[f"asset_{a:04d}" for a in range(0, 1000, 10)], job=JOB)
def hundred_assets(context: tg.MultiAssetSensorEvaluationContext) -> None:
    latest = context.latest_materialization_records_by_key()
    if all(latest.values()):
        context.advance_all_cursors()


@tg.run_status_sensor(run_status=RunStatus.SUCCESS)
def on_success(context: Any) -> None:
    return None


def _context(storage: Storage, name: str, cursor: str | None) -> SensorEvaluationContext:
    import logging

    return SensorEvaluationContext(
        name, cursor, None, None, Resources({}), logging.getLogger("bench"), instance=tg.DagsterInstance(storage)
    )


def measure(storage: Storage, counter: Counter, fn: Callable[[], Any]) -> tuple[float, float]:
    """(median ms, statements per call) over IDLE_TICKS calls after one warm-up."""
    fn()
    times, statements = [], []
    for _ in range(IDLE_TICKS):
        before = counter.n
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
        statements.append(counter.n - before)
    return statistics.median(times), statistics.mean(statements)


def idle_ticks(storage: Storage, counter: Counter) -> dict[str, tuple[float, float]]:
    instance = tg.DagsterInstance(storage)
    with storage.engine.connect() as conn:
        newest = dict(
            conn.execute(
                select(materializations.c.asset_key, text("max(id)")).group_by(materializations.c.asset_key)
            ).all()
        )
        last_event = conn.execute(select(text("coalesce(max(id), 0)")).select_from(events)).scalar_one()
    multi_json = json.dumps({k.to_user_string(): newest[k.to_user_string()] for k in hundred_assets.monitored_assets})
    results = {
        "asset sensor": measure(
            storage, counter, lambda: one_asset.evaluate(_context(storage, "one_asset", str(newest["asset_0500"])), {})
        ),
        "multi-asset sensor, 100 assets": measure(
            storage, counter, lambda: hundred_assets.evaluate(_context(storage, "hundred_assets", multi_json), {})
        ),
        "run-status sensor": measure(
            storage, counter, lambda: on_success.evaluate(_context(storage, "on_success", str(last_event)), {})
        ),
    }

    def dagster_multi() -> None:  # one query per asset, as Dagster's multi-asset context does
        for key in hundred_assets.monitored_assets:
            instance.get_event_records(
                tg.EventRecordsFilter(
                    event_type=EventType.ASSET_MATERIALIZATION,
                    asset_key=key,
                    after_cursor=newest[key.to_user_string()],
                    before_cursor=newest[key.to_user_string()] + 1,
                ),
                limit=1,
            )

    def naive_asset() -> None:  # scan the whole log, keep the asset's events after the cursor
        cursor = newest["asset_0500"]
        with storage.engine.connect() as conn:
            rows = conn.execute(select(materializations.c.id, materializations.c.asset_key)).all()
        [r for r in rows if r.asset_key == "asset_0500" and r.id > cursor]

    results["baseline: multi-asset, a query per asset"] = measure(storage, counter, dagster_multi)
    results["baseline: asset sensor scanning the log"] = measure(storage, counter, naive_asset)
    return results


def drain(storage: Storage, counter: Counter) -> tuple[float, int, float]:
    """(seconds, ticks, statements per tick) for the run-status sensor to handle every event."""
    storage.set_cursor("on_success", "sensor", "0")
    ticks, before = 0, counter.n
    start = time.perf_counter()
    when = T0
    while True:
        state = storage.get_instigator("on_success")
        assert state is not None
        evaluation = on_success.evaluate(_context(storage, "on_success", state.cursor), {})
        when += timedelta(seconds=1)
        storage.commit_tick(
            "on_success",
            "sensor",
            expected_version=state.version,
            tick_time=when,
            started_at=when,
            outcome=TickOutcome(TickStatus.SKIPPED, cursor_set=True, cursor=evaluation.cursor),
            origin="sensor:on_success",
            next_tick_at=when,
        )
        ticks += 1
        if not evaluation.backlog:
            break
    return time.perf_counter() - start, ticks, (counter.n - before) / ticks


@tg.run_status_sensor(run_status=RunStatus.SUCCESS, request_job=JOB, default_status=tg.DefaultSensorStatus.RUNNING)
def every_fifth(context: Any) -> tg.RunRequest | None:
    return tg.RunRequest() if int(context.dagster_run.run_id[3:]) % 5 == 0 else None


def drain_through_the_beat(storage: Storage) -> tuple[float, int, int]:
    """(seconds, ticks, runs) for a beat (fake clock, nothing published) to work through the
    10,000 events with a sensor requesting a run for every fifth: the full path, planning and
    submitting runs in the tick's transaction."""
    from tidegate.scheduler.beat import Beat
    from tidegate.scheduler.clock import FakeClock

    defs = tg.Definitions(assets=[target], jobs=[JOB], sensors=[every_fifth])
    storage.set_cursor("every_fifth", "sensor", "0")
    clock = FakeClock(T0)
    beat = Beat(defs, storage, lambda refs: None, clock=clock, holder="bench", launcher_interval=3600)
    beat.launcher.tick = lambda: 0  # type: ignore[method-assign]  # runs stay QUEUED: only the sensor is measured
    ticks, last = 0, last_event_id(storage)  # the newest RUN_SUCCESS (the new runs add RUN_QUEUED events)
    start = time.perf_counter()
    while ticks < 1000:
        clock.advance(1)
        beat.tick()
        ticks += 1
        state = storage.get_instigator("every_fifth")
        if state is not None and state.cursor is not None and int(state.cursor) >= last:
            break
    seconds = time.perf_counter() - start
    runs_created = sum(len(t.run_ids) for t in storage.get_ticks("every_fifth", limit=10_000))
    return seconds, ticks, runs_created


def last_event_id(storage: Storage) -> int:
    with storage.engine.connect() as conn:
        return int(conn.execute(select(text("coalesce(max(id), 0)")).select_from(events)).scalar_one())


def dagster_drain(storage: Storage, events_to_handle: int = 500) -> float:
    """Seconds per event of Dagster's way: 5 events per tick, a run lookup per event."""
    instance = tg.DagsterInstance(storage)
    cursor, handled = 0, 0
    start = time.perf_counter()
    while handled < events_to_handle:
        records = instance.get_event_records(
            tg.EventRecordsFilter(event_type=EventType.RUN_SUCCESS, after_cursor=cursor), limit=5, ascending=True
        )
        for record in records:
            instance.get_run_records(tg.RunsFilter(run_ids=[record.run_id]))
            cursor = record.storage_id
            handled += 1
    return (time.perf_counter() - start) / handled


def run(label: str, url: str) -> None:
    storage = Storage.open(url, upgrade=True)
    _truncate(storage)
    counter = Counter(storage)
    seed(storage, ASSETS, 1, 100)  # a short history first: 1,000 materializations (one per asset), 100 runs
    small = idle_ticks(storage, counter)
    _truncate(storage)
    if storage.dialect != "postgresql":
        with storage.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())
    start = time.perf_counter()
    seed(storage, ASSETS, PER_ASSET, RUNS)
    seeded = time.perf_counter() - start
    big = idle_ticks(storage, counter)
    print(f"\n## {label}  (seeded {ASSETS * PER_ASSET:,} materializations and {RUNS:,} runs in {seeded:.1f}s)\n")
    print(f"{'idle tick':<52}{'history 1k':>14}{'history 100k':>14}{'statements':>12}")
    for name, (ms, statements) in big.items():
        small_ms = small[name][0] if name in small else float("nan")
        print(f"{name:<52}{small_ms:>11.2f} ms{ms:>11.2f} ms{statements:>12.1f}")
    ours, theirs = big["multi-asset sensor, 100 assets"], big["baseline: multi-asset, a query per asset"]
    print(
        f"\nmulti-asset idle tick: {theirs[0] / ours[0]:.1f}x faster than a query per asset "
        f"({ours[1]:.0f} vs {theirs[1]:.0f} statements)"
    )
    ours, theirs = big["asset sensor"], big["baseline: asset sensor scanning the log"]
    print(f"asset sensor idle tick: {theirs[0] / ours[0]:.1f}x faster than scanning the log")
    growth = big["asset sensor"][0] / small["asset sensor"][0]
    print(f"asset sensor idle tick, 100k vs 1k history: x{growth:.2f}")
    seconds, ticks, per_tick = drain(storage, counter)
    rate = RUNS / seconds
    dagster = dagster_drain(storage)
    print(
        f"\ndrain: {RUNS:,} run-status events in {seconds:.2f}s over {ticks} ticks "
        f"({per_tick:.1f} statements per tick): "
        f"{rate:,.0f} events/s (aim > {AIM_DRAIN:,.0f}: {'met' if rate > AIM_DRAIN else 'NOT met'}); "
        f"Dagster's way (5 per tick, a lookup per event): {1 / dagster:,.0f} events/s, x{rate * dagster:.0f} slower"
    )
    seconds, ticks, created = drain_through_the_beat(storage)
    print(
        f"drain through the beat, a run requested for every fifth event: {RUNS:,} events in {seconds:.2f}s "
        f"over {ticks} ticks, {created:,} runs created: {RUNS / seconds:,.0f} events/s, {created / seconds:,.0f} runs/s"
    )
    storage.dispose()


def main() -> None:
    load = os.getloadavg()
    print(
        f"# event sensors: Python {platform.python_version()}, {os.cpu_count()} CPUs, load {load[0]:.1f} "
        f"(shared machine), {ASSETS:,} assets x {PER_ASSET} materializations, {RUNS:,} runs; "
        f"idle ticks: median of {IDLE_TICKS}"
    )
    targets = os.environ.get("BENCH_EVENTS_DATABASES", "postgresql,sqlite").split(",")
    if "postgresql" in targets:
        run("PostgreSQL", _pg_url())
    if "sqlite" in targets:
        with tempfile.TemporaryDirectory() as workdir:
            run("SQLite", f"sqlite:///{workdir}/bench.db")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
