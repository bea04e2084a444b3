"""Helpers the benchmarks share: real worker processes, their peak RSS, the bench database,
one tidegate run from submit to its end, and the printed conditions and tables.

Moved out of bench/steps.py so that bench/scale.py (and bench/beat.py) use the same code with
their own worker counts, databases and timeouts.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from celery import Celery
from sqlalchemy import text

from tidegate.definitions.defs import Definitions
from tidegate.names import RunStatus
from tidegate.scheduler.launcher import Launcher
from tidegate.storage.api import Storage

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
READY_TIMEOUT = float(os.environ.get("BENCH_READY_TIMEOUT", "60"))  # longer on a loaded machine
RUN_TIMEOUT = 60.0
POLL_SECONDS = 0.005
TABLES = "runs, steps, events, materializations"


# -- worker processes -------------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    children: list[int] = field(default_factory=list)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_workers(
    kind: str, argv: Callable[[str], list[str]], env: dict[str, str], logs: Path, count: int
) -> list[Worker]:
    """``count`` processes ``argv(name)``, named ``bench-<kind>-<i>@bench``, logging to ``logs``."""
    workers = []
    for i in range(1, count + 1):
        name = f"bench-{kind}-{i}@bench"
        log_path = logs / f"{kind}-{i}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv(name),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the bench only; it stops them
            )
        workers.append(Worker(name, proc, log_path))
    return workers


def wait_ready(app: Celery, workers: Sequence[Worker]) -> float:
    """Until every worker answers a control ping; returns the seconds it took."""
    names = {w.name for w in workers}
    start = time.perf_counter()
    while True:
        for w in workers:
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker {w.name} exited with {w.proc.returncode}:\n{w.tail()}")
        replies = app.control.ping(destination=sorted(names), timeout=0.5)
        answered = {node for reply in replies for node in reply}
        if names <= answered:
            return time.perf_counter() - start
        if time.perf_counter() - start > READY_TIMEOUT:
            tails = "\n".join(f"--- {w.name}\n{w.tail()}" for w in workers)
            raise RuntimeError(f"workers not ready after {READY_TIMEOUT:.0f}s (answered: {answered}):\n{tails}")


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing ')'.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class RssRow:
    process: str
    pid: int
    kib: int | None


def worker_rss(kind: str, workers: Sequence[Worker]) -> list[RssRow]:
    rows = []
    for w in workers:
        w.children = child_pids(w.proc.pid)
        rows.append(RssRow(f"{kind} {w.name} main", w.proc.pid, vm_hwm_kib(w.proc.pid)))
        rows.extend(RssRow(f"{kind} {w.name} pool child", c, vm_hwm_kib(c)) for c in w.children)
    return rows


def stop_workers(workers: Sequence[Worker], grace: float = 10.0) -> None:
    """SIGTERM (warm shutdown), then SIGKILL whatever is left: mains, then their children."""
    for w in workers:
        if not w.children and w.proc.poll() is None:
            w.children = child_pids(w.proc.pid)
        if w.proc.poll() is None:
            w.proc.terminate()
    deadline = time.monotonic() + grace
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait(timeout=5)
    for w in workers:
        for pid in w.children:  # orphaned pool children of a killed main, if any
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}").exists() and "celery" in _cmdline(pid) + _comm(pid):
                    os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return ""


@contextlib.contextmanager
def running_workers(
    kind: str,
    argv: Callable[[str], list[str]],
    env: dict[str, str],
    logs: Path,
    app: Celery,
    rss: list[RssRow],
    count: int,
) -> Iterator[tuple[list[Worker], float]]:
    """Start ``count`` workers, wait for their pings; on leaving, record their peak RSS in
    ``rss`` (unless the body raised) and stop them (always)."""
    workers = start_workers(kind, argv, env, logs, count)
    try:
        ready = wait_ready(app, workers)
        yield workers, ready
        rss.extend(worker_rss(kind, workers))
    finally:
        stop_workers(workers)


# -- the bench database -----------------------------------------------------------------------


def prepare_postgres(database: str, admin_url: str = PG_ADMIN_URL) -> tuple[str, str]:
    """Create ``database`` if missing (through ``admin_url``); return its URL and the server version."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
        version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    admin = admin_url.rsplit("/", 1)[0]
    return f"{admin}/{database}", version


def truncate(storage: Storage) -> None:
    with storage.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY"))


# -- one tidegate run ------------------------------------------------------------------------


@dataclass
class RunTiming:
    wall: float  # submit_run called -> the poll that saw the run terminal
    run_id: str


def run_job(
    storage: Storage,
    launcher: Launcher,
    defs: Definitions,
    job: str,
    *,
    timeout: float = RUN_TIMEOUT,
    poll: float = POLL_SECONDS,
) -> RunTiming:
    """Submit a run of ``job``, start it with one ``Launcher.tick``, poll ``get_run`` every
    ``poll`` seconds until it is terminal; raise unless it succeeded within ``timeout``."""
    plan = defs.plan(job)
    start = time.perf_counter()
    run_id = storage.submit_run(plan, origin="bench").run_id
    launcher.tick()
    while True:
        run = storage.get_run(run_id)
        if run.status in RunStatus.TERMINAL:
            break
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"{job}: run {run_id} still {run.status} after {timeout:.0f}s")
        time.sleep(poll)
    wall = time.perf_counter() - start
    if run.status != RunStatus.SUCCESS:
        failed = [s for s in storage.get_steps(run_id) if s.status != "SUCCEEDED"]
        detail = "\n".join(f"  {s.step_key}: {s.status} {(s.error or '').strip()[-500:]}" for s in failed[:5])
        raise RuntimeError(f"{job}: run {run_id} ended {run.status}\n{detail}")
    return RunTiming(wall, run_id)


# -- output ----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f} ms"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if ra else c.ljust(w) for c, w, ra in zip(cells, widths, right, strict=True))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def load_avg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_and_wall() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, time.perf_counter()


def since(mark: tuple[float, float]) -> tuple[float, float]:
    cpu, wall = cpu_and_wall()
    return cpu - mark[0], wall - mark[1]


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port(first: int, last: int) -> int:
    """The first port in ``first..last`` free on the loopback interface (each bench keeps
    its own range, so that two benches can run at once)."""
    for port in range(first, last + 1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{last}")


def analyze(storage: Storage) -> None:
    """ANALYZE every table after a bulk fill, so that the planner sees the filled sizes."""
    with storage.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
