"""Submitting backfill runs: one per partition, never more than ``max_concurrent`` in flight,
through the run queue like any run. State lives in SQL and every run is keyed by its
partition, so a beat restarted mid-backfill carries on without submitting anything twice."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from tidegate.definitions.defs import Definitions
from tidegate.errors import TidegateError
from tidegate.names import RunStatus
from tidegate.storage.api import Storage
from tidegate.storage.backfills import BACKFILL_TAG, BackfillRecord, BackfillStatus

log = logging.getLogger("tidegate.backfill")


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
        remaining = [k for k in backfill.partition_keys if k not in progress.submitted_keys]
        if not remaining:
            if progress.in_flight == 0 and self.storage.set_backfill_status(
                backfill.backfill_id, BackfillStatus.COMPLETED
            ):
                log.info("backfill %s completed", backfill.backfill_id)
            return 0
        room = len(remaining) if backfill.max_concurrent is None else backfill.max_concurrent - progress.in_flight
        submitted = 0
        for key in remaining[: max(0, room)]:
            try:
                plan = self.defs.plan(
                    backfill.job_name,
                    partition_key=key,
                    dynamic_keys=self.storage.dynamic_partition_keys,
                    current_time=now,
                )
            except TidegateError as exc:
                log.warning("backfill %s: partition %s cannot be planned: %s", backfill.backfill_id, key, exc)
                continue
            tags = {**backfill.tags, BACKFILL_TAG: backfill.backfill_id}
            result = self.storage.submit_run(plan, origin=backfill.origin, run_key=key, tags=tags)
            submitted += int(result.created)
        return submitted


def cancel_backfill(storage: Storage, backfill_id: str) -> list[str]:
    """Stop submitting and cancel the backfill's unfinished runs; returns their ids."""
    backfill = storage.get_backfill(backfill_id)
    if not storage.set_backfill_status(backfill.backfill_id, BackfillStatus.CANCELED):
        raise TidegateError(f"backfill '{backfill.backfill_id}': already {backfill.status}")
    run_ids = storage.backfill_run_ids(backfill, statuses=[RunStatus.QUEUED, RunStatus.STARTED])
    for run_id in run_ids:
        storage.cancel_run(run_id)
    return run_ids
