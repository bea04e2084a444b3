"""Helpers shared by the tests: service addresses, worker processes, environments."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_TEST_DB = int(os.environ.get("TIDEGATE_TEST_REDIS_DB", "11"))
PG_ADMIN_URL = os.environ.get("TIDEGATE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
PG_TEST_DB = os.environ.get("TIDEGATE_TEST_PG_DB", "tidegate_test")
TIDEGATE = str(Path(sys.executable).with_name("tidegate"))
ALL_QUEUES = "*"  # start_worker(queues=ALL_QUEUES): tidegate worker --all-queues
# The password in every URL given to a tidegate process by the tests: no output may show it.
SECRET = "s3cr3tpw"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(name: str, reason: str) -> None:
    message = f"{name} is not available: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: services are required)")
    pytest.skip(message)


def truncate_all(url: str) -> None:
    """Empty every table of tidegate's schema and restart its id sequences, as
    ``TRUNCATE ... RESTART IDENTITY`` would, in one transaction.

    DELETE instead of TRUNCATE: a TRUNCATE of the schema's tables costs ~0.25 s on this
    machine (new files for each table and index, fsynced at commit) whether or not they hold
    rows, and hundreds of tests start with it; deleting the few rows a test left costs a few
    milliseconds. Children before parents, so that no foreign key is violated."""
    from sqlalchemy import text

    from tidegate.storage.api import Storage
    from tidegate.storage.schema import metadata

    storage = Storage(url)
    with storage.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
        sequences = conn.execute(
            text("SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()")
        ).scalars()
        for sequence in sequences.all():
            conn.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
    storage.dispose()


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_workers([self])


def stop_workers(workers: list[WorkerProcess]) -> None:
    """SIGTERM to every worker at once (Celery's warm shutdown), then wait for each, SIGKILL to
    the group of one still alive after 15 s: a warm shutdown takes ~2.5 s here, paid once for
    all the workers of a test instead of once per worker."""
    running = [worker for worker in workers if worker.process.poll() is None]
    for worker in running:
        worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for worker in running:
        try:
            worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait(timeout=5)


def start_worker(
    env: dict[str, str],
    *,
    name: str,
    log_dir: Path,
    queues: str | None = ALL_QUEUES,
    concurrency: int = 2,
    pool: str = "prefork",
    timeout: float = 30.0,
) -> WorkerProcess:
    """Start ``tidegate worker`` as a real process and wait until Celery says it is ready.

    ``queues``: ``-Q``'s value; ``ALL_QUEUES`` (the default here) every queue the project
    names; None no option at all (the worker serves the default queue only)."""
    log_path = log_dir / f"worker-{name}.log"
    argv = [TIDEGATE, "worker", "-c", str(concurrency), "-P", pool, "-n", f"{name}@%h", "-l", "INFO"]
    if queues == ALL_QUEUES:
        argv.append("--all-queues")
    elif queues:
        argv += ["-Q", queues]
    argv += ["--", "--without-mingle", "--without-gossip"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
    worker = WorkerProcess(name, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker {name} exited with {process.returncode}:\n{worker.log()}")
        if " ready." in worker.log():
            return worker
        time.sleep(0.1)
    worker.stop()
    raise RuntimeError(f"worker {name} not ready after {timeout}s:\n{worker.log()}")


def with_password(url: str) -> str:
    """``url`` with :data:`SECRET` as its password, for PostgreSQL (trust auth accepts any) and
    Redis (its passwordless ``default`` user accepts any); other URLs as they are."""
    parts = urlsplit(url)
    if parts.password is not None or not parts.scheme.startswith(("postgresql", "redis")):
        return url
    user = parts.username or ("default" if parts.scheme.startswith("redis") else "postgres")
    return urlunsplit(parts._replace(netloc=f"{user}:{SECRET}@{parts.netloc.rpartition('@')[2]}"))


def tidegate_env(
    *, database_url: str, broker_url: str, definitions: Path, io_dir: Path, **extra: str
) -> dict[str, str]:
    """The environment of a tidegate process. Its database and broker URLs carry
    :data:`SECRET` as password: tests/conftest.py fails the session if a log shows it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(
        TIDEGATE_DATABASE_URL=with_password(database_url),
        TIDEGATE_BROKER_URL=with_password(broker_url),
        TIDEGATE_DEFINITIONS=str(definitions),
        TIDEGATE_IO_BASE_DIR=str(io_dir),
        TIDEGATE_HOME=str(io_dir.parent / "home"),
        TIDEGATE_HEARTBEAT_SECONDS="1",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


@contextmanager
def dedicated_pg_database(prefix: str) -> Iterator[str]:
    """A PostgreSQL database of this session alone, migrated, dropped afterwards: the shared
    test database is truncated by other suites, possibly running at the same time."""
    import psycopg

    name = f"{prefix}_{os.getpid()}"
    admin = PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        require_service("PostgreSQL", f"{PG_ADMIN_URL}: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    from tidegate.storage.api import Storage

    Storage.open(url, upgrade=True).dispose()
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- tidegate processes other than workers (beat, webserver) ------------------------------------


def spawn_process(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own (so that its children stop with it), stdout and
    stderr to ``log_path``, in the project's root directory."""
    with log_path.open("wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM to the process's group, SIGKILL after ``timeout`` seconds."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def wait_http_ok(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 60.0) -> bytes:
    """Poll ``url`` until it answers 200 and return the body; fail with the log if the process
    exits or ``timeout`` passes first (an upper bound for start-up, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{log}")
        with suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                body: bytes = response.read()
                return body
        time.sleep(0.1)
    raise RuntimeError(f"{url} not answering after {timeout}s:\n{log_path.read_text(errors='replace')}")


def free_port(first: int | None = None, last: int | None = None) -> int:
    """A port free on the loopback interface: the first free one in ``first..last`` (a fixed
    range, so that a process can be started again on it), else one the system picks."""
    if first is None or last is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            return port
    for candidate in range(first, last + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return candidate
    raise RuntimeError(f"no free port in {first}-{last}")
