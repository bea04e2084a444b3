"""The run monitor: nothing stays stuck because a process or the broker died.

Each round (part of every launcher tick, once a second in ``tidegate beat``):
- a RUNNING step whose heartbeat stopped lost its worker: it is retried (under its
  RetryPolicy, or ``worker_lost_retries`` times if it has none) or failed — never left RUNNING —
  and its task revoked (a worker that was only slow stops it, or at its next heartbeat);
- a RUNNING step past its ``timeout`` (plus a grace) is failed and its task revoked, for
  workers whose pool cannot enforce Celery's time limits;
- when the Redis server's identity changes (it restarted, possibly empty) every ENQUEUED
  step is sent again, and any step held by the broker longer than ``enqueued_timeout`` too;
  duplicate deliveries are harmless (claims are compare-and-set);
- a FAILURE run tagged ``tidegate/max_retries=N`` is re-executed from failure, up to N times.

After the monitor itself could not look for longer than the heartbeat timeout (the database
was away, the beat was stopped), it gives workers one heartbeat timeout to beat again before
judging them: their heartbeats failed for the same reason its checks did, and a worker that
finished a step meanwhile is still recording its outcome. A step whose failure cannot be
recorded as usual (the database refuses the run's partition key, say) is failed without
touching partition status, with the recording error in its message: never left RUNNING.

An idle round costs nothing of its own: the launcher's one-statement look (``PendingWork``)
says whether any step is RUNNING, READY or ENQUEUED and whether a run failed since the last
look for retries, and the round reads (and asks the broker) only about what exists. A lost
worker is still declared within ``heartbeat_timeout_seconds`` plus one round, a timed-out step
within its timeout plus ``timeout_grace_seconds`` plus one round, and a broker restart is seen
at the first round with a step READY or ENQUEUED (the identity is kept across idle rounds, so a
restart while idle only re-sends, harmlessly, what was sent after it). Failed runs are read
once for retries: each round reads those ended since the previous round's look, less an overlap
of ``RETRY_OVERLAP`` for transactions still committing (the first round: the last day).

Every age is judged by the database's clock, the one that wrote the heartbeats and times it
compares: a worker or beat whose host clock drifts is neither declared lost nor spared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError

from tidegate.config import MonitorConfig
from tidegate.definitions.defs import Definitions
from tidegate.definitions.op_graph import parse_step_key
from tidegate.errors import TidegateError
from tidegate.names import MAX_RETRIES_TAG, RETRY_NUMBER_TAG
from tidegate.scheduler.reexecution import submit_reexecution
from tidegate.storage.api import Storage
from tidegate.storage.control import PendingWork
from tidegate.storage.engine import is_transient
from tidegate.storage.records import StepRecord, StepRef

log = logging.getLogger("tidegate.monitor")

RUN_RETRY_ORIGIN = "run_retry"
RETRY_WINDOW = timedelta(days=1)  # failed runs older than this are not retried
# Re-read failed runs this far before the previous look: a run's ended_at is its transaction's
# time, and a transaction may commit later than that (PostgreSQL ends any idle one after 60 s).
RETRY_OVERLAP = timedelta(minutes=5)


@dataclass
class RunMonitor:
    storage: Storage
    publish: Callable[[Sequence[StepRef]], None]
    defs: Definitions | None = None
    config: MonitorConfig = field(default_factory=MonitorConfig)
    publisher: Any = None  # a CeleryPublisher, for revoke() and broker_identity()
    _broker_id: str | None = None
    _last_look: float | None = None  # time.monotonic() of the last round that read the steps
    _judge_after: float = 0.0  # time.monotonic() before which heartbeats are not judged
    _retried_through: datetime | None = None  # failed runs ended before this were read for retries

    def failed_since(self) -> datetime | None:
        """Since when failed runs are still to be read for retries (None: not known yet)."""
        return None if self._retried_through is None else self._retried_through - RETRY_OVERLAP

    def check(self, now: datetime | None = None, pending: PendingWork | None = None) -> dict[str, int]:
        """One round; ``now`` stands for the database's time (tests pass a later one).
        ``pending``, read at the start of the round, skips what it says does not exist."""
        # the database's time of this look, to remember for retries (not a time a test passed)
        looked_at = pending.now if pending is not None else (None if now is not None else self.storage.db_now())
        now = now or looked_at
        assert now is not None
        counts = {"lost": 0, "timed_out": 0, "republished": 0, "run_retries": 0}
        running = self.storage.running_steps() if pending is None or pending.running else []
        self._note_look()
        refused: DBAPIError | None = None
        for step in running:
            try:
                outcome = self._check_running(step, now)
            except DBAPIError as exc:
                if is_transient(exc):
                    raise  # the database went away: the next round looks again
                # Refused for this step (a full disk, a value it cannot hold): check the
                # others, then let the caller see the error (the next round tries again).
                log.error("step '%s' of run %s: could not be ended: %s", step.step_key, step.run_id, exc.orig)
                refused = refused or exc
                continue
            if outcome:
                counts[outcome] += 1
        if refused is not None:
            raise refused
        if pending is None or pending.ready or pending.enqueued:
            counts["republished"] = self._check_broker(now)
        if pending is None or pending.failed:
            counts["run_retries"] = self._retry_runs(now, looked_at)
        elif looked_at is not None:
            self._retried_through = looked_at  # none failed since the previous look
        return counts

    def _note_look(self) -> None:
        """After a blind spell longer than the heartbeat timeout, wait one more timeout before
        declaring any worker lost (real time: the monitor's own blindness, not the database's)."""
        looked = time.monotonic()
        timeout = self.config.heartbeat_timeout_seconds
        if self._last_look is not None and looked - self._last_look > timeout:
            log.warning(
                "the run monitor could not look for %.0fs: judging heartbeats again in %gs",
                looked - self._last_look,
                timeout,
            )
            self._judge_after = looked + timeout
        self._last_look = looked

    # -- running steps ---------------------------------------------------------------------

    def _check_running(self, step: StepRecord, now: datetime) -> str:
        if step.timeout is not None and step.started_at is not None:
            deadline = step.started_at + timedelta(seconds=step.timeout + self.config.timeout_grace_seconds)
            if now > deadline:
                error = f"TimeoutError: step '{step.step_key}' exceeded its timeout of {step.timeout:g}s"
                if self._give_up(step, error, lost=False):
                    self._revoke(step)
                    return "timed_out"
                return ""
        beat = step.heartbeat_at or step.started_at
        if time.monotonic() < self._judge_after:
            return ""
        if beat is not None and now - beat > timedelta(seconds=self.config.heartbeat_timeout_seconds):
            error = (
                f"WorkerLostError: no heartbeat from worker {step.worker} for step '{step.step_key}' "
                f"since {beat.isoformat(timespec='seconds')} (the worker died or lost the database)"
            )
            if self._give_up(step, error, lost=True):
                self._revoke(step)  # if its worker is alive after all, a prefork pool stops it now
                return "lost"
            return ""
        return ""

    def _give_up(self, step: StepRecord, error: str, *, lost: bool) -> bool:
        policy = None
        partition_keys: list[str] | None = None  # None: the run's partition, if any
        if self.defs is not None and step.asset_key in {str(k) for k in self.defs.assets}:
            asset = self.defs.get_asset(step.asset_key)
            policy = asset.retry_policy
            partition_keys = None if asset.partitions_def is not None else []
        elif self.defs is not None:  # an op step: its op's retry policy; ops have no partition status
            job = self.defs.jobs.get(self.storage.get_run(step.run_id).job_name)
            node = job.op_graph.nodes.get(parse_step_key(step.step_key)[0]) if job and job.op_graph else None
            if node is not None and job is not None:
                policy = node.op.retry_policy or job.op_retry_policy
                partition_keys = []
        allowed = policy.max_retries if policy is not None else (self.config.worker_lost_retries if lost else 0)
        retry_delay = None
        if step.attempt <= allowed:
            retry_delay = policy.delay_before(step.attempt) if policy is not None else 0.0
        try:
            ready = self.storage.fail_step(
                step.run_id,
                step.step_key,
                step.attempt,
                error=error,
                retry_delay=retry_delay,
                partition_keys=partition_keys,
            )
        except DBAPIError as exc:
            if is_transient(exc):
                raise
            # Recording it as usual is refused (e.g. the partition key): fail the step without
            # partition status, saying why, rather than leave it RUNNING for ever.
            reason = (str(exc.orig) or type(exc.orig).__name__).strip().splitlines()[0]
            error += f"\nStorageError: recording this failure as usual failed ({type(exc.orig).__name__}: {reason})"
            ready = self.storage.fail_step(
                step.run_id, step.step_key, step.attempt, error=error, retry_delay=None, partition_keys=[]
            )
        if ready is None:
            return False  # it finished (or was taken over) meanwhile
        log.warning("%s; %s", error, "retrying" if retry_delay is not None else "failed")
        self.publish(ready)
        return True

    def _revoke(self, step: StepRecord) -> None:
        if self.publisher is not None:
            self.publisher.revoke([StepRef(step.run_id, step.step_key, step.attempt, step.queue, step.display_name)])

    # -- the broker ------------------------------------------------------------------------

    def _check_broker(self, now: datetime) -> int:
        identity = self.publisher.broker_identity() if self.publisher is not None else None
        restarted = identity is not None and self._broker_id is not None and identity != self._broker_id
        if identity is not None:
            self._broker_id = identity
        if restarted:
            log.warning("the broker restarted: re-sending every ENQUEUED and READY step")
            resend = self.storage.enqueued_steps() + self.storage.steps_to_publish(now=now, grace_seconds=0)
        else:
            resend = self.storage.enqueued_steps(before=now - timedelta(seconds=self.config.enqueued_timeout_seconds))
        if resend:
            self.publish(resend)
            self.storage.touch_enqueued(resend)
        return len(resend)

    # -- run retries -----------------------------------------------------------------------

    def _retry_runs(self, now: datetime, looked_at: datetime | None) -> int:
        if self.defs is None:
            return 0
        submitted = 0
        since = now - RETRY_WINDOW
        if self._retried_through is not None:
            since = max(since, self._retried_through - RETRY_OVERLAP)
        for run in self.storage.recently_failed_runs(since=since):
            try:
                allowed = int(run.tags.get(MAX_RETRIES_TAG, "0"))
                number = int(run.tags.get(RETRY_NUMBER_TAG, "0"))
            except ValueError:
                continue
            if number >= allowed:
                continue
            try:
                result = submit_reexecution(
                    self.defs,
                    self.storage,
                    run.run_id,
                    from_failure=True,
                    origin=RUN_RETRY_ORIGIN,
                    run_key=run.run_id,
                    extra_tags={RETRY_NUMBER_TAG: str(number + 1)},
                )
            except TidegateError as exc:
                log.warning("run %s: cannot retry: %s", run.run_id, exc)
                continue
            if result.created:
                log.info("run %s failed: retry %d of %d is run %s", run.run_id, number + 1, allowed, result.run_id)
                submitted += 1
        if looked_at is not None:  # only once every run was looked at: an error re-reads them
            self._retried_through = looked_at
        return submitted
