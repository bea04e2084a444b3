"""The beat's cost per tick and a schedule's latency to its first running step: ``make bench``.

Runs, in one process and one go (about 2.5 minutes):

1. Tick cost (``Beat.tick(now)`` wall time, in this process, with a ``FakeClock``), on
   PostgreSQL and on SQLite, with 100, 1,000 and 10,000 schedules on one tiny job:
   ``N - 100`` at ``0 3 * * *`` (never due here) and 100 at ``S-59/10 5 * * *`` (S = i % 10:
   each minute of 05:00-05:59, exactly 10 are due). The fake clock starts at 04:59:00;
   tick 1 (loads or creates every instigator row) and tick 2 (re-reads the rows tick 1 wrote,
   the refresh's one-second overlap) are warm-up, then 50 ticks one second apart with none
   due, then 20 ticks one minute apart from 05:00:30 with exactly 10 due (after one
   unmeasured). Due ticks commit real runs and publish their steps to Redis (nobody consumes
   them). At 10,000 the instigator rows are bulk-inserted before tick 1, as a restarted beat
   finds them (creating them is one transaction per schedule: ~30 s at 10,000). The three
   sizes' Beats exist at once, each on its own database (PostgreSQL: ``tidegate_bench_ticks_N``
   per size N, named after ``BENCH_BEAT_PG_DB``; SQLite: a file per size), and tick in turn, so that other load on the
   machine weighs on every size alike.
2. Latency from a ``* * * * *`` schedule's tick time to its step RUNNING on a real
   ``tidegate worker -c 2`` over Redis and PostgreSQL: the beat runs ``run_forever`` in a
   thread with a clock offset from real time; before each tick the offset is set so that the
   next minute boundary falls ``LEAD`` seconds in the real future (longer than the beat's
   one-second launcher sleep, so the beat always wakes in time to sleep until it). The
   latency is the step's ``started_at`` (the worker's real clock) minus the real instant the
   tick time stood for (tick time - offset). One Beat for all ticks (see ONE_BEAT).

It prints the conditions, the tables, the ratios against the aims and the peak RSS of the
bench process and the worker processes.

Services: Redis db 15 (``BENCH_BEAT_REDIS_URL``; flushed before, between the parts and after),
PostgreSQL database ``tidegate_bench`` (``BENCH_BEAT_PG_DB``; created if missing through
``BENCH_PG_ADMIN_URL``, as bench/steps.py, for part 2, and ``<that>_ticks_N`` for part 1; tables
truncated first). Sizes and sample counts: ``BENCH_BEAT_SIZES`` (100,1000,10000),
``BENCH_BEAT_NONE_TICKS`` (50), ``BENCH_BEAT_DUE_TICKS`` (20), ``BENCH_BEAT_SEED_FROM``
(10000), ``BENCH_BEAT_LATENCY_SAMPLES`` (50), ``BENCH_BEAT_FRESH_BEAT``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis
from sqlalchemy import insert, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench.common, bench.beat_defs

from bench.beat_defs import SLOTS, many_schedules  # noqa: E402
from bench.common import (  # noqa: E402
    RssRow,
    Worker,
    child_pids,
    cpu_model,
    load_avg,
    prepare_postgres,
    stop_workers,
    table,
    version,
    vm_hwm_kib,
    wait_ready,
)
from tidegate.broker import CeleryPublisher, make_celery_app  # noqa: E402
from tidegate.definitions.cron import next_tick  # noqa: E402
from tidegate.definitions.defs import Definitions  # noqa: E402
from tidegate.definitions.loading import CodeLocation  # noqa: E402
from tidegate.scheduler.beat import Beat, TickReport  # noqa: E402
from tidegate.scheduler.clock import FakeClock  # noqa: E402
from tidegate.storage.api import Storage  # noqa: E402
from tidegate.storage.schema import instigators, metadata, runs, steps, ticks  # noqa: E402

VENV_BIN = Path(sys.executable).parent
DEFS_FILE = "bench/beat_defs.py"
REDIS_URL = os.environ.get("BENCH_BEAT_REDIS_URL", "redis://127.0.0.1:6379/15")  # flushed first and last
PG_DB = os.environ.get("BENCH_BEAT_PG_DB", "tidegate_bench")

SIZES = tuple(int(s) for s in os.environ.get("BENCH_BEAT_SIZES", "100,1000,10000").split(","))
SLOTTED = 10 * SLOTS  # 10 due per minute
NONE_TICKS = int(os.environ.get("BENCH_BEAT_NONE_TICKS", "50"))
DUE_TICKS = int(os.environ.get("BENCH_BEAT_DUE_TICKS", "20"))  # + 1 unmeasured; at most 59
# From this size on, the instigator rows are bulk-inserted before the first tick, as a
# restarted beat finds them: creating them is one transaction per schedule (~3 ms each).
SEED_FROM = int(os.environ.get("BENCH_BEAT_SEED_FROM", "10000"))
START = datetime(2024, 1, 2, 4, 59, tzinfo=UTC)
AIM_TICK = 0.005  # issue 17: an idle tick at 10,000 schedules

LATENCY_SAMPLES = int(os.environ.get("BENCH_BEAT_LATENCY_SAMPLES", "50"))
LATENCY_WARMUP = 2
LEAD = 1.2  # seconds between arming a tick and its tick time (> the beat's 1 s launcher sleep)
POLL = 0.05  # the bench's poll for the step; the timestamps come from SQL, so this only costs GIL time
WORKER_CONCURRENCY = 2
AIM_LATENCY = 0.030  # issue 17: p50 tick time -> step RUNNING
# One long-lived Beat (run_forever in a thread) for every tick, by default. A Beat whose heap
# keeps duplicate entries (tidegate before the fix in Beat.tick: ``del self._due[name]``)
# re-runs _run_schedule once more at every tick, so its k-th tick costs ~k times the first;
# BENCH_BEAT_FRESH_BEAT=1 starts a fresh Beat (and thread) per tick to measure such a tree.
ONE_BEAT = os.environ.get("BENCH_BEAT_FRESH_BEAT", "") in ("", "0")


# -- part 1: tick cost -------------------------------------------------------------------------


@dataclass
class TickCase:
    database: str
    schedules: int
    seeded: bool
    build_defs: float = 0.0
    first: float = 0.0
    second: float = 0.0
    none_due: list[float] = field(default_factory=list)
    due: list[float] = field(default_factory=list)
    heap: int | None = None


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98] if len(samples) > 1 else samples[0]


def truncate_all(storage: Storage) -> None:
    with storage.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)} RESTART IDENTITY"))


def seed_instigators(storage: Storage, defs: Definitions, when: datetime) -> None:
    """The rows ``initialize_instigator`` would have written at ``when``, in one statement."""
    rows = [
        {
            "name": name,
            "kind": "schedule",
            "status": None,
            "version": 0,
            "running_since": when,
            "last_tick_at": when,
            "updated_at": when,
        }
        for name in defs.schedules
    ]
    with storage.engine.begin() as conn:
        conn.execute(insert(instigators), rows)


def timed_tick(beat: Beat, clock: FakeClock, now: datetime) -> tuple[float, TickReport]:
    clock.set(now)
    start = time.perf_counter()
    report = beat.tick(now)
    return time.perf_counter() - start, report


@dataclass
class TickSetup:
    case: TickCase
    storage: Storage
    beat: Beat
    clock: FakeClock


def setup_case(database: str, url: str, n: int, app: Any) -> TickSetup:
    """A fresh database (or schema) and a Beat with ``n`` schedules, past its two warm-up ticks."""
    case = TickCase(database, n, seeded=n >= SEED_FROM)
    storage = Storage.open(url, upgrade=True)
    if storage.dialect == "postgresql":
        truncate_all(storage)
    start = time.perf_counter()
    defs = many_schedules(n - min(n, SLOTTED), min(n, SLOTTED))
    case.build_defs = time.perf_counter() - start
    if case.seeded:
        seed_instigators(storage, defs, START - timedelta(hours=1))
    clock = FakeClock(START)
    beat = Beat(defs, storage, CeleryPublisher(app, storage), clock=clock, holder=f"bench-{database}-{n}")
    case.first, _ = timed_tick(beat, clock, START)
    case.second, _ = timed_tick(beat, clock, START + timedelta(seconds=1.5))
    return TickSetup(case, storage, beat, clock)


def tick_costs(database: str, urls: dict[int, str], app: Any) -> list[TickCase]:
    """Every size's Beat at once, each on its own database (or schema); their ticks take turns,
    so a change in the machine's other load weighs on every size alike."""
    setups: list[TickSetup] = []
    try:
        for n, url in urls.items():
            progress(f"tick cost: {database}, {n:,} schedules: definitions and warm-up ticks")
            setups.append(setup_case(database, url, n, app))
        progress(f"tick cost: {database}: {NONE_TICKS} none-due and {DUE_TICKS + 1} 10-due ticks per size, in turn")
        for i in range(NONE_TICKS):
            for s in setups:
                elapsed, report = timed_tick(s.beat, s.clock, START + timedelta(seconds=3 + i))
                if report.schedule_ticks or not report.leader:
                    raise RuntimeError(f"{database} {s.case.schedules}: a none-due tick did {report}")
                s.case.none_due.append(elapsed)
        for k in range(DUE_TICKS + 1):
            for s in setups:
                elapsed, report = timed_tick(s.beat, s.clock, START + timedelta(minutes=1 + k, seconds=30))
                if len(report.schedule_ticks) != 10 or report.failures:
                    raise RuntimeError(
                        f"{database} {s.case.schedules}: due tick {k} committed {len(report.schedule_ticks)} "
                        f"ticks, not 10 ({report.failures})"
                    )
                if k:
                    s.case.due.append(elapsed)
        for s in setups:
            heap = getattr(s.beat, "_heap", None)
            s.case.heap = len(heap) if isinstance(heap, list) else None
    finally:
        for s in setups:
            s.storage.dispose()
    return [s.case for s in setups]


def pg_size_urls(pg_db: str) -> dict[int, str]:
    """One database per size, created if missing. (A schema per size with ``search_path`` in the
    URL's ``options`` no longer works: the engine's own ``options`` connect argument replaces
    the URL's, so every size shared one set of tables and one leader lease.)"""
    return {n: prepare_postgres(f"{pg_db}_ticks_{n}")[0] for n in SIZES}


def cron_costs(crons: list[str], calls: int = 10) -> list[tuple[str, float]]:
    """What one ``next_tick`` costs per cron expression (the beat calls it per due schedule)."""
    after = datetime(2024, 1, 2, 5, 3, 30, tzinfo=UTC)
    results = []
    for cron in crons:
        start = time.perf_counter()
        for _ in range(calls):
            next_tick(cron, ZoneInfo("UTC"), after)
        results.append((cron, (time.perf_counter() - start) / calls))
    return results


# -- part 2: latency to the first running step -------------------------------------------------


class OffsetClock:
    """Real UTC time plus an offset the bench moves; sleeps in real time."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


@dataclass
class LatencySample:
    real_tick: datetime  # the real instant the tick time stood for
    woke: datetime  # the beat started the tick (its ticks.started_at, back in real time)
    created: datetime  # runs.created_at (real)
    ready: datetime  # steps.ready_at (real; start_run)
    running: datetime  # steps.started_at (real; the worker's claim)

    def seconds(self, until: datetime, since: datetime | None = None) -> float:
        return (until - (since or self.real_tick)).total_seconds()


def find_sample(storage: Storage, tick_time: datetime, offset: timedelta, real_tick: datetime) -> LatencySample | None:
    with storage.engine.connect() as conn:
        row = conn.execute(
            select(runs.c.created_at, steps.c.ready_at, steps.c.started_at)
            .join(steps, steps.c.run_id == runs.c.run_id)
            .where(runs.c.origin == "schedule:every_minute", runs.c.run_key == f"{tick_time.isoformat()}#0")
        ).one_or_none()
        if row is None or row.started_at is None:
            return None
        woke = conn.execute(
            select(ticks.c.started_at).where(ticks.c.instigator == "every_minute", ticks.c.tick_time == tick_time)
        ).scalar_one()
    return LatencySample(real_tick, woke - offset, row.created_at, row.ready_at, row.started_at)


@dataclass
class LatencyResult:
    samples: list[LatencySample] = field(default_factory=list)
    worker_ready: float = 0.0
    beat_errors: list[str] = field(default_factory=list)


def start_worker(env: dict[str, str], logs: Path) -> Worker:
    name = "bench-beat-worker@bench"
    argv = [str(VENV_BIN / "tidegate"), "worker", "-f", DEFS_FILE, "-c", str(WORKER_CONCURRENCY)]
    argv += ["-P", "prefork", "-l", "WARNING", "-n", name]
    log_path = logs / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Worker(name, proc, log_path)


def latency(url: str, env: dict[str, str], logs: Path, rss: list[RssRow]) -> LatencyResult:
    result = LatencyResult()
    storage = Storage.open(url, upgrade=True)
    truncate_all(storage)
    defs = CodeLocation(file=str(ROOT / DEFS_FILE)).load()
    app = make_celery_app(REDIS_URL)
    publisher = CeleryPublisher(app, storage)
    worker = start_worker(env, logs)
    clock = OffsetClock()
    running: tuple[threading.Thread, threading.Event] | None = None

    def start_beat() -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        beat = Beat(defs, storage, publisher, clock=clock, holder="bench-latency")
        thread = threading.Thread(target=beat.run_forever, args=(stop,), name="beat", daemon=True)
        thread.start()
        return thread, stop

    def stop_beat() -> None:
        nonlocal running
        if running is not None:
            running[1].set()
            running[0].join(timeout=15)
            running = None

    try:
        result.worker_ready = wait_ready(app, [worker])
        running = start_beat()
        deadline = time.monotonic() + 10
        while storage.get_instigator("every_minute") is None:  # the beat's first tick
            if time.monotonic() > deadline:
                raise RuntimeError("the beat did not initialize its schedule within 10 s")
            time.sleep(0.05)
        first = (datetime.now(UTC) + timedelta(minutes=2)).replace(second=0, microsecond=0)
        for k in range(LATENCY_WARMUP + LATENCY_SAMPLES):
            tick_time = first + timedelta(minutes=k)
            if not ONE_BEAT:
                stop_beat()  # it releases the lease; the next one takes it at once (same holder)
            real_tick = datetime.now(UTC) + timedelta(seconds=LEAD)
            offset = tick_time - real_tick
            clock.offset = offset  # one assignment: the beat thread sees the old or the new offset
            if running is None:
                running = start_beat()
            deadline = time.monotonic() + LEAD + 15
            time.sleep(LEAD)  # no polling (GIL contention with the beat thread) before the tick
            while (sample := find_sample(storage, tick_time, offset, real_tick)) is None:
                if time.monotonic() > deadline or not running[0].is_alive():
                    raise RuntimeError(f"tick {tick_time}: no running step within {LEAD + 15:.0f}s\n{worker.tail()}")
                time.sleep(POLL)
            if k >= LATENCY_WARMUP:
                result.samples.append(sample)
            if k % 10 == 9:
                progress(f"latency: {k + 1}/{LATENCY_WARMUP + LATENCY_SAMPLES} ticks")
        worker.children = child_pids(worker.proc.pid)
        rss.append(RssRow(f"worker {worker.name} main", worker.proc.pid, vm_hwm_kib(worker.proc.pid)))
        rss.extend(RssRow(f"worker {worker.name} pool child", c, vm_hwm_kib(c)) for c in worker.children)
    finally:
        stop_beat()
        stop_workers([worker])
        storage.dispose()
    return result


# -- output ------------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f} ms"


def progress(message: str) -> None:
    print(f"[bench beat] {message}", file=sys.stderr, flush=True)


def verdict(value: float, aim: float) -> str:
    return f"{value / aim:.2f}x of the aim ({'met' if value <= aim else 'NOT met'})"


@dataclass
class Results:
    pg_url: str = ""
    pg_version: str = "?"
    redis_version: str = "?"
    cases: list[TickCase] = field(default_factory=list)
    crons: list[tuple[str, float]] = field(default_factory=list)
    latency: LatencyResult | None = None
    rss: list[RssRow] = field(default_factory=list)
    load: list[str] = field(default_factory=list)
    total: float = 0.0


def report(res: Results) -> None:
    dists = ("celery", "kombu", "redis", "sqlalchemy", "psycopg", "croniter", "tidegate")
    affinity = len(os.sched_getaffinity(0))
    python = f"{platform.python_version()} ({platform.python_implementation()}), {platform.platform()}"
    worker_cmd = f"tidegate worker -f {DEFS_FILE} -c {WORKER_CONCURRENCY} -P prefork -l WARNING"
    conditions = [
        ("cpu", f"{os.cpu_count()} CPUs ({affinity} usable), {cpu_model()}"),
        ("python", python),
        ("packages", ", ".join(f"{d} {version(d)}" for d in dists)),
        ("broker", f"{REDIS_URL} (Redis {res.redis_version}), flushed before and after"),
        ("databases", f"{Storage(res.pg_url).safe_url} (PostgreSQL {res.pg_version}), tables truncated first"),
        ("", f"  part 1: database {PG_DB}_ticks_N per size N; part 2: {PG_DB}"),
        ("", f"SQLite {sqlite3.sqlite_version}: part 1, a fresh file per size in a temporary directory (WAL)"),
        ("processes", "part 1: the bench process only: one Beat per size, FakeClock each, ticking in turn"),
        ("", f"part 2: the bench process (beat thread, run_forever) + 1 worker: {worker_cmd}"),
        ("", f"        (1 main + {WORKER_CONCURRENCY} prefork children)"),
        ("", "        " + ("one Beat for every tick" if ONE_BEAT else "a fresh Beat per tick (BENCH_BEAT_FRESH_BEAT)")),
        ("load avg", f"{res.load[0]} at start, {res.load[-1]} at end (1/5/15 min)"),
    ]
    print("tidegate beat benchmark (bench/beat.py)")
    print()
    print("conditions")
    for label, value in conditions:
        print(f"  {label:<10} {value}")
    print()

    print(
        f"1. Beat.tick(now) wall time: {NONE_TICKS} ticks with none due (1 s apart), "
        f"{DUE_TICKS} ticks with 10 due (1 min apart, after 1 unmeasured)"
    )
    rows = []
    for c in res.cases:
        rows.append(
            [
                c.database,
                f"{c.schedules:,}",
                ms(c.build_defs),
                ms(c.first) + (" (seeded)" if c.seeded else ""),
                ms(c.second),
                ms(statistics.median(c.none_due)),
                ms(p99(c.none_due)),
                ms(min(c.none_due)),
                ms(statistics.median(c.due)),
                ms(p99(c.due)),
                "?" if c.heap is None else f"{c.heap:,}",
            ]
        )
    headers = ["database", "schedules", "Definitions", "tick 1", "tick 2", "none: median", "none: p99", "none: min"]
    headers += ["10 due: median", "10 due: p99", "heap after"]
    print(table(headers, rows, [False, *([True] * 10)]))
    print("  tick 1: loads every instigator row and schedules each; with no rows yet it creates them, one")
    print("          transaction each. '(seeded)': the rows were bulk-inserted first, as a restarted beat")
    print("          finds them. tick 2: re-reads the rows tick 1 wrote (the refresh overlaps one second).")
    for c in res.cases:
        if len(c.due) >= 2 * SLOTS:
            first, last = c.due[:SLOTS], c.due[-SLOTS:]
            print(
                f"  {c.database} {c.schedules:,}: 10-due median over the first {SLOTS} due ticks "
                f"{ms(statistics.median(first))}, over the last {SLOTS} {ms(statistics.median(last))}"
            )
    print()
    print("   next_tick() cost per cron (called ~3 times per due schedule)")
    print(table(["cron", "one call"], [[cron, ms(cost)] for cron, cost in res.crons], [False, True]))
    print()

    lat = res.latency
    if lat is not None and lat.samples:
        print(
            f"2. latency from a '* * * * *' tick time to its step RUNNING, {len(lat.samples)} ticks "
            f"(after {LATENCY_WARMUP} unmeasured), worker ready {lat.worker_ready:.2f} s after start"
        )
        phases = [
            ("tick time -> step RUNNING", [s.seconds(s.running) for s in lat.samples]),
            ("  tick time -> beat woke", [s.seconds(s.woke) for s in lat.samples]),
            ("  tick time -> run created", [s.seconds(s.created) for s in lat.samples]),
            ("  run created -> step READY", [s.seconds(s.ready, s.created) for s in lat.samples]),
            ("  step READY -> RUNNING", [s.seconds(s.running, s.ready) for s in lat.samples]),
        ]
        print(
            table(
                ["phase", "p50", "p99", "min", "max"],
                [[label, ms(statistics.median(v)), ms(p99(v)), ms(min(v)), ms(max(v))] for label, v in phases],
                [False, True, True, True, True],
            )
        )
        print("  'beat woke': the tick's started_at (beat clock) minus the offset; READY is set by start_run,")
        print("  RUNNING by the worker's claim (steps.started_at). Every instant is this machine's real clock.")
        print()

    print("ratios against the aims")
    ratio_rows = []
    by_key = {(c.database, c.schedules): c for c in res.cases}
    for database in ("postgresql", "sqlite"):
        big = by_key.get((database, max(SIZES)))
        small = by_key.get((database, min(SIZES)))
        if big is None or small is None:
            continue
        big_median = statistics.median(big.none_due)
        ratio_rows.append(
            [
                f"{database}: none-due tick, {big.schedules:,} schedules (median)",
                ms(big_median),
                f"aim <= {AIM_TICK * 1000:g} ms: {verdict(big_median, AIM_TICK)}",
            ]
        )
        ratio_rows.append(
            [
                f"{database}: none-due tick {big.schedules:,} / {small.schedules:,} schedules",
                f"{big_median / statistics.median(small.none_due):.2f}x",
                "independent of the count: ~1x",
            ]
        )
        ratio_rows.append(
            [
                f"{database}: none-due tick {big.schedules:,} / {small.schedules:,} schedules, min",
                f"{min(big.none_due) / min(small.none_due):.2f}x",
                "the same, less sensitive to other load",
            ]
        )
        ratio_rows.append(
            [
                f"{database}: 10-due tick {big.schedules:,} / {small.schedules:,} schedules",
                f"{statistics.median(big.due) / statistics.median(small.due):.2f}x",
                "",
            ]
        )
    if lat is not None and lat.samples:
        p50 = statistics.median(s.seconds(s.running) for s in lat.samples)
        aim = f"aim <= {AIM_LATENCY * 1000:g} ms: {verdict(p50, AIM_LATENCY)}"
        ratio_rows.append(["tick time -> step RUNNING (p50)", ms(p50), aim])
    print(table(["measure", "value", ""], ratio_rows, [False, True, False]))
    print()
    print("peak RSS (VmHWM from /proc just before the worker stops; ru_maxrss for the bench)")
    print(
        table(
            ["process", "pid", "peak RSS"],
            [[r.process, str(r.pid), f"{r.kib / 1024:,.1f} MiB" if r.kib else "?"] for r in res.rss],
            [False, True, True],
        )
    )
    print()
    print(f"total bench time {res.total:.1f} s")


# -- main --------------------------------------------------------------------------------------


def flush_redis() -> str:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    found = str(client.info("server").get("redis_version", "?"))
    client.close()
    return found


def main() -> int:
    began = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    res = Results(load=[load_avg()])
    res.redis_version = flush_redis()
    res.pg_url, res.pg_version = prepare_postgres(PG_DB)  # as bench/steps.py
    scratch = Path(tempfile.mkdtemp(prefix="tidegate-bench-beat-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEGATE_", "BENCH_"))}
    env.update(
        TIDEGATE_BROKER_URL=REDIS_URL,
        TIDEGATE_DATABASE_URL=res.pg_url,
        TIDEGATE_HOME=str(scratch / "home"),
        TIDEGATE_IO_BASE_DIR=str(scratch / "io"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    app = make_celery_app(REDIS_URL)
    ok = False
    try:
        res.cases += tick_costs("postgresql", pg_size_urls(PG_DB), app)
        res.cases += tick_costs("sqlite", {n: f"sqlite:///{scratch / f'ticks-{n}.db'}" for n in SIZES}, app)
        res.crons = cron_costs(["0 3 * * *", "3-59/10 5 * * *", "7 * * * *", "*/5 * * * *", "* * * * *"])
        flush_redis()  # part 1's published steps must not reach part 2's worker
        progress(f"latency: {LATENCY_WARMUP + LATENCY_SAMPLES} ticks, about {LEAD + 0.3:.1f} s each")
        res.latency = latency(res.pg_url, env, scratch, res.rss)
        ok = True
    finally:
        with contextlib.suppress(Exception):
            flush_redis()
        if ok:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            progress(f"bench failed; logs kept in {scratch}")
    bench_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    res.rss.append(RssRow("bench process (10,000 definitions, the beat in-process)", os.getpid(), bench_kib))
    res.load.append(load_avg())
    res.total = time.perf_counter() - began
    report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
