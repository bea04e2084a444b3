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
from select import select as wait_on  # file descriptors; "select" is SQLAlchemy's here
from types import SimpleNamespace
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InvalidRequestError, OperationalError
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

        self._plan = self._binding_plan()

    def _binding_plan(self) -> list[tuple[str, str, Callable[[Any], Any] | None, Any]] | None:
        """Per placeholder of ``numbered``: the key and compiled name a value is given by, its
        type's conversion, and its bound constant already converted (``_REQUIRED`` if the
        caller must give it): what ``construct_params`` finds on every call, found once. It
        and the conversions of its result were 4.5 % of a pool process's CPU on trivial steps.
        None (bind through SQLAlchemy on each call) for what it computes per call: callable
        values, expanding or collected parameters."""
        compiled = self.compiled
        binds = compiled.bind_names
        if getattr(compiled, "_render_postcompile", False) or getattr(compiled, "_collected_params", None):
            return None
        if any(bind.callable is not None or bind.expanding for bind in binds):
            return None
        by_name = {compiled.escaped_bind_names.get(name, name): (bind, name) for bind, name in binds.items()}
        plan = []
        for escaped in self.names:
            bind, name = by_name[escaped]
            process = self.processors.get(escaped)
            if bind.required:
                constant: Any = _REQUIRED
            else:
                constant = bind.value if process is None else process(bind.value)
            plan.append((bind.key, name, process, constant))
        return plan

    def params(self, values: Mapping[str, Any]) -> list[Any]:
        """The values of the ``$n`` placeholders of ``numbered``, in order, converted as
        SQLAlchemy would (None too: a JSON column's None is JSON null, as SQLAlchemy stores
        it)."""
        if self._plan is None:
            params: dict[str, Any] = self.compiled.construct_params(values)
            for name, convert in self.processors.items():
                if name in params:
                    params[name] = convert(params[name])
            return [params[name] for name in self.names]
        bound = []
        for key, name, process, constant in self._plan:
            if key in values:
                value = values[key]
            elif name in values:
                value = values[name]
            elif constant is _REQUIRED:
                raise InvalidRequestError(f"A value is required for bind parameter {key!r}", code="cd3x")
            else:
                bound.append(constant)
                continue
            bound.append(value if process is None else process(value))
        return bound


_REQUIRED = object()  # a placeholder with no bound value


# A psycopg (pyformat) placeholder, or an escaped percent sign.
_PYFORMAT = re.compile(r"%\((\w+)\)s|%%")


def _exchange(
    raw: Any, statements: Sequence[tuple[DriverStatement, Mapping[str, Any]]], *, again: bool = True
) -> list[list[Any]]:
    """Send ``statements`` to PostgreSQL as one transaction in one write, and return each
    one's rows (tuples, in its columns' order; none for a command). The statements go in
    libpq's pipeline mode, each prepared on first use on this connection (``_Prepared``), with
    one Sync after the last: the extended query protocol runs the messages up to a Sync as
    one implicit transaction, committed at the Sync if every statement succeeded, else rolled
    back (the first failure skips the rest, and is raised here as psycopg's error for it).

    psycopg's own pipeline writes each statement out on its own, with a poll before each, and
    the server wakes for each: a worker's success (three statements) cost 0.22 ms of client
    and 0.19 ms of server CPU that way, 0.08 and 0.13 ms this way, with four such clients on
    the 2 CPUs (measured). Nothing is written until the whole transaction is buffered, and
    ``raw`` is neither put in autocommit mode nor given a cursor: the connection must be
    outside a transaction, and is left outside one."""
    import psycopg
    from psycopg import pq
    from psycopg.adapt import PyFormat, Transformer

    pgconn = raw.pgconn
    if pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection is lost")  # as psycopg says it: transient
    if pgconn.transaction_status != pq.TransactionStatus.IDLE:
        raise psycopg.ProgrammingError("a pipelined transaction needs a connection outside a transaction")
    prepared = _Prepared.of(raw)
    dump = Transformer(raw)
    messages = []  # what a value cannot be sent as fails here, before anything is buffered
    for statement, values in statements:
        params = statement.params(values)
        sent = dump.dump_sequence(params, [PyFormat.AUTO] * len(params))
        messages.append((statement.numbered, sent, tuple(dump.types or ()), list(dump.formats or ())))
    preparing: list[tuple[tuple[bytes, tuple[int, ...]], bytes] | None] = []  # per message: a prepare's, or None
    with raw.lock:
        try:
            pgconn.enter_pipeline_mode()
            for sql, sent, types, formats in messages:
                key, name, new = prepared.name(sql, types)
                if new:
                    assert name is not None
                    pgconn.send_prepare(name, sql, types)
                    preparing.append((key, name))
                if name is None:
                    pgconn.send_query_params(sql, sent, types, formats)
                else:
                    pgconn.send_query_prepared(name, sent, formats)
                preparing.append(None)
            pgconn.pipeline_sync()
            _wait_flushed(pgconn)
            results = _read_until_sync(pgconn)
            pgconn.exit_pipeline_mode()
        except BaseException:
            if pgconn.pipeline_status != pq.PipelineStatus.OFF:
                raw.close()  # left mid-exchange (a lost server, a signal): unusable, and known as closed
            raise
    failed = None
    executed = []
    for made, result in zip(preparing, results, strict=True):
        if made is None:
            executed.append(result)
        elif result.status == pq.ExecStatus.COMMAND_OK:
            prepared.names[made[0]] = made[1]  # kept though the transaction rolls back: PREPARE is not transactional
        elif failed is None and result.status != pq.ExecStatus.PIPELINE_ABORTED:
            failed = result
    rows: list[list[Any]] = []
    load = Transformer(raw)
    for (statement, _), result in zip(statements, executed, strict=True):
        status = result.status
        if status == pq.ExecStatus.TUPLES_OK:
            if statement.columns is None:
                statement.columns = tuple(result.fname(i).decode() for i in range(result.nfields))
            load.set_pgresult(result)
            rows.append(load.load_rows(0, result.ntuples, tuple))
        elif status == pq.ExecStatus.COMMAND_OK:
            statement.columns = ()
            rows.append([])
        elif failed is None and status != pq.ExecStatus.PIPELINE_ABORTED:
            failed = result
    if failed is not None:
        error = psycopg.errors.error_from_result(failed, encoding=raw.info.encoding)
        if again and isinstance(error, psycopg.errors.InvalidSqlStatementName):
            # psycopg sends DEALLOCATE ALL after a ROLLBACK on a connection where it prepared
            # statements of its own, and ours went with them. Nothing of this transaction was
            # written (it stopped at that statement and rolled back): prepare them anew.
            prepared.names.clear()
            return _exchange(raw, statements, again=False)
        raise error
    return rows


def _wait_flushed(pgconn: Any) -> None:
    """Write libpq's buffered messages out, waiting (the GIL released) while the socket is full."""
    while pgconn.flush():
        wait_on([], [pgconn.socket], [])


def _read_until_sync(pgconn: Any) -> list[Any]:
    """One result per message sent (a statement's, an error, ``PIPELINE_ABORTED`` for one
    skipped after an error, a prepare's ``COMMAND_OK``) up to the pipeline's Sync, waiting
    for the server with the GIL released."""
    from psycopg import pq

    results: list[Any] = []
    current = None
    while True:
        while pgconn.is_busy():
            wait_on([pgconn.socket], [], [])
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:  # the end of one message's results
            results.append(current)
            current = None
        elif result.status == pq.ExecStatus.PIPELINE_SYNC:
            return results
        else:
            current = result


class _Prepared:
    """The statements prepared on one connection, by text and parameter types, as psycopg
    keeps its own (the server plans them as it does those). A statement is prepared in the
    same pipeline as its first execution, and known as prepared once that Parse succeeded.
    Bounded: past ``LIMIT`` texts, or with psycopg's ``prepare_threshold`` set to None (for a
    pooler such as pgbouncer in transaction mode, which cannot keep them), statements are
    sent unnamed."""

    LIMIT = 256
    _by_connection: ClassVar[weakref.WeakKeyDictionary[Any, _Prepared]] = weakref.WeakKeyDictionary()

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self.made = 0

    @classmethod
    def of(cls, raw: Any) -> _Prepared:
        prepared = cls._by_connection.get(raw)
        if prepared is None:
            prepared = cls._by_connection[raw] = cls(raw.prepare_threshold is not None)
        return prepared

    def name(self, sql: bytes, types: Sequence[int]) -> tuple[tuple[bytes, tuple[int, ...]], bytes | None, bool]:
        """``sql`` with ``types``: its key, its prepared statement's name (None: send it
        unnamed) and whether that is a new one, to prepare in this pipeline."""
        key = (sql, tuple(types))
        name = self.names.get(key)
        if name is not None or not self.enabled or len(self.names) >= self.LIMIT:
            return key, name, False
        self.made += 1  # a new name even for a text whose earlier Parse failed: names are never reused
        return key, f"_tidegate_{self.made}".encode(), True


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
    driver connection (``_exchange``), then read each statement's rows (their
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
        results: list[list[SimpleNamespace]] = []
        for (statement, _), rows in zip(statements, _exchange(raw, statements), strict=True):
            names = statement.columns or ()
            results.append([SimpleNamespace(**dict(zip(names, row, strict=True))) for row in rows])
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
