"""Real services for the tests: Redis, PostgreSQL, SQLite files and Celery worker processes.

A test that needs a service that is not running skips with the reason on a laptop and fails
under CI (``CI=true``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fault_injection import PrivateRedis
from tests.support import (
    PG_ADMIN_URL,
    PG_TEST_DB,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_TEST_DB,
    SECRET,
    WorkerProcess,
    require_service,
    start_worker,
    stop_workers,
    truncate_all,
)

# -- temporary directories in memory -----------------------------------------------------------

# Where tmp_path lives, unless PYTEST_DEBUG_TEMPROOT or --basetemp says otherwise. SQLite
# databases of the tests live under tmp_path, and tidegate opens a connection per transaction
# (NullPool): in WAL mode the close of the last connection checkpoints and fsyncs, about 8 ms
# on this machine's disk against 0.3 ms on tmpfs. The tests' semantics (locks, WAL, transactions)
# are the same on both; only the fsyncs are free. TIDEGATE_TEST_TMPFS=0 keeps the system's
# temporary directory.
TMPFS = Path("/dev/shm")
TMPFS_MIN_FREE = 2 << 30


def pytest_configure(config: pytest.Config) -> None:
    if (
        os.environ.get("TIDEGATE_TEST_TMPFS", "1") != "0"
        and "PYTEST_DEBUG_TEMPROOT" not in os.environ
        and config.option.basetemp is None
        and TMPFS.is_dir()
        and os.access(TMPFS, os.W_OK)
        and shutil.disk_usage(TMPFS).free >= TMPFS_MIN_FREE
    ):
        os.environ["PYTEST_DEBUG_TEMPROOT"] = str(TMPFS)


# -- Redis -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_TEST_DB, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        require_service("Redis", f"{REDIS_HOST}:{REDIS_PORT}: {exc}")
    client.flushdb()
    client.close()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_TEST_DB}"


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A dedicated database, migrated once; tests truncate what they use."""
    import psycopg

    try:
        with psycopg.connect(
            PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True, connect_timeout=3
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_TEST_DB,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{PG_TEST_DB}"')
    except psycopg.Error as exc:
        require_service("PostgreSQL", f"{PG_ADMIN_URL}: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{PG_TEST_DB}"
    from tidegate.storage.api import Storage

    storage = Storage.open(url, upgrade=True)
    storage.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tidegate.db'}"
    url: str = request.getfixturevalue("pg_url")
    truncate_all(url)
    return url


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to head once per session, its WAL checkpointed into the file
    (``wal_checkpoint(TRUNCATE)``), for ``storage`` to copy: running every migration costs
    40-200 ms per test on this machine, a copy well under 1 ms on tmpfs."""
    import sqlite3

    from tidegate.storage.api import Storage

    path = tmp_path_factory.mktemp("sqlite-template") / "tidegate.db"
    Storage.open(f"sqlite:///{path}", upgrade=True).dispose()
    connection = sqlite3.connect(path)
    try:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "the template's WAL could not be checkpointed"
    finally:
        connection.close()
    return path


@pytest.fixture
def storage(request: pytest.FixtureRequest, database_url: str) -> Iterator[object]:
    """``database_url`` migrated to head and opened. A SQLite database not created yet starts
    as a copy of ``migrated_sqlite_template``; ``Storage.open`` still checks its revision."""
    from tidegate.storage.api import Storage

    if database_url.startswith("sqlite:///"):
        path = Path(database_url.removeprefix("sqlite:///"))
        if not path.exists():
            shutil.copyfile(request.getfixturevalue("migrated_sqlite_template"), path)
    store = Storage.open(database_url, upgrade=True)
    yield store
    store.dispose()


# -- a private redis-server (fault and outage tests freeze or restart it) ----------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    try:
        server = PrivateRedis(tmp_path)
    except RuntimeError as exc:
        require_service("redis-server", str(exc))
    try:
        server.start()
        yield server
    finally:
        server.close()


# -- worker processes --------------------------------------------------------------------------


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def factory(env: dict[str, str], **kwargs: object) -> WorkerProcess:
        worker = start_worker(env, log_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
        started.append(worker)
        return worker

    yield factory
    stop_workers(started)


# -- secrets -----------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_process_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the session, no log of a worker, beat or CLI process shows the password that
    ``tidegate_env`` puts into every database and broker URL (tests.support.SECRET)."""
    yield
    leaks = []
    for path in sorted(tmp_path_factory.getbasetemp().rglob("*.log")):
        text = path.read_text(errors="replace")
        leaks += [f"{path}: {line.strip()}" for line in text.splitlines() if SECRET in line][:3]
    assert not leaks, "a process printed a password:\n" + "\n".join(leaks)
