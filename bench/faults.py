"""Surviving faults, measured: ``python bench/faults.py`` (see bench/README.md).

``BENCH_FAULTS="baseline,frozen"`` runs only the faults whose label holds one of those words.

Injects each fault of tests/test_faults.py ``BENCH_FAULT_TRIALS`` times (default 5) into real
``tidegate worker`` and ``tidegate beat`` processes on Redis and PostgreSQL, with the same
machinery (tests/fault_injection.py), and prints the conditions, a table of runs submitted,
completed, lost and duplicated with the median recovery time per fault, what went wrong in
each failed trial, and the peak RSS of the processes.

A fault whose trials keep losing runs is given up after ``MAX_FAILED_TRIALS`` such trials, so
that a broken recovery costs a minute, not ten.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import itertools
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.fault_injection

from tests.fault_injection import (  # noqa: E402
    ENQUEUED_TIMEOUT_SECONDS,
    HEARTBEAT_SECONDS,
    HEARTBEAT_TIMEOUT_SECONDS,
    OUTAGE_PROJECT,
    RECOVERY_DEFINITION,
    REDIS_OUTAGE_SECONDS,
    WITHOUT_GONE_JOB,
    WORKER_LOST_RETRIES,
    Cluster,
    PrivatePostgres,
    PrivateRedis,
    Process,
    Scenario,
    Trial,
    trial_baseline,
    trial_broker_frozen,
    trial_database_dropped,
    trial_database_restart,
    trial_kill_pool_child,
    trial_kill_worker,
    trial_redis_restart,
    trial_removed_job,
    trial_stalled_heartbeat,
)

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_DATABASE = os.environ.get("BENCH_PG_DATABASE", "tidegate_bench_faults")  # its connections get terminated
TRIALS = int(os.environ.get("BENCH_FAULT_TRIALS", "5"))
STEP_SECONDS = float(os.environ.get("BENCH_FAULT_STEP_SECONDS", "2"))
DEADLINE = 30.0  # per trial, from the fault to the end of every run
MAX_FAILED_TRIALS = 2
BROKER_FROZEN_SECONDS = float(os.environ.get("BENCH_BROKER_FROZEN_SECONDS", "30"))
DATABASE_DOWN_SECONDS = float(os.environ.get("BENCH_DATABASE_DOWN_SECONDS", "5"))
WORKERS = 2
CONCURRENCY = 2


@dataclass
class Fault:
    label: str
    cluster: str  # which cluster it runs on: "shared", "redis", "gone" or "outage"
    scenario: Scenario
    trials: list[Trial] = field(default_factory=list)
    gave_up: bool = False

    def cells(self) -> list[str]:
        recoveries = [t.recovery for t in self.trials if t.recovery is not None]
        submitted = sum(t.submitted for t in self.trials)
        completed = sum(t.completed for t in self.trials)
        return [
            self.label + (" (gave up)" if self.gave_up else ""),
            str(len(self.trials)),
            str(submitted),
            str(completed),
            str(submitted - completed),
            str(sum(len(t.duplicated) for t in self.trials)),
            str(sum(t.reruns for t in self.trials)),
            f"{statistics.median(recoveries):.2f} s" if recoveries else "-",
            f"{max(recoveries):.2f} s" if recoveries else "-",
        ]


@dataclass
class RssRow:
    process: str
    kib: int


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def prepare_postgres() -> tuple[str, str]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,)).fetchone():
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
        row = conn.execute("SHOW server_version").fetchone()
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{PG_DATABASE}", str(row[0]) if row else "?"


def redis_version(url: str) -> str:
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        return str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def vm_hwm_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def peak_rss(processes: Sequence[Process], rows: dict[str, int]) -> None:
    """The largest VmHWM seen per kind of process (worker main, pool child, beat, redis)."""

    def keep(kind: str, pid: int) -> None:
        kib = vm_hwm_kib(pid)
        if kib is not None:
            rows[kind] = max(rows.get(kind, 0), kib)

    for process in processes:
        if not process.alive():
            continue
        kind = "beat" if process.name == "beat" else "redis-server" if process.name.startswith("redis") else "worker"
        keep(f"{kind} main process" if kind == "worker" else kind, process.pid)
        if kind == "worker":
            for child in children(process.pid):
                keep("worker pool child", child)


@contextlib.contextmanager
def cluster_for(
    kind: str, database_url: str, server: PrivateRedis, scratch: Path, rss: dict[str, int]
) -> Iterator[Cluster]:
    """A running cluster (2 workers x 2 pool processes and a beat), stopped on the way out."""
    kwargs: dict[str, object] = {"step_seconds": STEP_SECONDS, "concurrency": CONCURRENCY}
    if kind == "redis":
        kwargs["concurrency"] = 1  # one slot per worker: some steps wait on Redis when it dies
    if kind == "gone":
        kwargs["definitions"] = WITHOUT_GONE_JOB
    if kind == "outage":  # a private PostgreSQL server and a beat with a 1 s sensor
        kwargs["definitions"] = str(OUTAGE_PROJECT)
    cluster = Cluster(database_url, server.url, scratch / kind, **kwargs)  # type: ignore[arg-type]
    try:
        cluster.start(workers=WORKERS)
        yield cluster
        peak_rss([*cluster.processes(), *([server.process] if server.process else [])], rss)
    finally:
        cluster.close()


def run_fault(fault: Fault, cluster: Cluster) -> None:
    scenario = fault.scenario
    failed = 0
    for number in range(1, TRIALS + 1):
        trial = scenario(cluster, DEADLINE)
        fault.trials.append(trial)
        recovery = f"{trial.recovery:.2f} s" if trial.recovery is not None else "-"
        verdict = "ok" if not trial.failures else f"{len(trial.failures)} problem(s)"
        progress(
            f"{fault.label}: trial {number}: {trial.completed}/{trial.submitted} runs, recovery {recovery}, {verdict}"
        )
        if trial.lost:
            failed += 1
            if failed >= MAX_FAILED_TRIALS and number < TRIALS:
                fault.gave_up = True
                progress(f"{fault.label}: {failed} trials lost runs; giving up on this fault")
                return


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if ra else c.ljust(w) for c, w, ra in zip(cells, widths, right, strict=True))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def load_avg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def wrap(text: str, width: int = 96, indent: str = "  ") -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(indent + current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return [*lines, indent + current] if current else lines


def main() -> int:
    began = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    load_start = load_avg()
    database_url, pg_version = prepare_postgres()
    scratch = Path(tempfile.mkdtemp(prefix="tidegate-bench-faults-"))
    server = PrivateRedis(scratch)  # our own: no other user of a shared server sees our tasks
    server.start()
    redis_server_version = redis_version(server.url)
    faults = [
        Fault("none (baseline)", "shared", trial_baseline),
        Fault("SIGKILL pool child", "shared", trial_kill_pool_child),
        Fault("SIGKILL whole worker", "shared", trial_kill_worker),
        Fault("heartbeat stops, max_retries=1", "shared", trial_stalled_heartbeat("guarded_job")),
        Fault("heartbeat stops, max_retries=0", "shared", trial_stalled_heartbeat("fragile_job")),
        Fault("DB connections terminated", "shared", trial_database_dropped),
        Fault("Redis restarted empty", "redis", trial_redis_restart(server)),
        Fault("job removed from code", "gone", trial_removed_job),
    ]
    postgres = PrivatePostgres().init()  # our own server, to stop and start
    postgres.start()
    outage_database_url = postgres.create_database("tidegate_bench_outage")
    faults += [
        Fault(
            f"Redis frozen {BROKER_FROZEN_SECONDS:g} s", "outage", trial_broker_frozen(server, BROKER_FROZEN_SECONDS)
        ),
        Fault(
            f"PostgreSQL down {DATABASE_DOWN_SECONDS:g} s",
            "outage",
            trial_database_restart(postgres, DATABASE_DOWN_SECONDS),
        ),
    ]
    wanted = [w.strip().lower() for w in os.environ.get("BENCH_FAULTS", "").split(",") if w.strip()]
    if wanted:  # e.g. BENCH_FAULTS="baseline,frozen,down": only the faults whose label holds one
        faults = [f for f in faults if any(w in f.label.lower() for w in wanted)]
    rss: dict[str, int] = {}
    ok = False
    try:
        for kind in ("shared", "redis", "gone", "outage"):
            if not any(f.cluster == kind for f in faults):
                continue
            progress(f"starting the {kind} cluster")
            url = outage_database_url if kind == "outage" else database_url
            with cluster_for(kind, url, server, scratch, rss) as cluster:
                for fault in faults:
                    if fault.cluster == kind:
                        run_fault(fault, cluster)
        ok = True
    finally:
        server.close()
        postgres.close()
        if ok:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            progress(f"bench failed; logs kept in {scratch}")
    report(faults, database_url, server.url, pg_version, redis_server_version, rss, load_start, began)
    return 0


def report(
    faults: Sequence[Fault],
    database_url: str,
    redis_url: str,
    pg_version: str,
    redis_server_version: str,
    rss: dict[str, int],
    load_start: str,
    began: float,
) -> None:
    dists = ("celery", "kombu", "billiard", "redis", "sqlalchemy", "psycopg", "tidegate")
    conditions = [
        ("cpu", f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {platform.machine()}"),
        ("python", f"{platform.python_version()}, {platform.platform()}"),
        ("packages", ", ".join(f"{d} {version(d)}" for d in dists)),
        ("broker", f"{redis_url}: a private redis-server {redis_server_version} (--save '' --appendonly no);"),
        ("", f"the Redis fault SIGKILLs it and starts it again empty {REDIS_OUTAGE_SECONDS:g} s later"),
        ("database", f"{database_url} (PostgreSQL {pg_version})"),
        ("workers", f"{WORKERS} x `tidegate worker -c {CONCURRENCY} -P prefork` (Redis fault: -c 1), heartbeat"),
        ("", f"every {HEARTBEAT_SECONDS:g} s (TIDEGATE_HEARTBEAT_SECONDS)"),
        ("beat", "tidegate -v beat -f tests/projects/fault_project.py --lease-seconds 3"),
        ("config", f"tidegate.toml via TIDEGATE_CONFIG: heartbeat_timeout_seconds={HEARTBEAT_TIMEOUT_SECONDS:g},"),
        ("", f"worker_lost_retries={WORKER_LOST_RETRIES}, enqueued_timeout_seconds={ENQUEUED_TIMEOUT_SECONDS:g}"),
        ("runs", f"before -> slow step ({STEP_SECONDS:g} s sleep) -> after; 2 runs per trial (Redis: 3 + 2 during"),
        ("", "the outage; DB: 2 + 1 submitted after; removed job: 1 of gone_job + 1 other)"),
        ("trials", f"{TRIALS} per fault, deadline {DEADLINE:g} s each; a fault is given up after {MAX_FAILED_TRIALS}"),
        ("", "trials that lost runs"),
        (
            "outages",
            f"Redis frozen (SIGSTOP) {BROKER_FROZEN_SECONDS:g} s; a private PostgreSQL (initdb/pg_ctl) stopped",
        ),
        ("", f"(-m fast) {DATABASE_DOWN_SECONDS:g} s; their beat runs tests/projects/outage_project.py (a 1 s sensor"),
        ("", "making one run per tick: those made during the outage count too)"),
        ("load avg", f"{load_start} at start, {load_avg()} at end (1/5/15 min)"),
    ]
    print("tidegate fault benchmark (bench/faults.py)")
    print()
    print("conditions")
    for label, value in conditions:
        print(f"  {label:<10} {value}")
    print()
    print(
        table(
            ["fault", "trials", "runs", "completed", "lost", "duplicated", "re-runs", "median recovery", "max"],
            [f.cells() for f in faults],
            [False, True, True, True, True, True, True, True, True],
        )
    )
    print()
    print("columns")
    for line in (
        "runs: submitted; completed: ended as expected (SUCCESS; FAILURE for the fragile run whose heartbeat",
        "stops and for the removed job's run); lost: not (still unfinished after the deadline, or ended",
        "otherwise); duplicated: steps with more than one STEP_SUCCESS event or materialization; re-runs:",
        "executions of a step's code beyond its first (counted from the assets' effect files).",
    ):
        print(f"  {line}")
    print(*wrap(RECOVERY_DEFINITION), sep="\n")
    notes = [(f.label, n, t.notes) for f in faults for n, t in enumerate(f.trials, 1) if t.notes]
    if notes:
        print()
        print("notes")
        for label, number, note in notes:
            print(f"  {label}, trial {number}: {note}")
    problems = [(f.label, n, t) for f in faults for n, t in enumerate(f.trials, 1) if t.failures]
    if problems:
        print()
        print("problems (first line of each)")
        for label, number, trial in problems:
            for failure in trial.failures:
                print(f"  {label}, trial {number}: {failure.splitlines()[0][:150]}")
    print()
    print("peak RSS (largest VmHWM from /proc per kind of process, read before each cluster stops)")
    bench_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = [[kind, f"{kib / 1024:,.1f} MiB"] for kind, kib in sorted(rss.items())]
    rows.append(["bench process (submit, inject, poll)", f"{bench_kib / 1024:,.1f} MiB"])
    print(table(["process", "peak RSS"], rows, [False, True]))
    print()
    print(f"total bench time {time.perf_counter() - began:.1f} s")


# -- the beat under load: a slow sensor, a huge tick (issue 18) ------------------------------------
#
# ``python bench/faults.py --beat`` runs only these. Each fault runs a real ``tidegate beat`` on
# tests/projects/load_project.py (a 1 s sensor ``fast`` beside ``slow`` or ``huge``) twice: as
# the beat runs now (concurrent evaluation, batched commits) and with ``[beat]
# synchronous_sensors = true`` and one commit per tick (the earlier behaviour, the baseline).
# No worker: ``max_concurrent_runs = 0`` keeps the runs QUEUED; the broker is in-memory.

BEAT_PROJECT = ROOT / "tests" / "projects" / "load_project.py"
BEAT_PG_DATABASE = "tidegate_bench_beat"
SLOW_SENSOR_SECONDS = float(os.environ.get("BENCH_SLOW_SENSOR_SECONDS", "10"))
SLOW_RUN_SECONDS = 32.0
HUGE_RUNS = int(os.environ.get("BENCH_HUGE_RUNS", "20000"))
BEAT_BASELINE = "[beat]\nsynchronous_sensors = true\ntick_batch_size = 100000000\n"


@dataclass
class BeatTrial:
    fault: str
    database: str
    mode: str
    requested: int = 0
    created: int = 0
    distinct: int = 0
    fast_ticks: int = 0
    longest_gap: float = 0.0
    recovery: float | None = None
    commit_seconds: float | None = None
    rss_kib: int = 0
    problem: str = ""

    def cells(self) -> list[str]:
        lost = self.requested - self.distinct
        return [
            self.fault,
            self.database,
            self.mode,
            f"{self.requested:,}",
            str(lost),
            str(self.created - self.distinct),
            str(self.fast_ticks),
            f"{self.longest_gap:.2f} s",
            f"{self.recovery:.2f} s" if self.recovery is not None else "-",
            f"{self.commit_seconds:.1f} s" if self.commit_seconds is not None else "-",
            f"{self.rss_kib / 1024:,.1f} MiB",
        ]


def _beat_database(kind: str, scratch: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{scratch / 'beat.db'}"
    admin = PG_ADMIN_URL
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BEAT_PG_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BEAT_PG_DATABASE}"')
    return f"{admin.rsplit('/', 1)[0]}/{BEAT_PG_DATABASE}"


def _ticks_of(storage: Any, name: str) -> list[Any]:
    from sqlalchemy import select

    from tidegate.storage.schema import ticks

    with storage.engine.connect() as conn:
        return list(conn.execute(select(ticks).where(ticks.c.instigator == name).order_by(ticks.c.id)))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def beat_trial(fault: str, kind: str, baseline: bool, scratch: Path) -> BeatTrial:
    """One beat under one fault; what the database shows afterwards."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import OperationalError

    from tidegate.storage.api import Storage
    from tidegate.storage.schema import instigators, runs

    mode = "synchronous, one commit (before)" if baseline else "concurrent, batched (now)"
    trial = BeatTrial(fault, kind, mode)
    where = scratch / f"{fault.replace(' ', '-')}-{kind}-{'before' if baseline else 'now'}"
    where.mkdir(parents=True)
    url = _beat_database(kind, where)
    storage = Storage.open(url, upgrade=True)
    config = where / "tidegate.toml"
    config.write_text("[run_queue]\nmax_concurrent_runs = 0\n" + (BEAT_BASELINE if baseline else ""))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEGATE_", "LOAD_PROJECT_"))}
    env.update(
        TIDEGATE_DATABASE_URL=url,
        TIDEGATE_BROKER_URL="memory://localhost/",
        TIDEGATE_CONFIG=str(config),
        TIDEGATE_HOME=str(where / "home"),
        PYTHONUNBUFFERED="1",
    )
    if fault == "slow sensor":
        env["LOAD_PROJECT_SLOW_SECONDS"] = str(SLOW_SENSOR_SECONDS)
    else:
        env["LOAD_PROJECT_HUGE"] = str(HUGE_RUNS)
        trial.requested = HUGE_RUNS
    tidegate = str(Path(sys.executable).with_name("tidegate"))
    with (where / "beat.log").open("wb") as log:
        proc = subprocess.Popen(
            [tidegate, "-v", "beat", "-f", str(BEAT_PROJECT)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    began = time.monotonic()
    try:
        if fault == "slow sensor":
            time.sleep(SLOW_RUN_SECONDS)
        else:
            while time.monotonic() - began < 600:
                try:
                    with storage.engine.connect() as conn:
                        query = select(instigators.c.cursor).where(instigators.c.name == "huge")
                        cursor = conn.execute(query).scalar()
                except OperationalError:  # SQLite held past the busy timeout by a one-transaction tick
                    cursor = None
                if cursor == "done" or proc.poll() is not None:
                    break
                time.sleep(0.5)
            else:
                trial.problem = "the huge tick did not commit within 600 s"
            time.sleep(3)
        trial.rss_kib = vm_hwm_kib(proc.pid) or 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    fast = [_aware(t.started_at) for t in _ticks_of(storage, "fast")]
    trial.fast_ticks = len(fast)
    trial.longest_gap = max(((b - a).total_seconds() for a, b in itertools.pairwise(fast)), default=0.0)
    disturbing = _ticks_of(storage, "slow" if fault == "slow sensor" else "huge")
    first_done = next((t for t in disturbing if t.status != "FAILURE"), None)
    if first_done is not None:
        ended = _aware(first_done.ended_at)
        trial.commit_seconds = (ended - _aware(first_done.started_at)).total_seconds()
        after = [t for t in fast if t >= ended]
        trial.recovery = (after[0] - ended).total_seconds() if after else None
    if fault == "huge tick":
        with storage.engine.connect() as conn:
            trial.created = conn.execute(
                select(func.count()).select_from(runs).where(runs.c.origin == "sensor:huge")
            ).scalar_one()
            trial.distinct = conn.execute(
                select(func.count(func.distinct(runs.c.run_key))).where(runs.c.origin == "sensor:huge")
            ).scalar_one()
    storage.dispose()
    progress(f"{fault} on {kind}, {mode}: fast sensor {trial.fast_ticks} ticks, longest gap {trial.longest_gap:.2f} s")
    return trial


def run_beat_faults(scratch: Path) -> list[BeatTrial]:
    databases = os.environ.get("BENCH_BEAT_DATABASES", "sqlite,postgresql").split(",")
    trials = []
    for fault in os.environ.get("BENCH_BEAT_FAULTS", "slow sensor,huge tick").split(","):
        for kind in databases:
            for baseline in (True, False):
                trials.append(beat_trial(fault, kind, baseline, scratch))
    return trials


def report_beat_faults(trials: Sequence[BeatTrial]) -> None:
    print()
    print("the beat under load (tests/projects/load_project.py; a 1 s sensor beside the fault)")
    print(
        f"  slow sensor: each evaluation sleeps {SLOW_SENSOR_SECONDS:g} s (limit 60 s); {SLOW_RUN_SECONDS:g} s a trial"
    )
    print(f"  huge tick: one tick requests {HUGE_RUNS:,} runs with run keys; until committed, then 3 s")
    print("  before: [beat] synchronous_sensors = true, tick_batch_size = 100000000 (one commit);")
    print("  now: the defaults (concurrent evaluation, batches of 200); load avg", load_avg())
    print()
    print(
        table(
            [
                "fault",
                "db",
                "beat",
                "runs",
                "lost",
                "dup",
                "fast ticks",
                "longest gap",
                "recovery",
                "tick took",
                "beat RSS",
            ],
            [t.cells() for t in trials],
            [False, False, False, True, True, True, True, True, True, True, True],
        )
    )
    print("  longest gap: between two ticks of the 1 s sensor; recovery: from the end of the slow")
    print("  evaluation's or huge tick's commit to the 1 s sensor's next tick; tick took: from the")
    print("  tick's start (evaluation) to its commit; beat RSS: peak (VmHWM) of the beat process.")
    for t in trials:
        if t.problem:
            print(f"  problem: {t.fault} on {t.database}, {t.mode}: {t.problem}")


def beat_main() -> int:
    scratch = Path(tempfile.mkdtemp(prefix="tidegate-bench-beat-"))
    began = time.perf_counter()
    print("tidegate beat load benchmark (bench/faults.py --beat)")
    print(f"  cpu {os.cpu_count()} CPUs; python {platform.python_version()}; load avg at start {load_avg()}")
    trials = run_beat_faults(scratch)
    report_beat_faults(trials)
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"\ntotal bench time {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(beat_main() if "--beat" in sys.argv[1:] else main())
