"""Fault injection on real tidegate processes, shared by tests/test_faults.py and bench/faults.py.

A :class:`Cluster` is real processes on real services: ``tidegate worker`` processes (prefork
pools), one ``tidegate beat`` and the services they share (PostgreSQL, and Redis: the shared
server or a :class:`PrivateRedis` that can be killed and restarted empty). The calling process
only submits runs (``Storage.submit_run``), injects faults and reads SQL; the beat starts the
runs, publishes their steps and runs the run monitor; the workers execute the steps.

Each ``trial_*`` function submits runs of ``tests/projects/fault_project.py``, injects one fault
at a precise point (the slow step of the first run is executing: its effect line names the
pool process that runs it), waits for every run to end and returns a :class:`Trial`: what
each run ended as, which steps were recorded SUCCEEDED twice, the recovery time and any
broken expectation (``Trial.failures``).

Recovery time (:data:`RECOVERY_DEFINITION`): from the moment the fault is injected to the end
(``runs.ended_at``) of the last affected run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis
from sqlalchemy import func, select, true

from tests.support import ROOT, TIDEGATE, free_port, tidegate_env, truncate_all
from tidegate.definitions.loading import CodeLocation
from tidegate.names import EXECUTE_STEP_TASK, RunStatus, StepStatus, step_task_id
from tidegate.storage.api import Storage
from tidegate.storage.records import RunRecord, StepRef
from tidegate.storage.schema import events, materializations, runs, steps

PROJECT = ROOT / "tests" / "projects" / "fault_project.py"
WITHOUT_GONE_JOB = f"{PROJECT}:defs_without_gone_job"
DEFS = CodeLocation(file=str(PROJECT)).load()

HEARTBEAT_SECONDS = 0.5  # TIDEGATE_HEARTBEAT_SECONDS of the workers
HEARTBEAT_TIMEOUT_SECONDS = 3.0  # [run_monitor] heartbeat_timeout_seconds
ENQUEUED_TIMEOUT_SECONDS = 20.0  # [run_monitor] enqueued_timeout_seconds
WORKER_LOST_RETRIES = 2  # [run_monitor] worker_lost_retries (the default)
LEASE_SECONDS = 3.0
REDIS_OUTAGE_SECONDS = 2.0

RECOVERY_DEFINITION = (
    "recovery time = from the fault's injection (the SIGKILL/SIGSTOP sent, the backends terminated, "
    "Redis SIGKILLed; for the removed job, the run's submission) to runs.ended_at of the last affected "
    "run: the runs in flight when the fault hit, plus those submitted during the Redis outage. It "
    "includes detecting the fault, re-running the interrupted step (it sleeps the whole step time again) "
    "and the steps after it; for Redis, the outage itself. Baseline: the same span without a fault."
)

CONFIG = f"""\
[run_monitor]
heartbeat_timeout_seconds = {HEARTBEAT_TIMEOUT_SECONDS}
worker_lost_retries = {WORKER_LOST_RETRIES}
enqueued_timeout_seconds = {ENQUEUED_TIMEOUT_SECONDS}
"""


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Process:
    """A process started in its own session: its pid is its process group's id."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the whole process group: the process and every child it forked."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


def spawn(name: str, argv: Sequence[str], env: dict[str, str], log_path: Path) -> Process:
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group to kill as a whole
        )
    return Process(name, popen, log_path)


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # pid (comm) state ppid ...: comm may hold spaces, so split after its closing ')'.
    return int(stat.rpartition(")")[2].split()[1])


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class PrivateRedis:
    """A ``redis-server`` of our own, without persistence: killed with SIGKILL and started again
    on the same port, it comes back empty (and with a new run_id)."""

    def __init__(self, logs: Path, port: int | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed")
        self.port = port or free_port(6391, 6449)
        self.logs = logs
        self.process: Process | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        argv = [self.binary or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.starts += 1
        self.process = spawn(f"redis-{self.port}", argv, dict(os.environ), self.logs / f"redis-{self.port}.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise RuntimeError(f"redis-server on port {self.port} exited:\n{self.process.tail()}")
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
            finally:
                client.close()
        raise RuntimeError(f"redis-server on port {self.port} not answering after {timeout}s")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def freeze(self) -> None:
        """SIGSTOP the server: connections are still accepted (by the kernel) but never
        answered, the worst case for a client without timeouts."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        self.thaw()
        self.kill()


class PrivatePostgres:
    """A PostgreSQL cluster of our own (``initdb`` + ``pg_ctl`` in a temporary directory, on a
    free port), so that a test can stop the whole server and start it again. As root, the
    server runs as the ``postgres`` user (PostgreSQL refuses to run as root)."""

    def __init__(self, port: int | None = None) -> None:
        self.initdb, self.pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
        if self.initdb is None or self.pg_ctl is None:
            raise RuntimeError("initdb/pg_ctl are not installed")
        self.port = port or free_port(5491, 5589)
        self.root = Path(tempfile.mkdtemp(prefix="tidegate-pg-"))
        self.data = self.root / "data"
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self.started = False
        self.password: str | None = None

    @property
    def _credentials(self) -> str:
        return f"postgres:{self.password}" if self.password is not None else "postgres"

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self._credentials}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self._credentials}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = 60.0) -> None:
        done = subprocess.run([*self.as_owner, *argv], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}")

    def init(self, password: str | None = None) -> PrivatePostgres:
        """Create the cluster; with ``password``, TCP clients must give it (scram-sha-256)."""
        argv = [self.initdb or "initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--auth=trust"]
        if password is not None:
            secret = self.root / "pwfile"
            secret.write_text(password)
            if self.as_owner:
                shutil.chown(secret, "postgres", "postgres")
            argv += ["--auth-host=scram-sha-256", f"--pwfile={secret}"]
            self.password = password
        self._run(*argv)
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "postgres.log")
        self._run(self.pg_ctl or "pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")
        self.started = True

    def stop(self) -> None:
        """A fast shutdown: every session is terminated, open transactions roll back."""
        self._run(self.pg_ctl or "pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.started = False

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(self.pg_ctl or "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


# -- the cluster -------------------------------------------------------------------------------


class Cluster:
    """Workers and a beat on one database and broker, for fault injection."""

    def __init__(
        self,
        database_url: str,
        broker_url: str,
        workdir: Path,
        *,
        definitions: str = str(PROJECT),
        step_seconds: float = 2.0,
        concurrency: int = 2,
    ) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.effects = workdir / "effects"
        self.config_path = workdir / "tidegate.toml"
        self.config_path.write_text(CONFIG)
        self.definitions = definitions
        self.step_seconds = step_seconds
        self.concurrency = concurrency
        self.broker_url = broker_url
        self.env = tidegate_env(
            database_url=database_url,
            broker_url=broker_url,
            definitions=Path(definitions),
            io_dir=workdir / "io",
            TIDEGATE_CONFIG=str(self.config_path),
            TIDEGATE_TEST_EFFECTS=str(self.effects),
            FAULT_PROJECT_STEP_SECONDS=str(step_seconds),
        )
        self.env["TIDEGATE_HEARTBEAT_SECONDS"] = str(HEARTBEAT_SECONDS)
        self.env["TIDEGATE_DEFINITIONS"] = definitions
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        Storage.open(database_url, upgrade=True).dispose()
        truncate_all(database_url)
        _flush(broker_url)
        self.storage = Storage(database_url)
        self.workers: dict[str, Process] = {}
        self.retired: list[Process] = []
        self.beat: Process | None = None
        self.frozen: set[int] = set()
        self._numbers = itertools.count(1)

    # -- processes -------------------------------------------------------------------------

    def start(self, workers: int = 2) -> Cluster:
        self.start_workers(workers)
        self.start_beat()
        return self

    def start_workers(self, count: int, timeout: float = 60.0) -> list[Process]:
        started = []
        for _ in range(count):
            name = f"w{next(self._numbers)}"
            argv = [TIDEGATE, "worker", "-c", str(self.concurrency), "-P", "prefork", "-n", f"{name}@%h", "-l", "INFO"]
            argv += ["--", "--without-mingle", "--without-gossip"]
            worker = spawn(name, argv, self.env, self.logs / f"worker-{name}.log")
            self.workers[name] = worker
            started.append(worker)
        deadline = time.monotonic() + timeout
        for worker in started:
            while " ready." not in worker.log():
                if not worker.alive():
                    raise RuntimeError(f"worker {worker.name} exited:\n{worker.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {worker.name} not ready after {timeout}s:\n{worker.tail()}")
                time.sleep(0.05)
        return started

    def start_beat(self, timeout: float = 30.0) -> Process:
        argv = [TIDEGATE, "-v", "beat", "-f", self.definitions, "--lease-seconds", str(LEASE_SECONDS)]
        beat = spawn("beat", argv, self.env, self.logs / "beat.log")
        self.beat = beat
        deadline = time.monotonic() + timeout
        while "schedule(s)" not in beat.log():  # run_forever's first log line
            if not beat.alive():
                raise RuntimeError(f"beat exited:\n{beat.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"beat not running after {timeout}s:\n{beat.tail()}")
            time.sleep(0.05)
        return beat

    def worker_of(self, pid: int) -> Process:
        """The worker whose main process forked pool process ``pid`` (or is ``pid``)."""
        parent = parent_pid(pid)
        for worker in self.workers.values():
            if worker.pid in (pid, parent):
                return worker
        raise AssertionError(f"pid {pid} (parent {parent}) belongs to no worker of this cluster")

    def kill_worker(self, worker: Process) -> None:
        worker.kill()
        del self.workers[worker.name]
        self.retired.append(worker)

    def freeze(self, pid: int) -> None:
        """SIGSTOP a pool process: its step and heartbeat thread stop, the process lives on.

        A process stopped inside a heartbeat transaction would hold the step's row lock (and
        the monitor would wait on it): if some transaction stays idle, thaw and try again."""
        for _ in range(20):
            os.kill(pid, signal.SIGSTOP)
            self.frozen.add(pid)
            time.sleep(0.3)
            if not self._idle_transactions():
                return
            self.thaw(pid)
            time.sleep(0.1)
        raise AssertionError(f"could not stop pid {pid} outside a database transaction")

    def thaw(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        self.frozen.discard(pid)

    def _idle_transactions(self) -> int:
        with psycopg.connect(self.psycopg_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND now() - state_change > interval '200 milliseconds'"
            ).fetchone()
        return int(row[0]) if row else 0

    def terminate_backends(self) -> int:
        """``pg_terminate_backend`` every other connection to the database (workers, beat, us)."""
        with psycopg.connect(self.psycopg_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        return sum(1 for (done,) in rows if done)

    @property
    def psycopg_url(self) -> str:
        return self.storage.url.replace("postgresql+psycopg://", "postgresql://")

    def processes(self) -> list[Process]:
        return [*([self.beat] if self.beat else []), *self.workers.values()]

    def close(self) -> None:
        for pid in list(self.frozen):
            self.thaw(pid)
        for process in [*([self.beat] if self.beat else []), *self.workers.values(), *self.retired]:
            process.kill()
        self.storage.dispose()
        _flush(self.broker_url)

    # -- runs ------------------------------------------------------------------------------

    def submit(self, job: str) -> str:
        return self.storage.submit_run(DEFS.plan(job), origin="faults").run_id

    def executions(self, asset: str, run_id: str) -> list[tuple[int, int]]:
        """(attempt, pid) of every time the asset's code started for this run."""
        path = self.effects / f"{asset}.log"
        if not path.exists():
            return []
        found = []
        for line in path.read_text().splitlines():
            key, run, attempt, pid = line.split()
            if key == asset and run == run_id:
                found.append((int(attempt), int(pid)))
        return found

    def running_pid(self, asset: str, run_id: str, attempt: int = 1, timeout: float = 30.0) -> int:
        """The pool process executing this attempt of the asset, once its code has started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for found_attempt, pid in self.executions(asset, run_id):
                if found_attempt == attempt:
                    return pid
            time.sleep(0.02)
        raise AssertionError(
            f"{asset} attempt {attempt} of run {run_id} did not start in {timeout}s\n{self.describe()}"
        )

    def wait_ended(self, run_ids: Sequence[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if all(r.status in RunStatus.TERMINAL for r in self.run_records(run_ids).values()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def run_records(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        return {run_id: self.storage.get_run(run_id) for run_id in run_ids}

    def wait_task_finished(self, task_id: str, timeout: float) -> str | None:
        """The line a worker logged when the Celery task ``task_id`` returned or was terminated
        by a revoke, if it did. A step a worker claimed by continuation runs inside the task of
        the step before it (recorded with its claim): its own "continued step ...[task_id] ...
        finished" line, or the termination of that task, stands for it."""
        run_id, rest = task_id.split(".", 1)
        step_key, attempt = rest.rsplit(".", 1)
        ref = StepRef(run_id, step_key, int(attempt), "", "")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            terminated = [task_id, *self.storage.continued_deliveries([ref]).values()]
            for worker in [*self.workers.values(), *self.retired]:
                for line in worker.log().splitlines():
                    if f"[{task_id}] succeeded" in line or any(f"Terminating {t}" in line for t in terminated):
                        return line
                    if f"continued step {EXECUTE_STEP_TASK}[{task_id}] " in line and " finished: " in line:
                        return line
            time.sleep(0.1)
        return None

    def unfinished(self) -> list[str]:
        """Every run not in a terminal state and every step left unfinished, in the database."""
        with self.storage.engine.connect() as conn:
            open_runs = conn.execute(
                select(runs.c.run_id, runs.c.status).where(runs.c.status.not_in(list(RunStatus.TERMINAL)))
            ).all()
            open_steps = conn.execute(
                select(steps.c.run_id, steps.c.step_key, steps.c.status).where(
                    steps.c.status.not_in(list(StepStatus.TERMINAL))
                )
            ).all()
        return [f"run {r.run_id} {r.status}" for r in open_runs] + [
            f"step {s.step_key} of run {s.run_id} {s.status}" for s in open_steps
        ]

    def describe(self, run_ids: Sequence[str] | None = None) -> str:
        """The steps table of these runs (all by default) and the tails of the process logs."""
        with self.storage.engine.connect() as conn:
            query = select(runs).order_by(runs.c.created_at)
            if run_ids is not None:
                query = query.where(runs.c.run_id.in_(list(run_ids)))
            run_rows = conn.execute(query).all()
            lines = []
            for run in run_rows:
                lines.append(f"run {run.run_id} {run.job_name} {run.status} ended {run.ended_at}")
                step_rows = conn.execute(select(steps).where(steps.c.run_id == run.run_id).order_by(steps.c.id)).all()
                for s in step_rows:
                    error = (s.error or "").strip().splitlines()[-1:] or [""]
                    lines.append(
                        f"  {s.step_key:<16} {s.status:<9} attempt {s.attempt} worker {s.worker} "
                        f"heartbeat {s.heartbeat_at} {error[0][:160]}"
                    )
        processes = [*([self.beat] if self.beat else []), *self.workers.values(), *self.retired]
        logs = "\n".join(f"--- {p.name} (pid {p.pid}, rc {p.popen.poll()})\n{p.tail(25)}" for p in processes)
        return "\n".join(lines) + "\n" + logs

    # -- measuring -------------------------------------------------------------------------

    def measure(
        self,
        fault: str,
        expected: dict[str, str],
        injected_at: datetime,
        timeout: float,
        affected: Sequence[str] | None = None,
    ) -> Trial:
        """Wait for the runs to end; record how each ended, duplicates and the recovery time.

        Runs still unfinished after ``timeout`` are described, then canceled so that they do
        not disturb later trials."""
        run_ids = list(expected)
        ended_in_time = self.wait_ended(run_ids, timeout)
        records = self.run_records(run_ids)
        trial = Trial(fault, expected, {r: rec.status for r, rec in records.items()}, injected_at)
        if affected is None:
            affected = [r for r, rec in records.items() if rec.ended_at is None or rec.ended_at > injected_at]
        ends = [records[r].ended_at for r in affected]
        if ended_in_time and ends and all(end is not None for end in ends):
            trial.recovery = max((end - injected_at).total_seconds() for end in ends if end is not None)
        if not ended_in_time:
            trial.failures.append(f"runs not ended {timeout:g}s after the fault:\n{self.describe(run_ids)}")
            for run_id, record in records.items():
                if record.status not in RunStatus.TERMINAL:
                    self.storage.cancel_run(run_id)
        for run_id, status in trial.statuses.items():
            if ended_in_time and status != expected[run_id]:
                trial.failures.append(f"run {run_id} ended {status}, expected {expected[run_id]}")
        trial.duplicated = self.duplicated_successes(run_ids)
        if trial.duplicated:
            trial.failures.append(f"steps recorded SUCCEEDED more than once: {trial.duplicated}")
        trial.reruns = self._reruns(run_ids)
        return trial

    def duplicated_successes(self, run_ids: Sequence[str]) -> list[str]:
        """``run:step`` of every step with more than one STEP_SUCCESS event or materialization."""
        found: set[str] = set()
        with self.storage.engine.connect() as conn:
            for table, extra in ((events, events.c.event_type == "STEP_SUCCESS"), (materializations, true())):
                rows = conn.execute(
                    select(table.c.run_id, table.c.step_key)
                    .where(table.c.run_id.in_(list(run_ids)), extra)
                    .group_by(table.c.run_id, table.c.step_key)
                    .having(func.count() > 1)
                ).all()
                found.update(f"{r.run_id}:{r.step_key}" for r in rows)
        return sorted(found)

    def _reruns(self, run_ids: Sequence[str]) -> int:
        """Executions beyond the first of each step (at-least-once: a killed step runs again)."""
        total = 0
        for run_id in run_ids:
            for step in self.storage.get_steps(run_id):
                total += max(0, len(self.executions(step.asset_key, run_id)) - 1)
        return total

    def check_step(self, trial: Trial, run_id: str, step_key: str, **expected: object) -> None:
        step = next(s for s in self.storage.get_steps(run_id) if s.step_key == step_key)
        for name, value in expected.items():
            if getattr(step, name) != value:
                trial.failures.append(
                    f"step {step_key} of run {run_id}: {name} is {getattr(step, name)!r}, not {value!r}"
                )


@dataclass
class Trial:
    """One fault injected once: how the runs ended against what was expected."""

    fault: str
    expected: dict[str, str]  # run_id -> the terminal status it must reach
    statuses: dict[str, str]  # run_id -> what it reached
    injected_at: datetime
    recovery: float | None = None  # seconds; None if an affected run did not end
    duplicated: list[str] = field(default_factory=list)
    reruns: int = 0
    failures: list[str] = field(default_factory=list)
    notes: str = ""

    @property
    def submitted(self) -> int:
        return len(self.expected)

    @property
    def completed(self) -> int:
        """Runs that ended as expected (SUCCESS, or FAILURE where the fault must fail them)."""
        return sum(1 for run_id, status in self.statuses.items() if status == self.expected[run_id])

    @property
    def lost(self) -> int:
        return self.submitted - self.completed

    def report(self) -> str:
        return f"{self.fault}: " + "\n".join(self.failures)


def _flush(broker_url: str) -> None:
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.RedisError:
        pass  # a private server that is down is empty anyway
    finally:
        client.close()


# -- the trials --------------------------------------------------------------------------------

Scenario = Callable[[Cluster, float], Trial]


def trial_baseline(cluster: Cluster, timeout: float) -> Trial:
    """No fault: two victim_job runs, measured from the point where the faults are injected."""
    run_ids = [cluster.submit("victim_job") for _ in range(2)]
    cluster.running_pid("victim", run_ids[0])
    return cluster.measure("none (baseline)", dict.fromkeys(run_ids, RunStatus.SUCCESS), utcnow(), timeout)


def trial_kill_pool_child(cluster: Cluster, timeout: float) -> Trial:
    """SIGKILL the prefork child executing ``victim`` (no RetryPolicy): Celery replaces the
    child; the monitor sees the heartbeat stop and re-runs the step (worker_lost_retries)."""
    run_ids = [cluster.submit("victim_job") for _ in range(2)]
    pid = cluster.running_pid("victim", run_ids[0])
    worker = cluster.worker_of(pid)
    assert parent_pid(pid) == worker.pid, f"pid {pid} is not a pool child of {worker.name}"
    injected_at = utcnow()
    os.kill(pid, signal.SIGKILL)
    trial = cluster.measure("SIGKILL pool child", dict.fromkeys(run_ids, RunStatus.SUCCESS), injected_at, timeout)
    if not worker.alive():
        trial.failures.append(f"worker {worker.name} died with its pool child")
    attempts = [a for a, _ in cluster.executions("victim", run_ids[0])]
    if trial.statuses[run_ids[0]] == RunStatus.SUCCESS and (len(attempts) < 2 or 1 not in attempts):
        trial.failures.append(f"victim of run {run_ids[0]} was not run again after the kill: attempts {attempts}")
    return trial


def trial_kill_worker(cluster: Cluster, timeout: float) -> Trial:
    """SIGKILL a whole worker (main process and pool children) mid-step: the step is re-run on
    the other worker. A replacement worker is started afterwards, outside the measurement."""
    run_ids = [cluster.submit("victim_job") for _ in range(2)]
    pid = cluster.running_pid("victim", run_ids[0])
    worker = cluster.worker_of(pid)
    injected_at = utcnow()
    cluster.kill_worker(worker)
    trial = cluster.measure("SIGKILL whole worker", dict.fromkeys(run_ids, RunStatus.SUCCESS), injected_at, timeout)
    for run_id in run_ids:
        step = next(s for s in cluster.storage.get_steps(run_id) if s.step_key == "victim")
        if step.status == StepStatus.SUCCEEDED and (step.worker or "").split("@")[0] == worker.name:
            trial.failures.append(f"victim of run {run_id} SUCCEEDED on the killed worker {worker.name}")
    cluster.start_workers(1)
    return trial


def trial_stalled_heartbeat(job: str) -> Scenario:
    """SIGSTOP the pool child executing the slow step of ``job``: the process lives but its
    heartbeat stops. guarded (RetryPolicy(max_retries=1)) must be re-run and the run succeed;
    fragile (max_retries=0) must fail, its child SKIPPED and the run FAILURE. Then SIGCONT:
    the old attempt is terminated by the monitor's revoke and must record nothing."""
    asset = job.removesuffix("_job")
    retries = DEFS.get_asset(asset).retry_policy
    assert retries is not None
    outcome = RunStatus.SUCCESS if retries.max_retries > 0 else RunStatus.FAILURE
    label = f"heartbeat stops, max_retries={retries.max_retries}"

    def trial(cluster: Cluster, timeout: float) -> Trial:
        run_ids = [cluster.submit(job) for _ in range(2)]
        pid = cluster.running_pid(asset, run_ids[0])
        injected_at = utcnow()
        cluster.freeze(pid)
        expected = {run_ids[0]: outcome, run_ids[1]: RunStatus.SUCCESS}
        try:
            result = cluster.measure(label, expected, injected_at, timeout)
        finally:
            cluster.thaw(pid)
        # The stopped attempt resumes: the monitor's revoke terminates it (or, should it finish
        # first, it finds it lost ownership); either way it records nothing.
        task_id = step_task_id(run_ids[0], asset, 1)
        line = cluster.wait_task_finished(task_id, timeout=cluster.step_seconds + 15)
        if line is None:
            result.failures.append(f"the resumed attempt {task_id} was neither terminated nor finished")
        elif "Terminating" not in line and "'lost'" not in line:
            result.failures.append(f"the resumed attempt did not report losing its step: {line}")
        result.duplicated = cluster.duplicated_successes(run_ids)
        if result.duplicated:
            result.failures.append(f"steps recorded SUCCEEDED more than once: {result.duplicated}")
        if outcome == RunStatus.SUCCESS:
            cluster.check_step(result, run_ids[0], asset, status=StepStatus.SUCCEEDED, attempt=2)
        else:
            cluster.check_step(result, run_ids[0], asset, status=StepStatus.FAILED, attempt=1)
            cluster.check_step(result, run_ids[0], f"after_{asset}", status=StepStatus.SKIPPED)
            step = next(s for s in cluster.storage.get_steps(run_ids[0]) if s.step_key == asset)
            if "WorkerLostError" not in (step.error or ""):
                result.failures.append(f"{asset} failed without saying its worker was lost: {step.error!r}")
        return result

    return trial


def trial_redis_restart(server: PrivateRedis) -> Scenario:
    """SIGKILL the Redis server while three runs are in flight (a step RUNNING, others ENQUEUED
    on Redis), submit two more runs while it is down (their roots stay READY, unsent), start it
    again empty: every run must still succeed."""

    def trial(cluster: Cluster, timeout: float) -> Trial:
        run_ids = [cluster.submit("victim_job") for _ in range(3)]
        cluster.running_pid("victim", run_ids[0])
        injected_at = utcnow()
        server.kill()
        during = [cluster.submit("victim_job") for _ in range(2)]
        time.sleep(REDIS_OUTAGE_SECONDS)
        server.start()
        everything = run_ids + during
        return cluster.measure(
            "Redis restarted empty", dict.fromkeys(everything, RunStatus.SUCCESS), injected_at, timeout
        )

    return trial


def trial_database_dropped(cluster: Cluster, timeout: float) -> Trial:
    """pg_terminate_backend every connection of the workers and the beat mid-step, twice one
    second apart; then submit a run that only a reconnected beat can start."""
    run_ids = [cluster.submit("victim_job") for _ in range(2)]
    cluster.running_pid("victim", run_ids[0])
    pids = {p.name: p.pid for p in [*cluster.workers.values(), *([cluster.beat] if cluster.beat else [])]}
    injected_at = utcnow()
    first = cluster.terminate_backends()
    time.sleep(1.0)
    second = cluster.terminate_backends()
    later = cluster.submit("victim_job")
    expected = dict.fromkeys([*run_ids, later], RunStatus.SUCCESS)
    trial = cluster.measure("DB connections terminated", expected, injected_at, timeout, affected=run_ids)
    if first == 0:
        trial.failures.append("no database connection was terminated: the fault was not injected")
    trial.notes = f"terminated {first} + {second} backends"
    for process in [*cluster.workers.values(), *([cluster.beat] if cluster.beat else [])]:
        if not process.alive() or pids.get(process.name) != process.pid:
            trial.failures.append(f"{process.name} did not survive losing its database connections")
    return trial


def trial_removed_job(cluster: Cluster, timeout: float) -> Trial:
    """A run of ``gone_job`` submitted to a beat (and workers) whose code lacks that job must
    fail with a message naming the job; a run of another job goes on."""
    injected_at = utcnow()
    gone = cluster.submit("gone_job")
    other = cluster.submit("victim_job")
    expected = {gone: RunStatus.FAILURE, other: RunStatus.SUCCESS}
    trial = cluster.measure("job removed from code", expected, injected_at, timeout, affected=[gone])
    messages = [e.message or "" for e in cluster.storage.get_events(gone) if e.event_type == "RUN_FAILURE"]
    if not any("job 'gone_job' is not defined" in m for m in messages):
        trial.failures.append(f"run {gone} of gone_job has no RUN_FAILURE event naming the job: {messages}")
    if cluster.executions("orphan", gone):
        trial.failures.append(f"the steps of run {gone} of gone_job ran: {cluster.executions('orphan', gone)}")
    return trial


# -- outages of a whole service (bench/faults.py; tests/test_outages.py tests the same) --------

OUTAGE_PROJECT = ROOT / "tests" / "projects" / "outage_project.py"  # fault_project + a 1 s sensor
OUTAGE_SENSOR = "every_second"


def all_run_ids(cluster: Cluster) -> list[str]:
    with cluster.storage.engine.connect() as conn:
        return list(conn.execute(select(runs.c.run_id).order_by(runs.c.created_at)).scalars())


def tick_gaps(cluster: Cluster, sensor: str, start: datetime, end: datetime) -> tuple[int, float]:
    """How many ticks of ``sensor`` were evaluated in [start, end], and the longest time
    between two consecutive evaluations (or an end of the window), in seconds."""
    times = sorted(t.tick_time for t in cluster.storage.get_ticks(sensor, limit=100_000))
    inside = [t for t in times if start <= t <= end]
    points = [start, *inside, end]
    return len(inside), max((b - a).total_seconds() for a, b in itertools.pairwise(points))


def _outage_trial(label: str, cut: Callable[[], None], restore: Callable[[], None], seconds: float) -> Scenario:
    """Two victim_job runs in flight (the slow step running), the service cut for ``seconds``,
    then restored: those runs and every run the 1 s sensor made during the outage must
    succeed, none twice. Notes: the sensor's ticks during the outage and the longest gap."""

    def trial(cluster: Cluster, timeout: float) -> Trial:
        before = set(all_run_ids(cluster))
        submitted = [cluster.submit("victim_job") for _ in range(2)]
        cluster.running_pid("victim", submitted[0])
        injected_at = utcnow()
        cut()
        try:
            time.sleep(seconds)
        finally:
            restore()
        restored_at = utcnow()
        made = [r for r in all_run_ids(cluster) if r not in before and r not in submitted]
        expected = dict.fromkeys([*submitted, *made], RunStatus.SUCCESS)
        result = cluster.measure(label, expected, injected_at, timeout + seconds)
        ticks, gap = tick_gaps(cluster, OUTAGE_SENSOR, injected_at, restored_at)
        result.notes = (
            f"{OUTAGE_SENSOR} (1 s): {ticks} tick(s) evaluated during the {seconds:g} s outage, longest gap "
            f"{gap:.1f} s; {len(made)} sensor run(s) made by the end of the outage"
        )
        return result

    return trial


def trial_broker_frozen(server: PrivateRedis, seconds: float) -> Scenario:
    """SIGSTOP the Redis server for ``seconds`` (connections accepted, never answered)."""
    return _outage_trial(f"Redis frozen {seconds:g} s", server.freeze, server.thaw, seconds)


def trial_database_restart(server: PrivatePostgres, seconds: float) -> Scenario:
    """Stop the PostgreSQL server (fast shutdown) for ``seconds``, then start it again."""
    return _outage_trial(f"PostgreSQL down {seconds:g} s", server.stop, server.start, seconds)
