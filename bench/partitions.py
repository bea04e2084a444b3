"""Partition bookkeeping at 100,000 partitions: ``python bench/partitions.py`` (``make bench``).

One asset, ``HourlyPartitionsDefinition`` from 2014-06-01 (about 100,000 hourly partitions at
the fixed "now" 2025-11-05 00:00 UTC), of which a random 90% (seed 7) are materialized. Set up
directly in SQL, unmeasured: one ``materializations`` row and one ``asset_partitions`` row per
materialized partition, as the workers leave them.

Measured, on SQLite (a file) and PostgreSQL (database ``tidegate_bench_partitions``, created
and dropped), each in a fresh Python process so that the per-process tick cache starts cold:

* missing: ``backfill_partitions(..., missing=True)``, the code path of
  ``tidegate backfill JOB --missing``: list the partition keys, read the materialized ones
  (one query), subtract.
* create: ``create_backfill(...)`` of those ~10,000 partitions: one backfills row.
* the same two again in the same process (warm cache).

Baseline, measured in the same process run: the naive approach: every key from a cron walk
(croniter ``get_next`` per partition), every materialization row of the asset read and
compared, and a backfill stored as one INSERT per partition.

SQL round trips are counted with SQLAlchemy's ``before_cursor_execute`` event (an
``executemany`` counts once); peak RSS is this process's ``ru_maxrss``.
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_DATABASE = "tidegate_bench_partitions"
NOW = datetime(2025, 11, 5, tzinfo=UTC)
START = "2014-06-01-00:00"
SHARE_MATERIALIZED = 0.9
SEED = 7
AIM_SECONDS = 2.0

DEFS_SOURCE = f"""
import tidegate as tg

hourly = tg.HourlyPartitionsDefinition(start_date={START!r})


@tg.asset(partitions_def=hourly)
def readings(context: tg.AssetExecutionContext) -> None:
    return None


defs = tg.Definitions(assets=[readings], jobs=[tg.define_asset_job("readings_job", "readings")])
"""


def _load_defs(path: Path) -> Any:
    from tidegate.definitions.loading import CodeLocation

    return CodeLocation(file=str(path)).load()


class RoundTrips:
    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        self.count += 1


def seed(url: str, defs_path: Path) -> int:
    """Materialize a random 90% of the partitions directly in SQL; returns how many."""
    from sqlalchemy import insert

    from tidegate.names import PartitionStatus
    from tidegate.storage.api import Storage
    from tidegate.storage.schema import asset_partitions, materializations

    defs = _load_defs(defs_path)
    keys = defs.get_job("readings_job").partitions_def.get_partition_keys(NOW)
    chosen = random.Random(SEED).sample(keys, int(len(keys) * SHARE_MATERIALIZED))
    storage = Storage.open(url, upgrade=True)
    stamp = datetime(2025, 11, 5, tzinfo=UTC)
    with storage.engine.begin() as conn:
        for i in range(0, len(chosen), 5000):
            part = chosen[i : i + 5000]
            conn.execute(
                insert(materializations),
                [
                    dict(
                        asset_key="readings",
                        partition_key=k,
                        run_id="seed",
                        step_key="readings",
                        metadata={},
                        timestamp=stamp,
                    )
                    for k in part
                ],
            )
            conn.execute(
                insert(asset_partitions),
                [
                    dict(
                        asset_key="readings",
                        partition_key=k,
                        status=PartitionStatus.MATERIALIZED,
                        run_id="seed",
                        updated_at=stamp,
                    )
                    for k in part
                ],
            )
    storage.dispose()
    return len(chosen)


def measure(url: str, defs_path: Path) -> dict[str, Any]:
    """In this (fresh) process: tidegate's path cold and warm, then the naive baseline."""
    from tidegate.scheduler.backfill import backfill_partitions, create_backfill
    from tidegate.storage.api import Storage

    defs = _load_defs(defs_path)
    storage = Storage.open(url)
    trips = RoundTrips(storage.engine)
    result: dict[str, Any] = {}
    for label in ("cold", "warm"):
        before, started = trips.count, time.perf_counter()
        missing = backfill_partitions(defs, storage, "readings_job", missing=True, current_time=NOW)
        middle, middle_trips = time.perf_counter(), trips.count
        record = create_backfill(defs, storage, "readings_job", missing, current_time=NOW)
        ended = time.perf_counter()
        result[label] = {
            "missing_s": middle - started,
            "missing_trips": middle_trips - before,
            "create_s": ended - middle,
            "create_trips": trips.count - middle_trips,
            "missing": len(missing),
            "stored": len(record.partition_keys),
        }
    result["naive"] = naive(storage, trips)
    if result["naive"]["missing"] != result["cold"]["missing"]:
        raise SystemExit(f"naive and tidegate disagree: {result['naive']['missing']} vs {result['cold']['missing']}")
    result["partitions"] = len(defs.get_job("readings_job").partitions_def.get_partition_keys(NOW))
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    storage.dispose()
    return result


def naive(storage: Any, trips: RoundTrips) -> dict[str, Any]:
    """The straightforward way: walk the cron per partition, read every materialization,
    store one row per backfilled partition."""
    from croniter import croniter
    from sqlalchemy import Column, MetaData, String, Table, insert, select

    from tidegate.storage.schema import materializations

    before, started = trips.count, time.perf_counter()
    walk = croniter("0 * * * *", datetime.strptime(START, "%Y-%m-%d-%H:%M"))
    keys = []
    start = datetime.strptime(START, "%Y-%m-%d-%H:%M")
    tick = start
    limit = NOW.replace(tzinfo=None)
    while True:
        following = walk.get_next(datetime)
        if following > limit:
            break
        keys.append(tick.strftime("%Y-%m-%d-%H:%M"))
        tick = following
    with storage.engine.connect() as conn:
        rows = conn.execute(select(materializations).where(materializations.c.asset_key == "readings")).all()
    done = {r.partition_key for r in rows}
    missing = [k for k in keys if k not in done]
    middle, middle_trips = time.perf_counter(), trips.count
    table = Table(
        "naive_backfill_partitions",
        MetaData(),
        Column("backfill_id", String(64)),
        Column("partition_key", String(255)),
    )
    table.create(storage.engine, checkfirst=True)
    with storage.engine.begin() as conn:
        for key in missing:
            conn.execute(insert(table).values(backfill_id="naive", partition_key=key))
    ended = time.perf_counter()
    return {
        "missing_s": middle - started,
        "missing_trips": middle_trips - before,
        "create_s": ended - middle,
        "create_trips": trips.count - middle_trips,
        "missing": len(missing),
    }


def _pg_database(action: str) -> str:
    import psycopg

    admin = PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        if action == "create":
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{PG_DATABASE}"


def _child(mode: str, url: str, defs_path: str) -> None:
    if mode == "seed":
        print(json.dumps({"seeded": seed(url, Path(defs_path))}))
    else:
        print(json.dumps(measure(url, Path(defs_path))))


def _in_fresh_process(mode: str, url: str, defs_path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, url, str(defs_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} on {url} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    import importlib.metadata

    import sqlalchemy

    print("bench/partitions.py: missing partitions and backfill creation at 100,000 hourly partitions")
    print(
        f"conditions: {platform.python_implementation()} {platform.python_version()}, "
        f"SQLAlchemy {sqlalchemy.__version__}, croniter {importlib.metadata.version('croniter')}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, now={NOW:%Y-%m-%d %H:%M} UTC, "
        f"{SHARE_MATERIALIZED:.0%} materialized (seed {SEED}); each database measured in a fresh process"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        defs_path = Path(tmp) / "partitions_defs.py"
        defs_path.write_text(DEFS_SOURCE)
        targets = [("SQLite", f"sqlite:///{tmp}/bench.db")]
        try:
            targets.append(("PostgreSQL", _pg_database("create")))
        except Exception as exc:
            print(f"PostgreSQL skipped: {exc}")
        for name, url in targets:
            seeded = _in_fresh_process("seed", url, defs_path)["seeded"]
            rows.append((name, seeded, _in_fresh_process("measure", url, defs_path)))
        if len(targets) > 1:
            _pg_database("drop")
    print()
    header = f"{'database':<11}{'path':<18}{'missing':>10}{'trips':>7}{'create':>10}{'trips':>8}{'missing n':>11}"
    print(header)
    print("-" * len(header))
    for name, seeded, r in rows:
        for label, title in (("cold", "tidegate, cold"), ("warm", "tidegate, warm"), ("naive", "naive baseline")):
            m = r[label]
            print(
                f"{name:<11}{title:<18}{m['missing_s'] * 1000:>8.0f}ms{m['missing_trips']:>7}"
                f"{m['create_s'] * 1000:>8.0f}ms{m['create_trips']:>8}{m['missing']:>11}"
            )
        cold, base = r["cold"], r["naive"]
        print(
            f"{'':<11}partitions {r['partitions']}, materialized {seeded}; "
            f"missing {base['missing_s'] / cold['missing_s']:.1f}x faster than naive, "
            f"create {base['create_s'] / cold['create_s']:.0f}x faster with {cold['create_trips']} round trip(s) "
            f"vs {base['create_trips']}; aim < {AIM_SECONDS:.0f} s each: "
            f"{'met' if cold['missing_s'] < AIM_SECONDS and cold['create_s'] < AIM_SECONDS else 'NOT met'}; "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
