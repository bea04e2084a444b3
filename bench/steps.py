"""Per-step overhead of tidegate on real workers, against plain Celery: ``make bench``.

Runs, in one process and one go (well under 3 minutes):

1. tidegate: 2 real ``tidegate worker -f bench/steps_defs.py -c 1 -P prefork`` processes on
   Redis and PostgreSQL; a 50-step chain (5 runs) and a 1 -> 200 -> 1 fan-out (3 runs),
   each submitted with ``Storage.submit_run``, started with ``Launcher.tick`` and followed
   by polling ``Storage.get_run`` every 5 ms; wall time from submit to the run's end.
2. baseline: 2 real ``celery -A bench.raw_celery worker -c 1 -P prefork`` processes on the
   same broker; no-op round trips (apply_async + result.get), then the same chain and
   fan-out where each task sends the next ones.

It prints the conditions, a table of wall times, the ratios and the peak RSS of every
process (read from /proc just before the workers are stopped). See bench/README.md.
"""

from __future__ import annotations

import importlib
import os
import platform
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench.common, bench.raw_celery

from bench.common import (
    RssRow,
    cpu_and_wall,
    cpu_model,
    load_avg,
    ms,
    prepare_postgres,
    progress,
    run_job,
    running_workers,
    since,
    table,
    truncate,
    version,
)
from tidegate.broker import CeleryPublisher, make_celery_app
from tidegate.definitions.loading import CodeLocation
from tidegate.scheduler.launcher import Launcher
from tidegate.storage.api import Storage

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
DEFS_FILE = "bench/steps_defs.py"

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")  # flushed first
RESULT_URL = os.environ.get("BENCH_RESULT_URL", "redis://127.0.0.1:6379/14")  # flushed first
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_DATABASE = os.environ.get("BENCH_PG_DATABASE", "tidegate_bench")

WORKERS = 2
CONTINUATION = os.environ.get("BENCH_CONTINUATION", "1")  # the workers' TIDEGATE_CONTINUATION (on, as in tidegate)
STEP_AIM = 2.0  # a chain / fan-out step against raw Celery's same shape (issue 17)
CONCURRENCY = 1
POOL = "prefork"
POLL_SECONDS = 0.005
CHAIN_STEPS = 50
FANOUT_WIDTH = 200
FANOUT_STEPS = FANOUT_WIDTH + 2
DYNAMIC_WIDTH = 1000
DYNAMIC_STEPS = DYNAMIC_WIDTH + 2
DYNAMIC_RUNS = int(os.environ.get("BENCH_DYNAMIC_RUNS", "2"))
CHAIN_RUNS = int(os.environ.get("BENCH_CHAIN_RUNS", "5"))
FANOUT_RUNS = int(os.environ.get("BENCH_FANOUT_RUNS", "3"))
ROUND_TRIPS = int(os.environ.get("BENCH_ROUND_TRIPS", "200"))
WARMUP_ROUND_TRIPS = 20
RUN_TIMEOUT = 60.0
DYNAMIC_TIMEOUT = 600.0  # 1,002 steps on 2 single-process workers


# -- backing services ------------------------------------------------------------------------


def prepare_redis() -> str:
    version = "?"
    for url in (REDIS_URL, RESULT_URL):
        r = redis.Redis.from_url(url)
        r.flushdb()
        version = str(r.info("server").get("redis_version", "?"))
        r.close()
    return version


# -- tidegate runs ---------------------------------------------------------------------------


def step_phases(storage: Storage, run_ids: Sequence[str]) -> tuple[float, float]:
    """Median seconds per step of READY -> RUNNING and RUNNING -> SUCCEEDED (SQL timestamps)."""
    waits, bodies = [], []
    for run_id in run_ids:
        for s in storage.get_steps(run_id):
            if s.ready_at and s.started_at and s.ended_at:
                waits.append((s.started_at - s.ready_at).total_seconds())
                bodies.append((s.ended_at - s.started_at).total_seconds())
    return statistics.median(waits), statistics.median(bodies)


def dynamic_phases(storage: Storage, run_ids: Sequence[str]) -> list[tuple[float, float, float]]:
    """Per run, from dyn_root's success transaction (its ended_at: the transaction's time,
    which also plans the 1,000 mapped steps, their ready_at) to: the first mapped step
    RUNNING, the last one ENQUEUED (published), the last one RUNNING. SQL timestamps."""
    found = []
    for run_id in run_ids:
        steps = storage.get_steps(run_id)
        root = next(s for s in steps if s.step_key == "dyn_root")
        mapped = [s for s in steps if s.step_key.startswith("dyn_step[")]
        if len(mapped) != DYNAMIC_WIDTH or root.ended_at is None:
            raise RuntimeError(f"dynamic_job run {run_id}: {len(mapped)} mapped steps")
        first = min(s.started_at for s in mapped if s.started_at)
        published = max(s.enqueued_at for s in mapped if s.enqueued_at)
        last = max(s.started_at for s in mapped if s.started_at)
        found.append(tuple((t - root.ended_at).total_seconds() for t in (first, published, last)))
    return found  # type: ignore[return-value]


def continued_share(storage: Storage, run_ids: Sequence[str]) -> str:
    """How many of the runs' steps ran by continuation: claimed in their parent's success
    transaction, so started at the very instant (PostgreSQL's transaction time) it ended."""
    continued = total = 0
    for run_id in run_ids:
        found = {s.step_key: s for s in storage.get_steps(run_id)}
        total += len(found)
        claimed_with_parent = {
            child
            for s in found.values()
            for child in s.downstream or ()
            if child in found and s.ended_at is not None and found[child].started_at == s.ended_at
        }
        continued += len(claimed_with_parent)
    return f"{continued} of {total}"


# -- raw Celery runs -------------------------------------------------------------------------


def raw_until_done(r: redis.Redis, token: str, label: str, start: float) -> float:
    while not r.exists(f"{token}:done"):
        if time.perf_counter() - start > RUN_TIMEOUT:
            raise RuntimeError(f"raw {label} {token} not done after {RUN_TIMEOUT:.0f}s")
        time.sleep(POLL_SECONDS)
    return time.perf_counter() - start


def raw_chain(raw: Any, r: redis.Redis) -> float:
    token = f"chain-{uuid.uuid4().hex}"
    start = time.perf_counter()
    raw.hop.apply_async((token, CHAIN_STEPS))
    return raw_until_done(r, token, "chain", start)


def raw_fanout(raw: Any, r: redis.Redis) -> float:
    token = f"fan-{uuid.uuid4().hex}"
    start = time.perf_counter()
    raw.fan_root.apply_async((token, FANOUT_WIDTH))
    return raw_until_done(r, token, "fan-out", start)


def raw_round_trips(raw: Any, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        raw.noop.apply_async().get(timeout=10)
        times.append(time.perf_counter() - start)
    return times


# -- output ----------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    samples: list[float]
    steps: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def per_step(self) -> float:
        return self.median / self.steps

    def cells(self) -> list[str]:
        return [
            self.scenario,
            str(len(self.samples)),
            str(self.steps),
            ms(self.median),
            ms(min(self.samples)),
            ms(max(self.samples)),
            ms(self.per_step),
        ]


# -- main ------------------------------------------------------------------------------------


@dataclass
class Results:
    database_url: str = ""
    redis_version: str = "?"
    pg_version: str = "?"
    rows: dict[str, Row] = field(default_factory=dict)
    rss: list[RssRow] = field(default_factory=list)
    ready: dict[str, float] = field(default_factory=dict)
    phases: tuple[float, float] | None = None
    continued: str = "?"
    dynamic: list[tuple[float, float, float]] = field(default_factory=list)
    load: list[str] = field(default_factory=list)
    total: float = 0.0
    bench_cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # phase: (cpu s, wall s)


def worker_options(name: str) -> list[str]:
    return ["-c", str(CONCURRENCY), "-P", POOL, "-l", "WARNING", "-n", name]


def main() -> int:
    began = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    sys.path.insert(0, str(ROOT))  # bench.raw_celery, as the raw workers import it
    os.environ.update(BENCH_BROKER_URL=REDIS_URL, BENCH_RESULT_URL=RESULT_URL)  # the raw app reads these on import
    raw = importlib.import_module("bench.raw_celery")
    res = Results(load=[load_avg()])

    res.redis_version = prepare_redis()
    res.database_url, res.pg_version = prepare_postgres(PG_DATABASE, PG_ADMIN_URL)
    storage = Storage.open(res.database_url, upgrade=True)
    truncate(storage)

    scratch = Path(tempfile.mkdtemp(prefix="tidegate-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEGATE_", "BENCH_"))}
    env.update(
        TIDEGATE_BROKER_URL=REDIS_URL,
        TIDEGATE_DATABASE_URL=res.database_url,
        TIDEGATE_HOME=str(scratch / "home"),
        TIDEGATE_IO_BASE_DIR=str(scratch / "io"),
        BENCH_BROKER_URL=REDIS_URL,
        BENCH_RESULT_URL=RESULT_URL,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        TIDEGATE_CONTINUATION=CONTINUATION,
    )
    defs = CodeLocation(file=str(ROOT / DEFS_FILE)).load()
    for job, expected in (("chain_job", CHAIN_STEPS), ("fanout_job", FANOUT_STEPS), ("dynamic_job", 2)):
        if len(defs.plan(job).steps) != expected:
            raise RuntimeError(f"{DEFS_FILE}: {job} has {len(defs.plan(job).steps)} steps, expected {expected}")
    app = make_celery_app(REDIS_URL)
    launcher = Launcher(storage, CeleryPublisher(app, storage))

    def tidegate_worker(name: str) -> list[str]:
        return [str(VENV_BIN / "tidegate"), "worker", "-f", DEFS_FILE, *worker_options(name)]

    def raw_worker(name: str) -> list[str]:
        celery = str(VENV_BIN / "celery")
        return [celery, "-A", "bench.raw_celery", "worker", "-E", "-Q", raw.QUEUE, *worker_options(name)]

    ok = False
    rows = res.rows
    try:
        progress(f"starting {WORKERS} tidegate workers")
        mark = cpu_and_wall()
        with running_workers("tidegate", tidegate_worker, env, scratch, app, res.rss, WORKERS) as (_, ready):
            res.ready["tidegate"] = ready
            for job, runs, steps, label in (
                ("chain_job", CHAIN_RUNS, CHAIN_STEPS, f"tidegate chain {CHAIN_STEPS}"),
                ("fanout_job", FANOUT_RUNS, FANOUT_STEPS, f"tidegate fan-out 1->{FANOUT_WIDTH}->1"),
                ("dynamic_job", DYNAMIC_RUNS, DYNAMIC_STEPS, f"tidegate dynamic 1->{DYNAMIC_WIDTH}->1 (ops)"),
            ):
                limit = DYNAMIC_TIMEOUT if job == "dynamic_job" else RUN_TIMEOUT
                run_job(storage, launcher, defs, job, timeout=limit)  # warm-up: pool children load code, connect
                timings = [run_job(storage, launcher, defs, job, timeout=limit) for _ in range(runs)]
                rows[job] = Row(label, [t.wall for t in timings], steps)
                if job == "chain_job":
                    res.phases = step_phases(storage, [t.run_id for t in timings])
                    res.continued = continued_share(storage, [t.run_id for t in timings])
                if job == "dynamic_job":
                    res.dynamic = dynamic_phases(storage, [t.run_id for t in timings])
                    for first, published, last in res.dynamic:
                        progress(f"first mapped RUNNING {ms(first)}, all published {ms(published)}, last {ms(last)}")
                truncate(storage)
                progress(f"{label}: done, median {ms(rows[job].median)}, {ms(rows[job].per_step)} per step")

        res.bench_cpu["tidegate"] = since(mark)
        progress(f"starting {WORKERS} raw Celery workers")
        mark = cpu_and_wall()
        r = redis.Redis.from_url(REDIS_URL)
        with running_workers("raw", raw_worker, env, scratch, raw.app, res.rss, WORKERS) as (_, ready):
            res.ready["raw"] = ready
            raw_round_trips(raw, WARMUP_ROUND_TRIPS)
            rows["rt"] = Row("raw round trip (apply_async+get)", raw_round_trips(raw, ROUND_TRIPS), 1)
            raw_chain(raw, r)
            rows["raw_chain"] = Row(
                f"raw chain {CHAIN_STEPS}", [raw_chain(raw, r) for _ in range(CHAIN_RUNS)], CHAIN_STEPS
            )
            raw_fanout(raw, r)
            rows["raw_fanout"] = Row(
                f"raw fan-out 1->{FANOUT_WIDTH}->1",
                [raw_fanout(raw, r) for _ in range(FANOUT_RUNS)],
                FANOUT_STEPS,
            )
            progress("raw: done")
        r.close()
        res.bench_cpu["raw"] = since(mark)
        ok = True
    finally:
        storage.dispose()
        if ok:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            progress(f"bench failed; worker logs kept in {scratch}")

    bench_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    res.rss.append(RssRow("bench process (submit, publish roots, poll)", os.getpid(), bench_kib))
    res.load.append(load_avg())
    res.total = time.perf_counter() - began
    report(res)
    return 0


def report(res: Results) -> None:
    affinity = len(os.sched_getaffinity(0))
    dists = ("celery", "kombu", "billiard", "redis", "sqlalchemy", "psycopg", "tidegate")
    python = f"{platform.python_version()} ({platform.python_implementation()}), {platform.platform()}"
    tidegate_cmd = f"tidegate worker -f {DEFS_FILE} " + " ".join(worker_options("bench-tidegate-N@bench"))
    raw_cmd = "celery -A bench.raw_celery worker -E -Q bench_raw " + " ".join(worker_options("bench-raw-N@bench"))
    conditions = [
        ("cpu", f"{os.cpu_count()} CPUs ({affinity} usable), {cpu_model()}"),
        ("python", python),
        ("packages", ", ".join(f"{d} {version(d)}" for d in dists)),
        ("broker", f"{REDIS_URL} (Redis {res.redis_version}), the same db for tidegate and raw"),
        ("", f"raw result backend {RESULT_URL}"),
        ("database", f"{Storage(res.database_url).safe_url} (PostgreSQL {res.pg_version})"),
        ("workers", f"{WORKERS} worker processes x concurrency {CONCURRENCY}, pool {POOL}, task events on"),
        ("", f"tidegate: {tidegate_cmd}"),
        ("", f"raw:      {raw_cmd}"),
        ("", f"ping answered {res.ready['tidegate']:.2f} s (tidegate), {res.ready['raw']:.2f} s (raw) after start"),
        ("", f"TIDEGATE_CONTINUATION={CONTINUATION} on the tidegate workers (BENCH_CONTINUATION)"),
        ("assets", "no-op bodies, deps= edges, return None: no IO manager, empty materialization"),
        ("ops", f"dynamic_job: no-op ops, {DYNAMIC_WIDTH} DynamicOutputs, a null IO manager (stores nothing)"),
        ("method", "wall = submit_run + Launcher.tick until get_run is seen terminal, polled every 5 ms"),
        ("", "one unmeasured warm-up run per scenario first; tables truncated between scenarios"),
        ("", "raw: tidegate's Celery settings (json, acks_late, prefetch 1, events), ignore_result;"),
        ("", "each task sends the next, the last sets a Redis flag polled every 5 ms"),
        ("load avg", f"{res.load[0]} at start, {res.load[-1]} at end (1/5/15 min)"),
    ]
    print("tidegate step benchmark (bench/steps.py)")
    print()
    print("conditions")
    for label, value in conditions:
        print(f"  {label:<10} {value}")
    print()

    rows = res.rows
    print("wall times (median over runs; per step = median / steps)")
    print(
        table(
            ["scenario", "runs", "steps", "median", "min", "max", "per step"],
            [row.cells() for row in rows.values()],
            [False, True, True, True, True, True, True],
        )
    )
    rt = rows["rt"]
    print(f"  raw round trip p90: {ms(statistics.quantiles(rt.samples, n=10)[-1])}")
    if res.phases is not None:
        wait, body = res.phases
        print("  tidegate chain, median per step from the steps table's timestamps:")
        print(f"    READY->RUNNING     {ms(wait):>9}  previous step's complete txn, publish, broker, pickup")
        print(f"    RUNNING->SUCCEEDED {ms(body):>9}  claim txn, heartbeat thread, the no-op call")
        print(f"    steps run by continuation (claimed in their parent's success transaction): {res.continued}")
    for i, (first, published, last) in enumerate(res.dynamic):
        print(
            f"  dynamic run {i + 1}: from dyn_root's success txn (plans {DYNAMIC_WIDTH} steps): first mapped "
            f"RUNNING {ms(first)}, all published {ms(published)}, last RUNNING {ms(last)}"
        )
    for phase, (cpu, wall) in res.bench_cpu.items():
        print(f"  bench process CPU during the {phase} phase: {cpu:.2f} s of {wall:.2f} s wall (polling)")
    print()

    chain, fan, raw_chain, raw_fan = rows["chain_job"], rows["fanout_job"], rows["raw_chain"], rows["raw_fanout"]
    aim = chain.per_step / rt.median
    print("ratios")
    print(
        table(
            ["ratio", "value", ""],
            [
                [
                    "tidegate chain step / raw round trip",
                    f"{aim:.2f}x",
                    f"aim <= 5x: {'met' if aim <= 5 else 'NOT met'}",
                ],
                [
                    "tidegate chain step / raw chain step",
                    f"{chain.per_step / raw_chain.per_step:.2f}x",
                    f"aim <= {STEP_AIM:g}x: {'met' if chain.per_step <= STEP_AIM * raw_chain.per_step else 'NOT met'}",
                ],
                [
                    "tidegate fan-out step / raw fan-out step",
                    f"{fan.per_step / raw_fan.per_step:.2f}x",
                    f"aim <= {STEP_AIM:g}x: {'met' if fan.per_step <= STEP_AIM * raw_fan.per_step else 'NOT met'}",
                ],
                ["tidegate fan-out step / raw round trip", f"{fan.per_step / rt.median:.2f}x", ""],
                [
                    "tidegate dynamic (ops) step / asset fan-out step",
                    f"{rows['dynamic_job'].per_step / fan.per_step:.2f}x",
                    "same run",
                ],
                [
                    "tidegate dynamic (ops) step / raw fan-out step",
                    f"{rows['dynamic_job'].per_step / raw_fan.per_step:.2f}x",
                    "",
                ],
            ],
            [False, True, False],
        )
    )
    print()
    print("peak RSS (VmHWM from /proc just before the workers stop; ru_maxrss for the bench)")
    print(
        table(
            ["process", "pid", "peak RSS"],
            [[row.process, str(row.pid), f"{row.kib / 1024:,.1f} MiB" if row.kib else "?"] for row in res.rss],
            [False, True, True],
        )
    )
    print()
    print(f"total bench time {res.total:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
