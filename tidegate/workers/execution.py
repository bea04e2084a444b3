"""Executing one attempt of one step, the same way on a Celery worker and in-process.

claim (compare-and-set) -> load inputs through IO managers -> run the asset function under
a heartbeat -> record the outcome in one transaction -> publish the steps it made READY.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tidegate.definitions.asset import DEFAULT_IO_MANAGER_KEY, AssetsDefinition
from tidegate.definitions.context import AssetExecutionContext, MaterializeResult, Resources
from tidegate.definitions.defs import Definitions
from tidegate.definitions.key import AssetKey
from tidegate.definitions.partitions import AllPartitionMapping
from tidegate.errors import TidegateError
from tidegate.names import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, PARTITION_TAG
from tidegate.storage.api import Storage
from tidegate.storage.records import ClaimedStep, NewEvent, StepRef
from tidegate.workers.io import FilesystemIOManager, InputContext, IOManager, OutputContext

log = logging.getLogger("tidegate.worker")
asset_log = logging.getLogger("tidegate.asset")

Publish = Callable[[Sequence[StepRef]], None]


class Outcome:
    DUPLICATE = "duplicate"  # not claimed: another delivery owns or finished it
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    LOST = "lost"  # finished, but the step had been taken away meanwhile: nothing recorded


@dataclass
class StepExecutor:
    """Runs steps of one code location against one storage; safe to share between threads."""

    defs: Definitions
    storage: Storage
    publish: Publish
    worker_name: str
    heartbeat_seconds: float = 10.0
    default_io_manager: IOManager | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def execute(self, run_id: str, step_key: str, attempt: int) -> str:
        claimed = self.storage.claim_step(run_id, step_key, attempt, self.worker_name)
        if claimed is None:
            log.info("step %s of run %s attempt %d: not claimable, ignoring this delivery", step_key, run_id, attempt)
            return Outcome.DUPLICATE
        captured = _CapturedLog()
        try:
            asset = self.defs.get_asset(claimed.step.asset_key)
        except TidegateError as exc:
            # The code changed under the run: no point retrying.
            return self._record_failure(claimed, f"{exc}\n", None, captured)
        partition_keys: list[str] = []
        try:
            partition_keys = self._partition_keys(claimed, asset)
            with self._heartbeat(claimed):
                metadata = self._run_asset(claimed, asset, captured, partition_keys)
        except Exception as exc:
            error = traceback.format_exc()
            if type(exc).__name__ == "SoftTimeLimitExceeded":  # Celery enforcing @asset(timeout=)
                error += f"TimeoutError: step '{step_key}' exceeded its timeout of {asset.timeout:g}s\n"
            return self._record_failure(claimed, error, asset, captured, partition_keys)
        ready = self.storage.complete_step(
            run_id,
            step_key,
            attempt,
            asset_key=claimed.step.asset_key,
            metadata=metadata,
            events_=captured.events,
            partition_keys=partition_keys,
        )
        if ready is None:
            log.warning(
                "step %s of run %s attempt %d: finished after losing ownership; outcome not recorded",
                step_key,
                run_id,
                attempt,
            )
            return Outcome.LOST
        self.publish(ready)
        return Outcome.SUCCEEDED

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
        self, claimed: ClaimedStep, asset: AssetsDefinition, captured: _CapturedLog, partition_keys: list[str]
    ) -> dict[str, Any] | None:
        run, step = claimed.run, claimed.step
        resources = {k: v for k, v in self.defs.resources.items()}
        kwargs: dict[str, Any] = {}
        for param, upstream_key in asset.inputs.items():
            kwargs[param] = self._load_input(asset, upstream_key, partition_keys, run.run_id, step.step_key)
        for param in asset.resource_params:
            if param in resources:
                kwargs[param] = resources[param]
        context = AssetExecutionContext(
            run_id=run.run_id,
            asset_key=asset.key,
            job_name=run.job_name,
            tags=dict(run.tags),
            resources=Resources(resources),
            log=captured.logger(asset.key),
            attempt=step.attempt,
            partition_keys=tuple(partition_keys),
            partitions_def=asset.partitions_def,
        )
        if asset.context_param is not None:
            kwargs[asset.context_param] = context
        result = asset.fn(**kwargs)
        if isinstance(result, MaterializeResult):
            return _jsonable({**context.metadata, **result.metadata})
        if result is None:
            return _jsonable(context.metadata)
        manager = self._io_manager(asset.io_manager_key)
        if len(partition_keys) <= 1:
            out = OutputContext(asset.key, run.run_id, step.step_key, partition_keys[0] if partition_keys else None)
            manager.handle_output(out, result)
            return _jsonable({**context.metadata, **out.metadata})
        # A range of partitions in one run: the asset returns a value per partition.
        if not isinstance(result, Mapping) or set(result) != set(partition_keys):
            got = sorted(result)[:5] if isinstance(result, Mapping) else type(result).__name__
            raise TidegateError(
                f"asset '{asset.key}': a run over partitions {partition_keys[0]}..{partition_keys[-1]} must return "
                f"a dict with one value per partition ({len(partition_keys)} keys), or None / MaterializeResult; "
                f"got {got}"
            )
        for key in partition_keys:
            manager.handle_output(OutputContext(asset.key, run.run_id, step.step_key, key), result[key])
        return _jsonable({**context.metadata, "partitions": len(partition_keys)})

    def _load_input(
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
    ) -> str:
        step = claimed.step
        policy = asset.retry_policy if asset is not None else None
        retry_delay = None
        if policy is not None and step.attempt <= policy.max_retries:
            retry_delay = policy.delay_before(step.attempt)  # due by the database's clock
        ready = self.storage.fail_step(
            step.run_id,
            step.step_key,
            step.attempt,
            error=error,
            retry_delay=retry_delay,
            events_=captured.events,
            asset_key=step.asset_key,
            partition_keys=partition_keys,
        )
        if ready is None:
            return Outcome.LOST
        self.publish(ready)
        return Outcome.RETRYING if retry_delay is not None else Outcome.FAILED

    # -- heartbeat -------------------------------------------------------------------------

    @contextmanager
    def _heartbeat(self, claimed: ClaimedStep) -> Iterator[None]:
        stop = threading.Event()
        step = claimed.step

        def beat() -> None:
            while not stop.wait(self.heartbeat_seconds):
                try:
                    self.storage.heartbeat(step.run_id, step.step_key, step.attempt)
                except Exception:  # the database may be briefly away; the next beat retries
                    log.warning("heartbeat for %s failed", step.step_key, exc_info=True)

        thread = threading.Thread(target=beat, name=f"heartbeat-{step.step_key}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


class _CapturedLog(logging.Handler):
    """Collects what an asset logs through ``context.log`` as events of its step."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.events: list[NewEvent] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(NewEvent("LOG", record.getMessage(), {"level": record.levelname}))

    def logger(self, key: AssetKey) -> logging.Logger:
        # A logger outside the registry (so none leaks per step) that still propagates.
        logger = logging.Logger(f"tidegate.asset.{key}")
        logger.parent = asset_log
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        return logger


def _jsonable(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata is stored as JSON: values JSON cannot hold are stored as their str()."""
    return json.loads(json.dumps(dict(metadata), default=str))  # type: ignore[no-any-return]
