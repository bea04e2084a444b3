"""The run monitor: nothing stays stuck because a process or the broker died.

Each round (part of every launcher tick):
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
from tidegate.storage.engine import is_transient
from tidegate.storage.records import StepRecord, StepRef

log = logging.getLogger("tidegate.monitor")

RUN_RETRY_ORIGIN = "run_retry"


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

    def check(self, now: datetime | None = None) -> dict[str, int]:
        """One round; ``now`` stands for the database's time (tests pass a later one)."""
        now = now or self.storage.db_now()
        counts = {"lost": 0, "timed_out": 0, "republished": 0, "run_retries": 0}
        running = self.storage.running_steps()
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
        counts["republished"] = self._check_broker(now)
        counts["run_retries"] = self._retry_runs(now)
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

    def _retry_runs(self, now: datetime) -> int:
        if self.defs is None:
            return 0
        submitted = 0
        for run in self.storage.recently_failed_runs(since=now - timedelta(days=1)):
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
        return submitted
