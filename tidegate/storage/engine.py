"""Engines for SQLite (embedded) and PostgreSQL (production), with the settings each needs.

SQLite: WAL so readers never block the writer, a busy timeout so writers queue instead of
failing, and ``BEGIN IMMEDIATE`` for every transaction: pysqlite's default deferred
transactions take the write lock only at the first write, so two processes that both read
then write can interleave and one of them silently works from stale data.

Time: every timestamp that another process compares (heartbeats, lease expiry, ready and
enqueued times, instigator changes) is read from the database's clock (``database_now``),
never the host's: hosts drift, the database is one clock for all of them.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


# A process frozen or cut off inside a transaction must not hold row locks for hours: the
# server ends its transaction, and waiters give up and retry.
SERVER_OPTIONS = "-c lock_timeout=20s -c idle_in_transaction_session_timeout=60s"


def make_engine(url: str, *, pre_ping: bool = True) -> Engine:
    """``pre_ping=False`` (the workers) spares a round trip per checkout: a connection killed
    server-side then fails its first statement, which invalidates every pooled connection
    (SQLAlchemy's disconnect handling), and the caller's ``retry_transient`` reconnects."""
    url = normalize_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    # A URL's own ``options`` (``?options=-csearch_path%3Dtenant``) would be replaced by the
    # connect argument below: keep them, after tidegate's, so that they win where both set one.
    given = make_url(url).query.get("options")
    options = " ".join([SERVER_OPTIONS, *([given] if isinstance(given, str) else given or [])])
    engine = create_engine(
        url,
        pool_pre_ping=pre_ping,  # a connection killed server-side is replaced, not handed out
        pool_size=5,
        max_overflow=10,
        pool_recycle=1800,
        connect_args={
            "options": options,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )
    # A pooled connection must never be shared by a parent and its forked child (Celery
    # prefork): the child starts with an empty pool.
    ref = weakref.ref(engine)

    def _forget_parent_connections() -> None:
        alive = ref()
        if alive is not None:
            alive.dispose(close=False)

    os.register_at_fork(after_in_child=_forget_parent_connections)
    return engine


class _WalKeeper:
    """One idle connection per process, held open for the engine's life, so that closing a
    transaction's connection (NullPool) is never the last close of the file: the last close
    checkpoints the WAL into the database and syncs it to disk, every transaction (4 ms on a
    busy disk against 0.3 ms without). SQLite still checkpoints on its own every 1,000 WAL
    pages, and at the last close of all. A connection must not be used across a fork, closing
    included: a child opens its own and keeps its parent's, untouched, until it exits."""

    _inherited: ClassVar[list[sqlite3.Connection]] = []

    def __init__(self, database: str) -> None:
        self.database = database
        self.pid = 0
        self.connection: sqlite3.Connection | None = None
        self.lock = threading.Lock()

    def hold(self) -> None:
        if self.pid == os.getpid():
            return
        with self.lock:
            if self.pid == os.getpid():
                return
            if self.connection is not None:  # the parent's, in a forked child: never closed here
                self._inherited.append(self.connection)
            self.connection = sqlite3.connect(self.database, check_same_thread=False)
            # SQLite opens the file at the first statement: read the schema's version so that
            # this connection joins the WAL (holds its index) and stays an open reader of it.
            self.connection.execute("PRAGMA schema_version").fetchone()
            self.pid = os.getpid()

    def close(self) -> None:
        if self.connection is not None and self.pid == os.getpid():
            self.connection.close()
        self.connection = None


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL once (the mode is stored in the file, so later connections only
    read it). The switch needs a lock that SQLite may refuse at once, without its busy handler,
    while another process is creating the same database: retry until the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # NullPool: a connection never crosses a fork (Celery prefork) or a thread.
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    keeper = _WalKeeper(database) if database and database != ":memory:" else None
    if keeper is not None:
        weakref.finalize(engine, keeper.close)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        if keeper is not None:
            keeper.hold()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


# deadlock detected, serialization failure, lock timeout, idle-in-transaction timeout
_TRANSIENT_PG_CODES = {"40P01", "40001", "55P03", "25P03"}
# How long a write keeps reconnecting to a database that went away (restarted, failed over)
# before its caller sees the error; a passing conflict (deadlock, lock) gets six tries.
RECONNECT_SECONDS = 10.0
_F = TypeVar("_F", bound=Callable[..., Any])


def retry_transient(method: _F) -> _F:
    """Re-run a write transaction that failed for a passing reason: a deadlock, a
    serialization failure, a SQLite lock held past the busy timeout (six tries), or a lost or
    refused connection (reconnecting with backoff for up to ``RECONNECT_SECONDS``).

    A connection dropped during COMMIT may have committed (only the acknowledgement was
    lost), so every method wrapped here must be idempotent when run again: a compare-and-set
    on a status, or a key chosen before the first attempt (``Storage.submit_run`` picks the
    run id outside this loop and inserts it with ON CONFLICT DO NOTHING)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return method(*args, **kwargs)
            except DBAPIError as exc:
                attempt += 1
                if is_connection_error(exc):
                    if time.monotonic() - started > RECONNECT_SECONDS:
                        raise
                elif attempt >= 6 or not is_transient(exc):
                    raise
                time.sleep(min(2.0, 0.05 * 2 ** min(attempt - 1, 6)))

    return wrapper  # type: ignore[return-value]


def is_transient(exc: DBAPIError) -> bool:
    """A failure that trying again may cure: a lost connection, a deadlock, a lock timeout."""
    if is_connection_error(exc):
        return True
    code = getattr(exc.orig, "sqlstate", None)
    if code in _TRANSIENT_PG_CODES:
        return True
    return isinstance(exc, OperationalError) and "locked" in str(exc.orig)


def is_connection_error(exc: DBAPIError) -> bool:
    """The database could not be reached or dropped the connection: refused, reset, shutting
    down or starting up (PostgreSQL 57P01-57P03), any 08xxx connection exception."""
    if exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "sqlstate", None) or ""
    if code.startswith(("08", "57P")):
        return True
    # psycopg reports a refused or broken connection as an OperationalError without a SQLSTATE.
    orig_module = type(exc.orig).__module__
    return isinstance(exc, OperationalError) and orig_module.startswith("psycopg") and not code


def now_column(dialect: str) -> Any:
    """``database_now``'s value as a column, to read it with another SELECT's row (one round
    trip less); ``as_database_now`` converts what it returns."""
    if dialect == "sqlite":
        return func.strftime("%Y-%m-%d %H:%M:%f", "now")
    return func.now()


def as_database_now(value: Any) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC)  # type: ignore[no-any-return]


def database_now(conn: Connection) -> datetime:
    """The database server's current time, timezone-aware UTC.

    PostgreSQL: ``now()``, the start of the current transaction, so every time written by one
    transaction is the same instant. SQLite: its own clock (the host's: SQLite runs in-process
    and every process shares the file on one machine), read in SQL with millisecond
    resolution, as UTC in the layout SQLAlchemy stores datetimes in.
    """
    if conn.dialect.name == "sqlite":
        text = conn.execute(select(func.strftime("%Y-%m-%d %H:%M:%f", "now"))).scalar_one()
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    value: datetime = conn.execute(select(func.now())).scalar_one()
    return value.astimezone(UTC)


def dialect_insert(dialect: str) -> Any:
    """The INSERT construct with ON CONFLICT support of ``dialect`` (PostgreSQL or SQLite)."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


class DriverStatement:
    """A SQLAlchemy statement compiled once for PostgreSQL's psycopg driver, to be sent with
    others in one round trip (``run_pipelined``): SQLAlchemy's own execution reads each
    statement's result before sending the next, which psycopg's pipeline mode cannot batch.
    A call only binds values (``params``): the same conversions SQLAlchemy would apply (JSON
    wrapped for psycopg), on the same SQL text, which psycopg prepares after a few uses.

    The text is sent with PostgreSQL's own ``$n`` placeholders, numbered here once, through a
    ``psycopg.RawCursor`` (psycopg 3.2), which parses nothing: psycopg caches its parse of
    ``%(name)s`` placeholders only for a text of up to 4,096 characters, and parsed a step's
    success statement (5,300 with a continuation) again on every call: 4-12 % of a pool
    process's CPU on a fan-out's steps (py-spy, four profiles)."""

    def __init__(self, statement: Any, dialect: Any) -> None:
        self.compiled = statement.compile(dialect=dialect)
        self.sql: str = self.compiled.string
        self.processors: dict[str, Callable[[Any], Any]] = dict(self.compiled._bind_processors)
        names: dict[str, int] = {}

        def number(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "%"  # pyformat's escaped percent sign
            return f"${names.setdefault(match.group(1), len(names) + 1)}"

        self.numbered: bytes = _PYFORMAT.sub(number, self.sql).encode()
        self.names: tuple[str, ...] = tuple(names)
        # The names of the result's columns (empty: no rows), read from the first result:
        # psycopg builds ``cursor.description`` (a Column object per column) on every reading,
        # 8 % of a pool process's CPU on a fan-out's trivial steps (py-spy --gil), and one
        # text always returns the same columns.
        self.columns: tuple[str, ...] | None = None

    def params(self, values: Mapping[str, Any]) -> list[Any]:
        """The values of the ``$n`` placeholders of ``numbered``, in order."""
        params: dict[str, Any] = self.compiled.construct_params(values)
        for name, process in self.processors.items():
            if name in params:  # None too: a JSON column's None is JSON null, as SQLAlchemy stores it
                params[name] = process(params[name])
        return [params[name] for name in self.names]


# A psycopg (pyformat) placeholder, or an escaped percent sign.
_PYFORMAT = re.compile(r"%\((\w+)\)s|%%")


def _run_autocommitted(raw: Any, statements: Sequence[tuple[DriverStatement, Mapping[str, Any]]]) -> list[Any]:
    """Execute ``statements`` in autocommit mode, one transaction in one round trip: a single
    statement alone, which PostgreSQL runs as a transaction of its own; several in psycopg's
    pipeline mode, which sends them with one Sync: the extended query protocol runs the
    messages up to a Sync as one implicit transaction, committed at the Sync if every
    statement succeeded, else rolled back (the first failure skips the rest).

    An explicit transaction in a pipeline cost two round trips: psycopg's ``commit()`` syncs,
    and leaving the pipeline syncs again. Three trivial statements took 0.19 ms and 0.105 ms of
    client CPU with BEGIN and COMMIT, 0.096 ms and 0.058 ms this way; a claim sent alone, 0.05
    ms of CPU and 0.1 ms less than in a pipeline (measured). The connection goes back out of
    autocommit mode, as its pool expects it."""
    import psycopg

    raw.autocommit = True
    try:
        if len(statements) == 1:
            (statement, values), *_ = statements
            cursor = psycopg.RawCursor(raw)
            cursor.execute(statement.numbered, statement.params(values))
            return [cursor]
        cursors = []
        with raw.pipeline():
            for statement, values in statements:
                cursor = psycopg.RawCursor(raw)
                cursor.execute(statement.numbered, statement.params(values))
                cursors.append(cursor)
        return cursors
    finally:
        raw.autocommit = False


class KeptConnections:
    """One connection per thread, kept checked out of ``engine``'s pool, for ``run_pipelined``:
    a worker's claim and success each checked a pooled connection out and back in (SQLAlchemy's
    ``Connection``, the pool's checkout, its reset on checkin), 9 % of a pool process's CPU on
    a fan-out's trivial steps (py-spy --gil).

    A kept connection that breaks is invalidated by ``run_pipelined`` as a pooled one is, and
    SQLAlchemy reconnects it on its next use (an error then, the database still away, is the
    same ``DBAPIError`` that ``retry_transient`` retries). A connection is never used across a
    fork: a child opens its own and keeps its parent's untouched (``_inherited``: closing it, or
    its finalizer returning it to the pool, would talk on the parent's socket) until it exits.
    Only for long-lived threads (a worker's pool): each thread keeps one until ``close``."""

    _inherited: ClassVar[list[Connection]] = []

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._local = threading.local()
        self._lock = threading.Lock()
        self._kept: list[tuple[int, Connection]] = []

    def run(self, statements: Sequence[tuple[DriverStatement, Mapping[str, Any]]]) -> list[list[SimpleNamespace]]:
        """``run_pipelined`` on this thread's connection, checked out on first use."""
        pid = os.getpid()
        kept: tuple[int, Connection] | None = getattr(self._local, "kept", None)
        if kept is None or kept[0] != pid:
            if kept is not None:
                self._inherited.append(kept[1])
            kept = (pid, self.engine.connect())
            self._local.kept = kept
            with self._lock:
                self._kept.append(kept)
        return run_pipelined(kept[1], statements)

    def close(self) -> None:
        """Return this process's kept connections to the pool (its threads no longer use them)."""
        pid = os.getpid()
        with self._lock:
            kept, self._kept = self._kept, []
        for owner, conn in kept:
            if owner == pid:
                conn.close()
            else:
                self._inherited.append(conn)
        self._local = threading.local()


def run_pipelined(
    conn: Connection, statements: Sequence[tuple[DriverStatement, Mapping[str, Any]]]
) -> list[list[SimpleNamespace]]:
    """Send ``statements`` to PostgreSQL as one transaction in one round trip on ``conn``'s
    driver connection (``_run_autocommitted``), then read each statement's rows (their
    columns as attributes). The transaction is as atomic as any: a statement that fails
    skips the rest, and the transaction rolls back. So the statements must
    not depend on what the client would read between them: a later one that must act only
    if an earlier one did reads that in SQL. ``conn`` must not be in a SQLAlchemy
    transaction; it is left outside one.

    A psycopg error is raised as SQLAlchemy's ``DBAPIError`` (what ``retry_transient`` and
    the callers judge), and a broken connection is invalidated, as SQLAlchemy does."""
    import psycopg

    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        cursors = _run_autocommitted(raw, statements)
        results: list[list[SimpleNamespace]] = []
        for (statement, _), cursor in zip(statements, cursors, strict=True):
            names = statement.columns
            if names is None:
                description = cursor.description
                names = statement.columns = tuple(c.name for c in description or ())
            if not names:  # a command, an INSERT without RETURNING: no rows
                results.append([])
                continue
            results.append([SimpleNamespace(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()])
        return results
    except psycopg.Error as exc:
        try:
            invalidated = raw.broken or raw.closed
            if not invalidated:
                try:
                    raw.rollback()
                except psycopg.Error:
                    invalidated = True
            if invalidated or conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None):  # type: ignore[arg-type]
                # As SQLAlchemy does on a disconnect: the whole pool goes, its other
                # connections went with the same server (workers run without pre-ping).
                conn.engine.pool._invalidate(conn.connection, exc)
                conn.invalidate(exc)
                invalidated = True
        except BaseException:
            conn.invalidate()  # interrupted while rolling back: its state is unknown
            raise
        raise DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=invalidated) from exc
    except BaseException:
        conn.invalidate()  # interrupted mid-pipeline (a time limit, a signal): its state is unknown
        raise
