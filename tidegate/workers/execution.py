"""Executing one attempt of one step, the same way on a Celery worker and in-process.

claim (compare-and-set) -> load inputs through IO managers -> run the asset function under
a heartbeat -> record the outcome in one transaction -> publish the steps it made READY.

A heartbeat that finds the step no longer this attempt's (its run canceled, the attempt given
up by the run monitor) interrupts the asset: its next ``context.log`` call, input load, yielded
event or output store raises StepInterruptedError, and nothing of the attempt is recorded.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError

from tidegate.definitions.asset import DEFAULT_IO_MANAGER_KEY, AssetsDefinition
from tidegate.definitions.asset_spec import external_input_error
from tidegate.definitions.config import node_config, run_resources
from tidegate.definitions.context import AssetExecutionContext, Interruption, Resources
from tidegate.definitions.defs import Definitions
from tidegate.definitions.events import AssetOutcome, annotated_none, read_result
from tidegate.definitions.job import JobDefinition
from tidegate.definitions.key import AssetKey
from tidegate.definitions.metadata import metadata_json_default
from tidegate.definitions.partitions import AllPartitionMapping
from tidegate.definitions.retry import RetryPolicy
from tidegate.errors import AssetOutputError, TidegateError
from tidegate.names import (
    EXECUTE_STEP_TASK,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    PARTITION_TAG,
    StepStatus,
    step_task_id,
)
from tidegate.storage.api import Storage
from tidegate.storage.engine import is_transient
from tidegate.storage.records import (
    ClaimedStep,
    Continuation,
    NewEvent,
    NewMaterialization,
    StepRecord,
    StepRef,
)
from tidegate.workers.io import FilesystemIOManager, InputContext, IOManager, OutputContext

log = logging.getLogger("tidegate.worker")
asset_log = logging.getLogger("tidegate.asset")

Publish = Callable[[Sequence[StepRef]], None]
_T = TypeVar("_T")

# How long a worker keeps trying to record an outcome it already has (the database restarting,
# failing over) before leaving the step RUNNING for the run monitor, its output kept.
RECORD_OUTCOME_SECONDS = 120.0

# Whether a function is annotated ``-> None``, read once per function: ``typing.get_type_hints``
# per step was 2 % of a pool child's CPU on trivial steps. Keyed by the function object, which
# the process's definitions keep alive; bounded for processes that load many (tests).
_returns_none = functools.lru_cache(maxsize=4096)(annotated_none)

# At most this many steps run in a row by continuation before the next child goes through the
# broker again, so one delivery does not keep a worker process from the queue for long.
MAX_CONTINUED_STEPS = 16


class Outcome:
    DUPLICATE = "duplicate"  # not claimed: another delivery owns or finished it
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    LOST = "lost"  # finished, but the step had been taken away meanwhile: nothing recorded
    INTERRUPTED = "interrupted"  # stopped early because the step was taken away: nothing recorded
    UNRECORDED = "unrecorded"  # finished, but the database stayed away: left to the run monitor


@dataclass
class _Recorded:
    """What a successful attempt records in its success transaction."""

    metadata: dict[str, Any]
    events: list[NewEvent]
    materializations: list[NewMaterialization]


class ContinuedStepObserver(Protocol):
    """Told when a step run by continuation starts and ends: it has no broker delivery of its
    own, so nothing else tells Celery's monitors (Flower) about it."""

    def started(self, step: StepRecord) -> None: ...

    def finished(self, step: StepRecord, outcome: str, runtime: float) -> None: ...


@dataclass
class StepExecutor:
    """Runs steps of one code location against one storage; safe to share between threads."""

    defs: Definitions
    storage: Storage
    publish: Publish
    worker_name: str
    heartbeat_seconds: float = 10.0
    default_io_manager: IOManager | None = None
    continuation: bool = True  # TIDEGATE_CONTINUATION: ``execute``'s ``queue`` is ignored without it
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _beating: dict[int, tuple[ClaimedStep, Interruption]] = field(default_factory=dict, repr=False)
    _beater: threading.Thread | None = field(default=None, repr=False)

    def execute(
        self,
        run_id: str,
        step_key: str,
        attempt: int,
        *,
        queue: str | None = None,
        task_id: str | None = None,
        seen: ContinuedStepObserver | None = None,
    ) -> str:
        """Claim and run this attempt; returns its outcome. With ``continuation`` on and
        ``queue`` (the queue this delivery came from), a success that makes a child READY on
        that queue claims it in the same transaction and runs it next here instead of
        publishing it (a continuation), up to ``MAX_CONTINUED_STEPS`` in a row; their outcomes
        are recorded as any step's. ``task_id`` (the broker task of this delivery) is recorded
        with each continued claim: revoking a continued step terminates that task, which is
        what runs it (``CeleryPublisher.revoke``). A canceled run, or a step taken away, ends
        the chain: its next claim is the same compare-and-set as any delivery's. ``seen`` is told
        when each continued step starts and ends (the worker sends Celery's task events for it,
        so that Flower shows it as its own task)."""
        claimed = self.storage.claim_step(run_id, step_key, attempt, self.worker_name)
        if claimed is None:
            log.info("step %s of run %s attempt %d: not claimable, ignoring this delivery", step_key, run_id, attempt)
            return Outcome.DUPLICATE
        queue = queue if self.continuation else None
        outcome, following = self._run_claimed(claimed, queue, task_id)
        continued = 0
        while following is not None:
            continued += 1
            step = following.step
            next_queue = queue if continued < MAX_CONTINUED_STEPS else None
            if seen is not None:
                seen.started(step)
            began = time.monotonic()
            result, following = self._run_claimed(following, next_queue, task_id)
            if seen is not None:
                seen.finished(step, result, time.monotonic() - began)
            # A continued step has no broker task of its own: say how it ended, by its step's task id.
            log.info(
                "continued step %s[%s] in task [%s] finished: %r",
                EXECUTE_STEP_TASK,
                step_task_id(step.run_id, step.step_key, step.attempt),
                task_id,
                result,
            )
        return outcome

    def _run_claimed(
        self, claimed: ClaimedStep, queue: str | None, task_id: str | None = None
    ) -> tuple[str, ClaimedStep | None]:
        """Run a claimed attempt and record its outcome; also returns the child it claimed to
        run next (only with ``queue``, only on success)."""
        run_id, step_key, attempt = claimed.step.run_id, claimed.step.step_key, claimed.step.attempt
        captured = _CapturedLog()
        job = self.defs.jobs.get(claimed.run.job_name)
        if job is not None and job.op_graph is not None:
            return self._execute_op(claimed, job, captured, queue, task_id)
        try:
            asset = self.defs.get_asset(claimed.step.asset_key)
        except TidegateError as exc:
            # The code changed under the run: no point retrying.
            return self._record_failure(claimed, f"{exc}\n", None, captured), None
        partition_keys: list[str] = []
        interruption = Interruption()
        try:
            partition_keys = self._partition_keys(claimed, asset)
            with self._heartbeat(claimed, interruption):
                recorded = self._run_asset(claimed, asset, captured, partition_keys, interruption)
        except Exception as exc:
            if interruption.is_set():
                log.warning("%s; nothing recorded (%s)", interruption.reason, type(exc).__name__)
                return Outcome.INTERRUPTED, None
            error = traceback.format_exc()
            if type(exc).__name__ == "SoftTimeLimitExceeded":  # Celery enforcing @asset(timeout=)
                error += f"TimeoutError: step '{step_key}' exceeded its timeout of {asset.timeout:g}s\n"
            return self._record_failure(claimed, error, asset, captured, partition_keys), None
        try:
            done = self._record(
                claimed,
                lambda: self._complete(
                    claimed,
                    queue,
                    task_id,
                    metadata=recorded.metadata,
                    events_=[*captured.events, *recorded.events],
                    partition_keys=partition_keys,
                    materializations_=recorded.materializations,
                ),
            )
        except _Unrecorded as exc:
            return exc.outcome, None
        except DBAPIError as exc:
            # The database refuses this outcome (not a passing failure): the step fails with why.
            return self._record_unrecordable(claimed, exc), None
        if done is None:
            log.warning(
                "step %s of run %s attempt %d: finished after losing ownership; outcome not recorded",
                step_key,
                run_id,
                attempt,
            )
            return Outcome.LOST, None
        ready, following = done
        if ready:
            self.publish(ready)
        return Outcome.SUCCEEDED, following

    def _complete(
        self, claimed: ClaimedStep, queue: str | None, task_id: str | None, **outcome: Any
    ) -> tuple[list[StepRef], ClaimedStep | None] | None:
        """The success transaction: ``Storage.complete_step``, or with ``queue``
        ``complete_step_and_claim`` (a continuation on that queue)."""
        step = claimed.step
        if queue is None:
            ready = self.storage.complete_step(
                step.run_id,
                step.step_key,
                step.attempt,
                asset_key=step.asset_key,
                downstream=step.downstream,
                **outcome,
            )
            return None if ready is None else (ready, None)
        return self.storage.complete_step_and_claim(
            step.run_id,
            step.step_key,
            step.attempt,
            continuation=Continuation(self.worker_name, queue, claimed.run),
            delivery=task_id,
            asset_key=step.asset_key,
            downstream=step.downstream,
            **outcome,
        )

    def _execute_op(
        self,
        claimed: ClaimedStep,
        job: JobDefinition,
        captured: _CapturedLog,
        queue: str | None,
        task_id: str | None = None,
    ) -> tuple[str, ClaimedStep | None]:
        """One attempt of an op step: the same claim, heartbeat, recording and retries as an
        asset's; its success also plans a dynamic output's mapped steps (see op_execution)."""
        from tidegate.workers.op_execution import OpStepRun

        step = claimed.step
        interruption = Interruption()
        try:
            op_run = OpStepRun(self, claimed, job, captured, interruption)
        except TidegateError as exc:  # the code changed under the run
            return self._record_failure(claimed, f"{exc}\n", None, captured), None
        try:
            with self._heartbeat(claimed, interruption):
                done = op_run.run()
        except Exception as exc:
            if interruption.is_set():
                log.warning("%s; nothing recorded (%s)", interruption.reason, type(exc).__name__)
                return Outcome.INTERRUPTED, None
            error = traceback.format_exc()
            if type(exc).__name__ == "SoftTimeLimitExceeded":
                error += f"TimeoutError: step '{step.step_key}' exceeded its timeout of {op_run.op.timeout:g}s\n"
            return self._record_failure(claimed, error, None, captured, retry_policy=op_run.retry_policy), None
        try:
            recorded = self._record(
                claimed,
                lambda: self._complete(
                    claimed,
                    queue,
                    task_id,
                    metadata=None,
                    events_=[*captured.events, *done.events],
                    planned=done.planned,
                    more_upstream=done.more_upstream,
                    skip=done.skip,
                    skip_reason=done.skip_reason,
                ),
            )
        except _Unrecorded as exc:
            return exc.outcome, None
        except DBAPIError as exc:
            return self._record_unrecordable(claimed, exc), None
        if recorded is None:
            return Outcome.LOST, None
        ready, following = recorded
        if ready:
            self.publish(ready)
        return Outcome.SUCCEEDED, following

    def _record(self, claimed: ClaimedStep, write: Callable[[], _T]) -> _T:
        """Run ``write`` (one storage transaction recording this attempt's outcome), retrying
        while the database is unreachable for up to ``RECORD_OUTCOME_SECONDS``: the work is
        done, so wait for the database rather than throw it away. Past that, raise
        ``_Unrecorded``: the step stays RUNNING and the run monitor ends it (the IO manager's
        output stays where it was stored). A refusal that retrying cannot cure is re-raised."""
        step = claimed.step
        deadline = time.monotonic() + RECORD_OUTCOME_SECONDS
        pause = 0.2
        while True:
            try:
                return write()
            except DBAPIError as exc:
                if not is_transient(exc):
                    raise
                if time.monotonic() + pause > deadline:
                    log.error(
                        "step %s of run %s attempt %d: outcome not recorded, the database stayed unreachable for "
                        "%gs; the run monitor ends the step (its output is kept): %s",
                        step.step_key,
                        step.run_id,
                        step.attempt,
                        RECORD_OUTCOME_SECONDS,
                        _first_line(exc),
                    )
                    raise _Unrecorded(Outcome.UNRECORDED) from exc
                log.warning(
                    "step %s of run %s attempt %d: database unreachable, recording the outcome again in %.1fs: %s",
                    step.step_key,
                    step.run_id,
                    step.attempt,
                    pause,
                    _first_line(exc),
                )
                time.sleep(pause)
                pause = min(2.0, pause * 2)

    def _record_unrecordable(self, claimed: ClaimedStep, exc: DBAPIError) -> str:
        """The database refused to record the outcome (a value it cannot hold, a full disk):
        fail the step with that error, in a transaction that writes nothing else. If even that
        is refused, the step stays RUNNING and the run monitor fails it at its heartbeat timeout."""
        step = claimed.step
        error = f"{traceback.format_exc()}StorageError: the outcome of step '{step.step_key}' could not be recorded: "
        error += f"{_first_line(exc)}\n"
        log.error("step %s of run %s: outcome not recorded: %s", step.step_key, step.run_id, _first_line(exc))
        try:
            ready = self._record(
                claimed,
                lambda: self.storage.fail_step(
                    step.run_id, step.step_key, step.attempt, error=error, retry_delay=None, partition_keys=[]
                ),
            )
        except (_Unrecorded, DBAPIError) as again:
            log.error(
                "step %s of run %s: its failure could not be recorded either (%s): the run monitor ends it",
                step.step_key,
                step.run_id,
                _first_line(again),
            )
            return Outcome.UNRECORDED
        if ready is None:
            return Outcome.LOST
        self.publish(ready)
        return Outcome.FAILED

    # -- the asset call --------------------------------------------------------------------

    def _partition_keys(self, claimed: ClaimedStep, asset: AssetsDefinition) -> list[str]:
        """The partitions this step materializes: the run's one key, or every key of the run's
        range (a single-run backfill); none for an unpartitioned asset."""
        tags = claimed.run.tags
        if asset.partitions_def is None:
            return []
        if PARTITION_TAG in tags:
            return [tags[PARTITION_TAG]]
        if PARTITION_RANGE_START_TAG in tags and PARTITION_RANGE_END_TAG in tags:
            return asset.partitions_def.keys_in_range(
                tags[PARTITION_RANGE_START_TAG],
                tags[PARTITION_RANGE_END_TAG],
                dynamic_keys=self.storage.dynamic_partition_keys,
            )
        return []

    def _run_asset(
        self,
        claimed: ClaimedStep,
        asset: AssetsDefinition,
        captured: _CapturedLog,
        partition_keys: list[str],
        interruption: Interruption,
    ) -> _Recorded:
        run, step = claimed.run, claimed.step
        resources = run_resources(self.defs.resources, run.run_config)
        configured = node_config(run.run_config, asset.node_name, asset.config_type)
        kwargs: dict[str, Any] = {}
        for param, upstream_key in asset.inputs.items():
            interruption.raise_if_set()
            try:
                kwargs[param] = self._load_input(asset, param, upstream_key, partition_keys, run.run_id, step.step_key)
            except Exception as exc:
                error = external_input_error(asset.key, param, self.defs.assets.get(upstream_key), exc)
                if error is None:
                    raise
                raise error from exc
        for param in asset.resource_params:
            if param in resources:
                kwargs[param] = resources[param]
        if asset.config_type is not None:
            kwargs["config"] = configured.config
        context = AssetExecutionContext(
            run_id=run.run_id,
            asset_key=asset.key,
            job_name=run.job_name,
            tags=dict(run.tags),
            resources=Resources(resources),
            log=captured.logger(asset.key, interruption),
            attempt=step.attempt,
            partition_keys=tuple(partition_keys),
            partitions_def=asset.partitions_def,
            interruption=interruption,
            op_config=configured.op_config,
        )
        if asset.context_param is not None:
            kwargs[asset.context_param] = context
        outcome = read_result(
            asset.key, asset.fn(**kwargs), returns_none=_returns_none(asset.fn), checkpoint=interruption.raise_if_set
        )
        interruption.raise_if_set()  # returned after being told to stop: store nothing
        metadata = {**context.metadata, **outcome.metadata}
        if outcome.stores_value:
            metadata.update(self._store_value(asset, claimed, partition_keys, outcome.value, interruption))
        return _Recorded(_jsonable(metadata), _observation_events(outcome), _runtime_materializations(outcome))

    def _store_value(
        self,
        asset: AssetsDefinition,
        claimed: ClaimedStep,
        partition_keys: list[str],
        value: Any,
        interruption: Interruption,
    ) -> dict[str, Any]:
        """Hand the value (None included) to the asset's IO manager; returns metadata to record."""
        run_id, step_key = claimed.run.run_id, claimed.step.step_key
        manager = self._io_manager(asset.io_manager_key)
        if len(partition_keys) <= 1:
            out = OutputContext(asset.key, run_id, step_key, partition_keys[0] if partition_keys else None)
            manager.handle_output(out, value)
            return out.metadata
        # A range of partitions in one run: the asset returns a value per partition.
        if value is None:
            value = dict.fromkeys(partition_keys)
        if not isinstance(value, Mapping) or set(value) != set(partition_keys):
            got = sorted(value)[:5] if isinstance(value, Mapping) else type(value).__name__
            raise AssetOutputError(
                f"asset '{asset.key}': a run over partitions {partition_keys[0]}..{partition_keys[-1]} must return "
                f"a dict with one value per partition ({len(partition_keys)} keys), None (stored for each) or a "
                f"MaterializeResult; got {got}"
            )
        for key in partition_keys:
            interruption.raise_if_set()
            manager.handle_output(OutputContext(asset.key, run_id, step_key, key), value[key])
        return {"partitions": len(partition_keys)}

    def _load_input(
        self,
        asset: AssetsDefinition,
        param: str,
        upstream_key: AssetKey,
        partition_keys: list[str],
        run_id: str,
        step_key: str,
    ) -> Any:
        try:
            return self._load_upstream(asset, upstream_key, partition_keys, run_id, step_key)
        except Exception as exc:
            upstream = self.defs.assets.get(upstream_key)
            if upstream is not None and _returns_none(upstream.fn):
                exc.add_note(
                    f"asset '{asset.key}': parameter {param!r} loads asset '{upstream_key}', which is annotated "
                    "'-> None', so its IO manager stored nothing: depend on it with deps=[...] instead, or drop "
                    "the annotation to have its None stored"
                )
            raise

    def _load_upstream(
        self,
        asset: AssetsDefinition,
        upstream_key: AssetKey,
        partition_keys: list[str],
        run_id: str,
        step_key: str,
    ) -> Any:
        """One value, or for a partitioned upstream read through a many-partition mapping
        (time window, all partitions) or over a range of partitions, a dict of partition
        key -> value."""
        upstream = self.defs.assets.get(upstream_key)
        manager = self._io_manager(upstream.io_manager_key if upstream else DEFAULT_IO_MANAGER_KEY)
        if upstream is None or upstream.partitions_def is None:
            return manager.load_input(InputContext(upstream_key, run_id, step_key))
        mapping = asset.partition_mappings.get(upstream_key)
        if mapping is None and asset.partitions_def is not None:
            if len(partition_keys) == 1:
                return manager.load_input(InputContext(upstream_key, run_id, step_key, partition_keys[0]))
            return {k: manager.load_input(InputContext(upstream_key, run_id, step_key, k)) for k in partition_keys}
        mapping = mapping or AllPartitionMapping()
        wanted: dict[str, None] = {}
        for downstream_key in list[str | None](partition_keys) or [None]:
            for key in mapping.upstream_keys(
                downstream_key,
                asset.partitions_def,
                upstream.partitions_def,
                dynamic_keys=self.storage.dynamic_partition_keys,
            ):
                wanted[key] = None
        return {k: manager.load_input(InputContext(upstream_key, run_id, step_key, k)) for k in wanted}

    def _io_manager(self, key: str) -> IOManager:
        manager = self.defs.resources.get(key)
        if manager is not None:
            return manager  # type: ignore[no-any-return]
        if key != DEFAULT_IO_MANAGER_KEY:
            raise TidegateError(f"io manager '{key}': no resource of that name")
        with self._lock:
            if self.default_io_manager is None:
                self.default_io_manager = FilesystemIOManager()
            return self.default_io_manager

    # -- failure and retry -----------------------------------------------------------------

    def _record_failure(
        self,
        claimed: ClaimedStep,
        error: str,
        asset: AssetsDefinition | None,
        captured: _CapturedLog,
        partition_keys: Sequence[str] = (),
        retry_policy: RetryPolicy | None = None,
    ) -> str:
        step = claimed.step
        policy = asset.retry_policy if asset is not None else retry_policy
        job = self.defs.jobs.get(claimed.run.job_name)
        if policy is None and asset is not None and job is not None:
            policy = job.op_retry_policy
        retry_delay = None
        if policy is not None and step.attempt <= policy.max_retries:
            retry_delay = policy.delay_before(step.attempt)  # due by the database's clock
        try:
            ready = self._record(
                claimed,
                lambda: self.storage.fail_step(
                    step.run_id,
                    step.step_key,
                    step.attempt,
                    error=error,
                    retry_delay=retry_delay,
                    events_=captured.events,
                    asset_key=step.asset_key,
                    partition_keys=partition_keys,
                ),
            )
        except _Unrecorded as exc:
            return exc.outcome
        except DBAPIError as exc:
            return self._record_unrecordable(claimed, exc)
        if ready is None:
            return Outcome.LOST
        self.publish(ready)
        return Outcome.RETRYING if retry_delay is not None else Outcome.FAILED

    # -- heartbeat -------------------------------------------------------------------------

    @contextmanager
    def _heartbeat(self, claimed: ClaimedStep, interruption: Interruption) -> Iterator[None]:
        """Beat at least every ``heartbeat_seconds`` while the asset runs. One thread per
        executor (so per worker process) beats all its running steps; it starts with the first
        and ends when a round finds none. A beat that finds a step no longer this attempt's
        (run canceled, attempt given up by the run monitor) sets its ``interruption`` and stops
        beating it."""
        key = id(interruption)
        with self._lock:
            self._beating[key] = (claimed, interruption)
            if self._beater is None:
                self._beater = threading.Thread(target=self._beat_loop, name="tidegate-heartbeat", daemon=True)
                self._beater.start()
        try:
            yield
        finally:
            with self._lock:
                self._beating.pop(key, None)

    def _beat_loop(self) -> None:
        while True:
            time.sleep(self.heartbeat_seconds)
            with self._lock:
                if not self._beating:
                    self._beater = None  # the next step starts another
                    return
                round_ = list(self._beating.items())
            for key, (claimed, interruption) in round_:
                with self._lock:
                    if key not in self._beating:
                        continue  # ended meanwhile
                step = claimed.step
                try:
                    owned = self.storage.heartbeat(step.run_id, step.step_key, step.attempt)
                except Exception as exc:  # the database may be briefly away; the next beat retries
                    log.warning(
                        "heartbeat for step %s of run %s failed: %s", step.step_key, step.run_id, _first_line(exc)
                    )
                    log.debug("heartbeat failure", exc_info=True)
                    continue
                if not owned:
                    with self._lock:
                        if self._beating.get(key) is None:
                            continue  # it ended and recorded meanwhile: nothing to interrupt
                        del self._beating[key]
                    interruption.set(self._interruption_reason(claimed))
                    log.warning("%s: stopping it", interruption.reason)

    def _interruption_reason(self, claimed: ClaimedStep) -> str:
        step = claimed.step
        what = f"step '{step.step_key}' of run {step.run_id} attempt {step.attempt}"
        try:
            now = next(s for s in self.storage.get_steps(step.run_id) if s.step_key == step.step_key)
        except Exception:
            return f"{what} no longer owns its step"
        if now.status == StepStatus.CANCELED:
            return f"{what}: its run was canceled"
        return f"{what} was given up by the run monitor (the step is now {now.status}, attempt {now.attempt})"


class _Unrecorded(Exception):
    """The outcome could not be recorded in time; ``outcome`` is what ``execute`` returns."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"


class _CapturedLog:
    """Collects what an asset logs through ``context.log`` (INFO and above) as events of its
    step. Not a ``logging.Handler``: a handler per step costs a lock, a registration in the
    logging module and its removal (measured with the loggers' cache clearing below: 3 % of
    a pool child's CPU on trivial steps); the step's logger records into ``events`` itself."""

    def __init__(self) -> None:
        self.events: list[NewEvent] = []

    def logger(self, key: AssetKey | str, interruption: Interruption) -> logging.Logger:
        # A logger outside the registry (so none leaks per step) that still propagates. Its
        # level is set as an attribute: ``setLevel`` would clear the cache of every logger of
        # the process, and this one is in no cache.
        logger = _StepLogger(f"tidegate.asset.{key}", interruption, self.events)
        logger.parent = asset_log
        logger.level = logging.DEBUG
        return logger


class _StepLogger(logging.Logger):
    """``context.log``: every call first raises StepInterruptedError if the step was taken away;
    each record of INFO and above becomes a LOG event of the step, then goes to the handlers of
    ``tidegate.asset`` and its ancestors as any record does."""

    def __init__(self, name: str, interruption: Interruption, events: list[NewEvent]) -> None:
        super().__init__(name)
        self._interruption = interruption
        self._events = events

    def _log(self, *args: Any, **kwargs: Any) -> None:
        self._interruption.raise_if_set()
        super()._log(*args, **kwargs)

    def callHandlers(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.INFO:
            self._events.append(NewEvent("LOG", record.getMessage(), {"level": record.levelname}))
        # The ancestors' handlers, as Logger.callHandlers would call them after this logger's own
        # (it has none); never logging's last resort, as when the step's handler was attached here.
        logger: logging.Logger | None = self.parent
        while logger is not None:
            for handler in logger.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
            logger = logger.parent if logger.propagate else None


def _observation_events(outcome: AssetOutcome) -> list[NewEvent]:
    return [
        NewEvent(
            "ASSET_OBSERVATION",
            str(o.asset_key),
            {"metadata": _jsonable(o.metadata), "partition": o.partition, "description": o.description},
        )
        for o in outcome.observations
    ]


def _runtime_materializations(outcome: AssetOutcome) -> list[NewMaterialization]:
    return [
        NewMaterialization(str(m.asset_key), m.partition, _jsonable(m.metadata), m.description)
        for m in outcome.materializations
    ]


def _jsonable(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata is stored as JSON: a MetadataValue as its tagged object, values JSON cannot
    hold otherwise as their str()."""
    if not metadata:
        return {}
    return json.loads(json.dumps(dict(metadata), default=metadata_json_default))  # type: ignore[no-any-return]
