"""Settings read from the environment, in one place, with their defaults.

=========================  ==========================================================
TIDEGATE_HOME              where embedded state lives (default ``./.tidegate``)
TIDEGATE_DATABASE_URL      SQLAlchemy URL (default SQLite at ``$TIDEGATE_HOME/tidegate.db``)
TIDEGATE_BROKER_URL        Celery broker (default ``redis://localhost:6379/0``)
TIDEGATE_IO_BASE_DIR       the filesystem IO manager's root (``$TIDEGATE_HOME/storage``)
TIDEGATE_VISIBILITY_TIMEOUT  seconds Redis waits before redelivering an unacked step (21600)
TIDEGATE_HEARTBEAT_SECONDS   how often a running step writes its heartbeat (10)
=========================  ==========================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    broker_url: str
    io_base_dir: Path
    visibility_timeout: int
    heartbeat_seconds: float

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("TIDEGATE_HOME", ".tidegate")).resolve()
        database_url = os.environ.get("TIDEGATE_DATABASE_URL") or f"sqlite:///{home / 'tidegate.db'}"
        return cls(
            home=home,
            database_url=database_url,
            broker_url=os.environ.get("TIDEGATE_BROKER_URL", "redis://localhost:6379/0"),
            io_base_dir=Path(os.environ.get("TIDEGATE_IO_BASE_DIR", home / "storage")).resolve(),
            visibility_timeout=int(os.environ.get("TIDEGATE_VISIBILITY_TIMEOUT", "21600")),
            heartbeat_seconds=float(os.environ.get("TIDEGATE_HEARTBEAT_SECONDS", "10")),
        )
