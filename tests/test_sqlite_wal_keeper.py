"""On SQLite each process holds one idle connection to the database file, so that closing a
transaction's connection is not the file's last close (which checkpoints the WAL into the
database and syncs it, every transaction). Seen from outside: the WAL file stays between
transactions, and goes when the engine does."""

from __future__ import annotations

import gc
import os
from pathlib import Path

from sqlalchemy import text

from tidegate.storage.engine import make_engine


def test_the_wal_survives_a_transaction_and_goes_with_the_engine(tmp_path: Path) -> None:
    database = tmp_path / "t.db"
    engine = make_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (i INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    # Without the idle connection this close was the last: SQLite checkpointed and deleted the WAL.
    assert (tmp_path / "t.db-wal").exists()
    engine.dispose()
    del engine, conn
    gc.collect()
    assert not (tmp_path / "t.db-wal").exists()  # the last close, at last, checkpointed it


def test_a_forked_child_opens_its_own_and_leaves_its_parents_alone(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'f.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (i INTEGER)"))
    pid = os.fork()
    if pid == 0:  # the child writes through its own connections, then exits without cleanup
        code = 0
        try:
            with engine.begin() as conn:
                conn.execute(text("INSERT INTO t VALUES (1)"))
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (2)"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT i FROM t ORDER BY i")).scalars().all() == [1, 2]
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    engine.dispose()
