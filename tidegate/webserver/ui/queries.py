"""Storage reads the UI needs beyond tidegate.storage's API, each one query (or a few), sized
for big instances: a page of an asset's materializations newest first, the partitions in
flight, a backfill's runs by run key, and the partition status grid as run-length rows."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from tidegate.names import PARTITION_TAG, PartitionStatus, RunStatus, StepStatus
from tidegate.storage.api import Storage
from tidegate.storage.records import MaterializationRecord, RunRecord, from_row
from tidegate.storage.schema import asset_partitions, materializations, runs, steps

# One character per partition status in the grid's run-length rows (the legend in ui.js and
# the asset page uses the same letters).
GRID_CODES = {
    PartitionStatus.MATERIALIZED: "M",
    PartitionStatus.FAILED: "F",
    PartitionStatus.MISSING: "-",
}
IN_PROGRESS_CODE = "R"
ACTIVE_RUN = (RunStatus.QUEUED, RunStatus.STARTED)


def materialization_page(
    storage: Storage, asset_key: str, *, before_id: int | None, limit: int
) -> list[MaterializationRecord]:
    """An asset's materializations, newest first, older than ``before_id`` (one indexed query)."""
    query = (
        select(materializations)
        .where(materializations.c.asset_key == asset_key)
        .order_by(materializations.c.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(materializations.c.id < before_id)
    with storage.engine.connect() as conn:
        return [from_row(MaterializationRecord, r) for r in conn.execute(query)]


def partitions_in_progress(storage: Storage, asset_key: str) -> set[str]:
    """Partitions of ``asset_key`` whose step is not finished in a queued or started run."""
    query = (
        select(runs.c.tags)
        .join(steps, steps.c.run_id == runs.c.run_id)
        .where(
            steps.c.asset_key == asset_key,
            steps.c.status.not_in(list(StepStatus.TERMINAL)),
            runs.c.status.in_(ACTIVE_RUN),
        )
    )
    with storage.engine.connect() as conn:
        tags = conn.execute(query).scalars().all()
    return {t[PARTITION_TAG] for t in tags if isinstance(t, dict) and PARTITION_TAG in t}


def partition_status_map(storage: Storage, asset_key: str) -> dict[str, str]:
    """Partition key -> its latest outcome (MATERIALIZED | FAILED): only the two columns the grid
    needs, from the (asset_key, status) index."""
    query = select(asset_partitions.c.partition_key, asset_partitions.c.status).where(
        asset_partitions.c.asset_key == asset_key
    )
    with storage.engine.connect() as conn:
        return {key: status for key, status in conn.execute(query)}


def runs_by_key(storage: Storage, origin: str) -> dict[str, RunRecord]:
    """Run key -> run, of the runs submitted with ``origin`` (a backfill's)."""
    with storage.engine.connect() as conn:
        rows = conn.execute(select(runs).where(runs.c.origin == origin)).all()
    return {r.run_key: from_row(RunRecord, r) for r in rows if r.run_key is not None}


@dataclass(frozen=True)
class PartitionGrid:
    """The partition statuses of one asset in key order, as run-length rows
    ``[[code, count], ...]`` (codes: GRID_CODES and IN_PROGRESS_CODE), with totals."""

    keys_count: int
    runs: list[list[object]]
    totals: dict[str, int]
    first_key: str | None
    last_key: str | None


_STATUS_CODES = {PartitionStatus.MATERIALIZED.value: "M", PartitionStatus.FAILED.value: "F"}


def partition_grid(keys: Sequence[str], statuses: Mapping[str, str], in_progress: set[str]) -> PartitionGrid:
    codes = [IN_PROGRESS_CODE if key in in_progress else _STATUS_CODES.get(statuses.get(key, ""), "-") for key in keys]
    rle: list[list[object]] = [[code, sum(1 for _ in group)] for code, group in itertools.groupby(codes)]
    totals: dict[str, int] = {}
    for code, count in rle:
        totals[str(code)] = totals.get(str(code), 0) + int(count)  # type: ignore[call-overload]
    return PartitionGrid(len(keys), rle, totals, keys[0] if keys else None, keys[-1] if keys else None)


class PartitionGridCache:
    """The last grids computed in this process, each valid while the asset's stored statuses
    are unchanged: checked on every request by one aggregate over the asset's rows (how many,
    the latest change), so a warm grid of 100,000 partitions costs that query, not a transfer
    of every status. Nothing is shared between processes; a miss recomputes."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._grids: dict[tuple[object, ...], PartitionGrid] = {}
        self._lock = threading.Lock()

    def grid(self, storage: Storage, asset_key: str, keys: Sequence[str]) -> PartitionGrid:
        in_progress = partitions_in_progress(storage, asset_key)
        query = select(func.count(), func.max(asset_partitions.c.updated_at)).where(
            asset_partitions.c.asset_key == asset_key
        )
        with storage.engine.connect() as conn:
            count, latest = conn.execute(query).one()
        stamp = (storage.safe_url, asset_key, count, latest, frozenset(in_progress), len(keys), *keys[:1], *keys[-1:])
        with self._lock:
            found = self._grids.get(stamp)
        if found is not None:
            return found
        grid = partition_grid(keys, partition_status_map(storage, asset_key), in_progress)
        with self._lock:
            for stale in [k for k in self._grids if k[:2] == stamp[:2]]:  # older grids of this asset
                del self._grids[stale]
            while len(self._grids) >= self.size:
                del self._grids[next(iter(self._grids))]
            self._grids[stamp] = grid
        return grid


def range_rows(keys: Sequence[str], grid: PartitionGrid, limit: int) -> list[tuple[str, str, str, int]]:
    """The grid's runs as (first key, last key, code, count), the first ``limit`` of them: the
    text equivalent of the canvas."""
    rows = []
    position = 0
    for code, count in grid.runs[:limit]:
        n = int(count)  # type: ignore[call-overload]
        rows.append((keys[position], keys[position + n - 1], str(code), n))
        position += n
    return rows


def recent_failures(storage: Storage, since: datetime, limit: int) -> list[RunRecord]:
    """Up to ``limit`` runs that failed since ``since``, newest created first: read along the
    creation-time index and stopped at ``limit`` (a count of every failure would read them all)."""
    query = (
        select(runs)
        .where(runs.c.status == RunStatus.FAILURE, runs.c.ended_at >= since)
        .order_by(runs.c.created_at.desc())
        .limit(limit)
    )
    with storage.engine.connect() as conn:
        return [from_row(RunRecord, r) for r in conn.execute(query)]


def latest_materializations(storage: Storage, asset_keys: Sequence[str]) -> dict[str, MaterializationRecord]:
    """The newest materialization of each of ``asset_keys`` (one indexed lookup per key)."""
    newest = (
        select(func.max(materializations.c.id))
        .where(materializations.c.asset_key.in_(list(asset_keys)))
        .group_by(materializations.c.asset_key)
    )
    query = select(materializations).where(materializations.c.id.in_(newest))
    with storage.engine.connect() as conn:
        return {r.asset_key: from_row(MaterializationRecord, r) for r in conn.execute(query)}


def partition_counts(storage: Storage, asset_keys: Sequence[str]) -> dict[str, dict[str, int]]:
    """asset key -> {MATERIALIZED: n, FAILED: m} for ``asset_keys`` only."""
    query = (
        select(asset_partitions.c.asset_key, asset_partitions.c.status, func.count())
        .where(asset_partitions.c.asset_key.in_(list(asset_keys)))
        .group_by(asset_partitions.c.asset_key, asset_partitions.c.status)
    )
    counts: dict[str, dict[str, int]] = {}
    with storage.engine.connect() as conn:
        for asset_key, status, count in conn.execute(query):
            counts.setdefault(asset_key, {})[status] = count
    return counts
