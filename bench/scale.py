"""Horizontal scaling: ``python bench/scale.py [--quick]`` (see bench/README.md).

For each worker set-up in CONFIGS (one ``tidegate worker -P prefork`` with 1, 2, 4 and 8 pool
children; 8 separate ``-c 1`` worker processes; one ``-P threads -c 8`` worker), on Redis and
PostgreSQL, one after the other:

1. tidegate: start the workers, run ``warm_job`` (unmeasured: every pool child runs a step), then
   one run of ``sleep_job`` (root -> 400 steps sleeping 200 ms -> sink) and ``TRIVIAL_RUNS`` runs
   of ``trivial_job`` (root -> 400 no-op steps -> sink), each timed from ``submit_run`` to the
   poll that sees the run end; the workers' CPU time over each run is read from /proc.
2. raw Celery: the same number of ``celery -A bench.raw_celery worker`` processes with the same
   pool and concurrency on the same broker, one unmeasured then ``TRIVIAL_RUNS`` measured
   ``fan_root -> fan_middle x 400 -> fan_sink`` fan-outs.

It prints the conditions, the sleeping-step throughput with the speedup against the
1-process row of the same run and its share of linear speedup (aim: at least 0.85 up to 8
processes), the trivial-step throughput of tidegate and raw Celery with their ratio, and the
peak RSS of the worker processes.
"""

from __future__ import annotations

import argparse
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
from types import ModuleType

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench.common, bench.raw_celery

from sqlalchemy import text

from bench.common import (
    POLL_SECONDS,
    ROOT,
    RssRow,
    Worker,
    child_pids,
    cpu_and_wall,
    cpu_model,
    load_avg,
    prepare_postgres,
    progress,
    run_job,
    running_workers,
    since,
    table,
    truncate,
    version,
)
from bench.steps import raw_until_done
from tidegate.broker import CeleryPublisher, make_celery_app
from tidegate.definitions.defs import Definitions
from tidegate.definitions.loading import CodeLocation
from tidegate.scheduler.launcher import Launcher
from tidegate.storage.api import Storage

VENV_BIN = Path(sys.executable).parent
DEFS_FILE = "bench/scale_defs.py"

REDIS_URL = os.environ.get("BENCH_SCALE_REDIS_URL", "redis://127.0.0.1:6379/15")  # flushed before and after
PG_DATABASE = os.environ.get("BENCH_PG_DATABASE", "tidegate_bench_scale")  # created if missing, truncated

STEPS = int(os.environ.get("BENCH_SCALE_STEPS", "400"))
QUICK_STEPS = 100
SLEEP_SECONDS = float(os.environ.get("BENCH_SCALE_SLEEP", "0.2"))
TRIVIAL_RUNS = int(os.environ.get("BENCH_SCALE_TRIVIAL_RUNS", "3"))
AIM = 0.85  # share of linear speedup, up to 8 processes
THROUGHPUT_AIM = 0.5  # trivial steps/s, tidegate / raw Celery with the same workers and pool (issue 17)
CPU_AIM = 2.0  # worker CPU per trivial step, tidegate / raw Celery
SLEEP_POLL_SECONDS = 0.02  # runs of 10 s and more: 20 ms is at most 0.2 %, and spares the CPU
TRIVIAL_TIMEOUT = 120.0
CONTINUATION = os.environ.get("BENCH_CONTINUATION", "1")  # the workers' TIDEGATE_CONTINUATION (on, as in tidegate)


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    workers: int
    concurrency: int
    pool: str

    @property
    def parallelism(self) -> int:
        return self.workers * self.concurrency

    @property
    def shape(self) -> str:
        return f"{self.workers} x -c {self.concurrency} -P {self.pool}"

    def options(self, name: str) -> list[str]:
        return ["-c", str(self.concurrency), "-P", self.pool, "-l", "WARNING", "-n", name]


# "Worker processes" are prefork pool children of one worker; the 8 x -c 1 row shows 8 whole
# worker processes instead, and the threads row one worker with 8 threads.
CONFIGS = [
    Config("p1", "prefork, 1 process", 1, 1, "prefork"),
    Config("p2", "prefork, 2 processes", 1, 2, "prefork"),
    Config("p4", "prefork, 4 processes", 1, 4, "prefork"),
    Config("p8", "prefork, 8 processes", 1, 8, "prefork"),
    Config("w8", "8 worker processes", 8, 1, "prefork"),
    Config("t8", "threads, 8 threads", 1, 8, "threads"),
]
BASELINE = "p1"


def selected_configs(keys: str | None) -> list[Config]:
    """The set-ups named in ``BENCH_SCALE_CONFIGS`` (comma-separated keys, e.g. ``p4``), in
    CONFIGS order; all of them when it is unset or empty."""
    if not keys:
        return CONFIGS
    wanted = {k.strip() for k in keys.split(",") if k.strip()}
    unknown = wanted - {c.key for c in CONFIGS}
    if unknown:
        raise SystemExit(f"BENCH_SCALE_CONFIGS: unknown set-up {sorted(unknown)}; known: {[c.key for c in CONFIGS]}")
    return [c for c in CONFIGS if c.key in wanted]


# -- measuring ------------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # fields 14 and 15 of stat(5)


def postgres_cpu(storage: Storage) -> float:
    """CPU seconds used so far by the PostgreSQL backends serving this bench's database (the
    workers' pooled connections and the bench's own); 0 when the server's processes are not
    visible from here."""
    with storage.engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        ).scalars()
        return sum(process_cpu(int(pid)) for pid in pids)


def workers_cpu(workers: Sequence[Worker]) -> float:
    """CPU seconds used so far by the workers' main processes and their pool children."""
    return sum(process_cpu(pid) for w in workers for pid in (w.proc.pid, *child_pids(w.proc.pid)))


@dataclass
class Timed:
    wall: float
    worker_cpu: float
    load1: float  # 1-minute load average when the run ended
    pg_cpu: float = 0.0  # CPU of the database's backends over the run (tidegate only)


@dataclass
class ConfigResult:
    config: Config
    ready: float = 0.0
    sleep: Timed | None = None
    trivial: list[Timed] = field(default_factory=list)
    raw_ready: float = 0.0
    raw_trivial: list[Timed] = field(default_factory=list)
    rss: list[RssRow] = field(default_factory=list)
    raw_rss: list[RssRow] = field(default_factory=list)


def timed_run(
    storage: Storage,
    launcher: Launcher,
    defs: Definitions,
    job: str,
    workers: Sequence[Worker],
    *,
    timeout: float,
    poll: float = POLL_SECONDS,
) -> Timed:
    cpu, pg = workers_cpu(workers), postgres_cpu(storage)
    timing = run_job(storage, launcher, defs, job, timeout=timeout, poll=poll)
    return Timed(timing.wall, workers_cpu(workers) - cpu, os.getloadavg()[0], postgres_cpu(storage) - pg)


def raw_fanout(raw: ModuleType, r: redis.Redis, width: int, workers: Sequence[Worker]) -> Timed:
    cpu = workers_cpu(workers)
    token = f"scale-{uuid.uuid4().hex}"
    start = time.perf_counter()
    raw.fan_root.apply_async((token, width))
    wall = raw_until_done(r, token, "fan-out", start)
    return Timed(wall, workers_cpu(workers) - cpu, os.getloadavg()[0])


# -- main ------------------------------------------------------------------------------------


@dataclass
class Results:
    steps: int
    database_url: str = ""
    redis_version: str = "?"
    pg_version: str = "?"
    configs: list[ConfigResult] = field(default_factory=list)
    load: list[str] = field(default_factory=list)
    bench_cpu: tuple[float, float] = (0.0, 0.0)
    total: float = 0.0


def flush_redis() -> str:
    r = redis.Redis.from_url(REDIS_URL)
    try:
        r.flushdb()
        return str(r.info("server").get("redis_version", "?"))
    finally:
        r.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tidegate horizontal scaling benchmark (bench/README.md)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_STEPS} steps per fan-out and one trivial run (development)"
    )
    args = parser.parse_args(argv)
    steps = QUICK_STEPS if args.quick else STEPS
    configs = selected_configs(os.environ.get("BENCH_SCALE_CONFIGS"))
    trivial_runs = 1 if args.quick else TRIVIAL_RUNS

    began = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    # The defs module and the raw app read these when imported, here and in the workers.
    os.environ.update(
        BENCH_SCALE_STEPS=str(steps),
        BENCH_SCALE_SLEEP=str(SLEEP_SECONDS),
        BENCH_BROKER_URL=REDIS_URL,
        BENCH_RESULT_URL=REDIS_URL,
    )
    raw = importlib.import_module("bench.raw_celery")
    res = Results(steps, load=[load_avg()])
    res.redis_version = flush_redis()
    res.database_url, res.pg_version = prepare_postgres(PG_DATABASE)
    storage = Storage.open(res.database_url, upgrade=True)
    truncate(storage)

    scratch = Path(tempfile.mkdtemp(prefix="tidegate-bench-scale-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEGATE_", "BENCH_"))}
    env.update(
        TIDEGATE_BROKER_URL=REDIS_URL,
        TIDEGATE_DATABASE_URL=res.database_url,
        TIDEGATE_HOME=str(scratch / "home"),
        TIDEGATE_IO_BASE_DIR=str(scratch / "io"),
        BENCH_BROKER_URL=REDIS_URL,
        BENCH_RESULT_URL=REDIS_URL,
        BENCH_SCALE_STEPS=str(steps),
        BENCH_SCALE_SLEEP=str(SLEEP_SECONDS),
        TIDEGATE_CONTINUATION=CONTINUATION,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    defs = CodeLocation(file=str(ROOT / DEFS_FILE)).load()
    for job in ("sleep_job", "trivial_job"):
        if len(defs.plan(job).steps) != steps + 2:
            raise RuntimeError(f"{DEFS_FILE}: {job} has {len(defs.plan(job).steps)} steps, expected {steps + 2}")
    app = make_celery_app(REDIS_URL)
    launcher = Launcher(storage, CeleryPublisher(app, storage))
    r = redis.Redis.from_url(REDIS_URL)

    ok = False
    mark = cpu_and_wall()
    try:
        for config in configs:
            result = ConfigResult(config)
            res.configs.append(result)

            def tidegate_worker(name: str, config: Config = config) -> list[str]:
                return [str(VENV_BIN / "tidegate"), "worker", "-f", DEFS_FILE, *config.options(name)]

            def raw_worker(name: str, config: Config = config) -> list[str]:
                celery = str(VENV_BIN / "celery")
                return [celery, "-A", "bench.raw_celery", "worker", "-E", "-Q", raw.QUEUE, *config.options(name)]

            truncate(storage)
            progress(f"{config.label} ({config.shape}): tidegate, load {load_avg()}")
            kind = f"tidegate-{config.key}"
            with running_workers(kind, tidegate_worker, env, scratch, app, result.rss, config.workers) as (
                workers,
                ready,
            ):
                result.ready = ready
                run_job(storage, launcher, defs, "warm_job")
                # Expected wall (steps x sleep / processes), with generous room for a loaded machine.
                timeout = 60.0 + 3 * steps * SLEEP_SECONDS / config.parallelism
                result.sleep = timed_run(
                    storage, launcher, defs, "sleep_job", workers, timeout=timeout, poll=SLEEP_POLL_SECONDS
                )
                progress(f"  {steps} sleeping steps: {result.sleep.wall:.2f} s")
                for _ in range(trivial_runs):
                    result.trivial.append(
                        timed_run(storage, launcher, defs, "trivial_job", workers, timeout=TRIVIAL_TIMEOUT)
                    )
                progress(f"  trivial fan-out: {statistics.median(t.wall for t in result.trivial):.2f} s")

            progress(f"{config.label} ({config.shape}): raw Celery")
            kind = f"raw-{config.key}"
            with running_workers(kind, raw_worker, env, scratch, raw.app, result.raw_rss, config.workers) as (
                workers,
                ready,
            ):
                result.raw_ready = ready
                raw_fanout(raw, r, steps, workers)  # warm-up
                result.raw_trivial = [raw_fanout(raw, r, steps, workers) for _ in range(trivial_runs)]
                progress(f"  raw fan-out: {statistics.median(t.wall for t in result.raw_trivial):.2f} s")
        ok = True
    finally:
        res.bench_cpu = since(mark)
        r.close()
        storage.dispose()
        flush_redis()
        if ok:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            progress(f"bench failed; worker logs kept in {scratch}")

    res.load.append(load_avg())
    res.total = time.perf_counter() - began
    report(res, trivial_runs)
    return 0


# -- output ----------------------------------------------------------------------------------


def mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:,.1f} MiB"


def rss_cells(rows: Sequence[RssRow]) -> list[str]:
    mains = [row.kib or 0 for row in rows if row.process.endswith(" main")]
    children = [row.kib or 0 for row in rows if row.process.endswith(" pool child")]
    return [
        str(len(rows)),
        mib(max(mains)) if mains else "-",
        mib(max(children)) if children else "-",
        mib(sum(mains) + sum(children)),
    ]


def report(res: Results, trivial_runs: int) -> None:
    steps = res.steps
    affinity = len(os.sched_getaffinity(0))
    dists = ("celery", "kombu", "billiard", "redis", "sqlalchemy", "psycopg", "tidegate")
    python = f"{platform.python_version()} ({platform.python_implementation()}), {platform.platform()}"
    conditions = [
        ("cpu", f"{os.cpu_count()} CPUs ({affinity} usable), {cpu_model()}"),
        ("python", python),
        ("packages", ", ".join(f"{d} {version(d)}" for d in dists)),
        ("broker", f"{REDIS_URL} (Redis {res.redis_version}), the same db for tidegate and raw Celery"),
        ("database", f"{Storage(res.database_url).safe_url} (PostgreSQL {res.pg_version})"),
        ("workers", f"tidegate worker -f {DEFS_FILE} -c C -P POOL -l WARNING -n NAME"),
        ("", "celery -A bench.raw_celery worker -E -Q bench_raw -c C -P POOL -l WARNING -n NAME"),
        ("", "(tidegate's Celery settings on both: json, acks_late, prefetch 1, task events)"),
        ("", f"TIDEGATE_CONTINUATION={CONTINUATION} on the tidegate workers (BENCH_CONTINUATION)"),
        *(("", f"{c.config.key}: {c.config.label:<22} {c.config.shape}") for c in res.configs),
        ("sleep_job", f"root -> {steps} steps sleeping {SLEEP_SECONDS * 1000:.0f} ms -> sink, one run per set-up"),
        ("trivial", f"root -> {steps} no-op steps -> sink ({steps + 2} steps), {trivial_runs} run(s) per set-up;"),
        ("", f"raw: fan_root -> {steps} fan_middle (a Redis INCR) -> fan_sink ({steps + 2} tasks)"),
        ("method", "wall = submit_run + Launcher.tick until get_run is seen terminal (polled every"),
        ("", f"{SLEEP_POLL_SECONDS * 1000:.0f} ms for sleep_job, 5 ms for trivial_job); raw: until the sink's Redis"),
        ("", "flag is set (polled every 5 ms). warm_job (16 x 0.1 s sleeps) runs first, unmeasured;"),
        ("", "raw: one unmeasured fan-out first. worker CPU = utime+stime of mains and pool children"),
        ("load avg", f"{res.load[0]} at start, {res.load[-1]} at end (1/5/15 min)"),
    ]
    print("tidegate horizontal scaling benchmark (bench/scale.py)")
    print()
    print("conditions")
    for label, value in conditions:
        print(f"  {label:<10} {value}")
    print()

    by_key = {c.config.key: c for c in res.configs}
    baseline = BASELINE if BASELINE in by_key else res.configs[0].config.key  # BENCH_SCALE_CONFIGS without p1
    base = by_key[baseline].sleep
    assert base is not None
    base_rate = steps / base.wall
    rows = []
    for c in res.configs:
        sleep = c.sleep
        assert sleep is not None
        rate = steps / sleep.wall
        speedup = rate / base_rate
        share = speedup / c.config.parallelism
        verdict = "" if c.config.key == baseline else ("met" if share >= AIM else "NOT met")
        ideal = steps * SLEEP_SECONDS / c.config.parallelism
        rows.append(
            [
                c.config.label,
                c.config.shape,
                f"{sleep.wall:.2f} s",
                f"{ideal:.1f} s",
                f"{rate:.2f}",
                f"{speedup:.2f}x",
                f"{share:.2f}",
                verdict,
                f"{sleep.worker_cpu:.1f} s",
                f"{sleep.load1:.2f}",
            ]
        )
    print(f"sleeping steps: {steps} x {SLEEP_SECONDS * 1000:.0f} ms; speedup against '{by_key[baseline].config.label}'")
    print(f"of this run; share = speedup / processes (aim >= {AIM})")
    print(
        table(
            ["set-up", "workers", "wall", "ideal", "steps/s", "speedup", "share", "aim", "worker CPU", "load 1m"],
            rows,
            [False, False, True, True, True, True, True, False, True, True],
        )
    )
    print()

    rows = []
    best: tuple[float, str] = (0.0, "")
    best_raw: tuple[float, str] = (0.0, "")
    total = steps + 2
    for c in res.configs:
        wall = statistics.median(t.wall for t in c.trivial)
        raw_wall = statistics.median(t.wall for t in c.raw_trivial)
        rate, raw_rate = total / wall, total / raw_wall
        best = max(best, (rate, c.config.label))
        best_raw = max(best_raw, (raw_rate, c.config.label))
        cpu = statistics.median(t.worker_cpu for t in c.trivial) / total
        raw_cpu = statistics.median(t.worker_cpu for t in c.raw_trivial) / total
        pg_cpu = statistics.median(t.pg_cpu for t in c.trivial) / total
        rows.append(
            [
                c.config.label,
                f"{rate:.1f}",
                f"{raw_rate:.1f}",
                f"{rate / raw_rate:.3f}",
                "met" if rate / raw_rate >= THROUGHPUT_AIM else "NOT met",
                f"{cpu * 1000:.1f} ms",
                f"{raw_cpu * 1000:.2f} ms",
                f"{cpu / raw_cpu:.2f}x" if raw_cpu else "?",
                ("met" if cpu <= CPU_AIM * raw_cpu else "NOT met") if raw_cpu else "?",
                f"{pg_cpu * 1000:.1f} ms",
                f"{statistics.median(t.load1 for t in c.trivial):.2f}",
            ]
        )
    print(f"trivial steps: {total} per fan-out, median of {trivial_runs} run(s); CPU-bound on {affinity} usable CPUs")
    print(
        table(
            [
                "set-up",
                "tidegate steps/s",
                "raw tasks/s",
                "tidegate/raw",
                f"aim >= {THROUGHPUT_AIM}",
                "worker CPU/step",
                "raw CPU/task",
                "CPU ratio",
                f"aim <= {CPU_AIM:g}x",
                "PostgreSQL CPU/step",
                "load 1m",
            ],
            rows,
            [False, True, True, True, False, True, True, True, False, True, True],
        )
    )
    print(
        f"  maximum: tidegate {best[0]:.1f} steps/s ({best[1]}), raw Celery {best_raw[0]:.1f} tasks/s"
        f" ({best_raw[1]}): ratio {best[0] / best_raw[0]:.3f}"
    )
    print("  worker CPU/step excludes PostgreSQL, Redis and the bench process, which share the same CPUs;")
    print("  PostgreSQL CPU/step: the backends of this bench's database (/proc), raw Celery uses none")
    print()

    rows = []
    for c in res.configs:
        rows.append([c.config.label, "tidegate", *rss_cells(c.rss)])
        rows.append(["", "raw", *rss_cells(c.raw_rss)])
    print("peak RSS of the worker processes (VmHWM from /proc just before they stop)")
    print(table(["set-up", "", "processes", "main", "largest child", "sum"], rows, [False, False, *([True] * 4)]))
    bench_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    cpu, wall = res.bench_cpu
    print(f"  bench process: peak RSS {mib(bench_kib)}; CPU {cpu:.1f} s of {wall:.1f} s wall (submitting, polling)")
    print()
    ready = ", ".join(f"{c.config.key} {c.ready:.1f}/{c.raw_ready:.1f}" for c in res.configs)
    print(f"workers answered ping after (s, tidegate/raw): {ready}")
    print(f"total bench time {res.total:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
