"""Submitting backfill runs: one per partition, never more than ``max_concurrent`` in flight,
through the run queue like any run. State lives in SQL and every run is keyed by its
partition, so a beat restarted mid-backfill carries on without submitting anything twice."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tidegate.definitions.defs import Definitions
from tidegate.definitions.partitions import PartitionKeyRange
from tidegate.errors import TidegateError
from tidegate.names import ASSET_SELECTION_TAG, BACKFILL_TAG, BackfillStatus, PartitionStatus, RunStatus
from tidegate.storage.api import Storage
from tidegate.storage.backfills import BackfillRecord

log = logging.getLogger("tidegate.backfill")

# Runs one backfill submits per beat tick, so that a backfill of 100,000 partitions without a
# concurrency limit does not hold the beat (each submission is one transaction).
MAX_SUBMITTED_PER_TICK = 200


@dataclass
class BackfillDaemon:
    defs: Definitions
    storage: Storage

    def tick(self, now: datetime | None = None) -> int:
        """Submit what each requested backfill may submit now; complete finished ones."""
        now = now or datetime.now(UTC)
        submitted = 0
        for backfill in self.storage.list_backfills(status=BackfillStatus.REQUESTED, limit=1000):
            submitted += self._advance(backfill, now)
        return submitted

    def _advance(self, backfill: BackfillRecord, now: datetime) -> int:
        progress = self.storage.backfill_progress(backfill)
        runs = backfill.runs()
        remaining = [k for k in runs if k not in progress.submitted_keys]
        if not remaining:
            if progress.in_flight == 0 and self.storage.set_backfill_status(
                backfill.backfill_id, BackfillStatus.COMPLETED
            ):
                log.info("backfill %s completed", backfill.backfill_id)
            return 0
        room = len(remaining) if backfill.max_concurrent is None else backfill.max_concurrent - progress.in_flight
        submitted = 0
        for run_key in remaining[: max(0, min(room, MAX_SUBMITTED_PER_TICK))]:
            first, last = runs[run_key]
            try:
                plan = self.defs.plan(
                    backfill.job_name,
                    _selection(backfill),
                    partition_key=first if last is None else None,
                    partition_range=None if last is None else PartitionKeyRange(first, last),
                    dynamic_keys=self.storage.dynamic_partition_keys,
                    current_time=now,
                    run_config=backfill.run_config,
                )
            except TidegateError as exc:
                log.warning("backfill %s: partition %s cannot be planned: %s", backfill.backfill_id, run_key, exc)
                continue
            tags = {**backfill.tags, BACKFILL_TAG: backfill.backfill_id}
            result = self.storage.submit_run(plan, origin=backfill.origin, run_key=run_key, tags=tags)
            submitted += int(result.created)
        return submitted


def backfill_partitions(
    defs: Definitions,
    storage: Storage,
    job_name: str,
    *,
    from_key: str | None = None,
    to_key: str | None = None,
    partitions: Sequence[str] | None = None,
    all_keys: bool = False,
    missing: bool = False,
    current_time: datetime | None = None,
) -> list[str]:
    """The partitions a backfill of ``job_name`` covers, in partition order: a range, a list,
    all, or those not materialized for every partitioned asset of the job (one query per
    asset, however many partitions)."""
    job = defs.get_job(job_name)
    if job.partitions_def is None:
        raise TidegateError(f"job '{job_name}': not partitioned; nothing to backfill")
    if sum([bool(from_key or to_key), partitions is not None, all_keys, missing]) != 1:
        raise TidegateError("give exactly one of --from/--to, --partitions, --all or --missing")
    dynamic = storage.dynamic_partition_keys
    keys_now = job.partitions_def.get_partition_keys(current_time, dynamic)
    if partitions is not None:
        for key in partitions:
            job.partitions_def.validate_key(key, current_time, dynamic)
        chosen = set(partitions)
        return [k for k in keys_now if k in chosen]
    if from_key or to_key:
        if not keys_now:
            raise TidegateError(f"job '{job_name}': no partitions exist yet")
        return job.partitions_def.keys_in_range(from_key or keys_now[0], to_key or keys_now[-1], current_time, dynamic)
    if all_keys:
        return keys_now
    done: set[str] | None = None
    for asset_key in job.asset_keys:
        if defs.assets[asset_key].partitions_def is not None:
            have = storage.partitions_with_status(str(asset_key), PartitionStatus.MATERIALIZED)
            done = have if done is None else done & have
    return [k for k in keys_now if k not in (done or set())]


def create_backfill(
    defs: Definitions,
    storage: Storage,
    job_name: str,
    keys: Sequence[str],
    *,
    max_concurrent: int | None = None,
    tags: Mapping[str, str] | None = None,
    current_time: datetime | None = None,
    run_config: Any = None,
) -> BackfillRecord:
    """Record a backfill (one row); the beat submits its runs, each with ``tags``. Assets with
    ``BackfillPolicy.single_run()`` (or ``multi_run(n)``) get one run per range of partitions.
    ``run_config`` (else the job's default config) is checked now (RunConfigError, no backfill
    recorded) and given to every run."""
    ranges = defs.backfill_ranges(
        job_name, keys, dynamic_keys=storage.dynamic_partition_keys, current_time=current_time
    )
    stored = defs.check_job_config(job_name, run_config)
    return storage.create_backfill(
        job_name,
        keys,
        max_concurrent=max_concurrent,
        tags=tags,
        run_ranges=[(r.start, r.end) for r in ranges] if ranges is not None else None,
        run_config=stored,
    )


def cancel_backfill(storage: Storage, backfill_id: str) -> list[str]:
    """Stop submitting and cancel the backfill's unfinished runs; returns their ids."""
    backfill = storage.get_backfill(backfill_id)
    if not storage.set_backfill_status(backfill.backfill_id, BackfillStatus.CANCELED):
        raise TidegateError(f"backfill '{backfill.backfill_id}': already {backfill.status}")
    run_ids = storage.backfill_run_ids(backfill, statuses=[RunStatus.QUEUED, RunStatus.STARTED])
    for run_id in run_ids:
        storage.cancel_run(run_id)
    return run_ids


def _selection(backfill: BackfillRecord) -> list[str] | None:
    """The assets of its job a backfill runs (an automation tick's backfill of one asset), or
    None for the whole job."""
    raw = backfill.tags.get(ASSET_SELECTION_TAG)
    return None if raw is None else [str(k) for k in json.loads(raw)]
