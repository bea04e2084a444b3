"""What an asset function sees while it runs, and what it may return besides a value."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tidegate.definitions.key import AssetKey
from tidegate.definitions.partitions import PartitionKeyRange, TimeWindow
from tidegate.errors import StepInterruptedError, TidegateError


class Resources:
    """Resources by attribute (``context.resources.warehouse``) or by key."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no resource named {name!r}; have {sorted(self._values)}") from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __repr__(self) -> str:
        return f"Resources({sorted(self._values)})"

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


class Interruption:
    """Set (by the step's heartbeat) once this attempt no longer owns its step; the running asset
    then stops at its next ``context.log`` call or input/output with :class:`StepInterruptedError`."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def raise_if_set(self) -> None:
        if self._event.is_set():
            raise StepInterruptedError(self.reason)


@dataclass
class AssetExecutionContext:
    """Passed to an asset function that has a ``context`` parameter."""

    run_id: str
    asset_key: AssetKey
    job_name: str
    tags: Mapping[str, str]
    resources: Resources
    log: logging.Logger
    attempt: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)
    partition_keys: tuple[str, ...] = ()  # one key, or a range's keys in a single-run backfill
    partitions_def: Any = None
    interruption: Interruption = field(default_factory=Interruption, repr=False, compare=False)
    # this node's run config as a dict (environment variables read); None when it has none
    op_config: Any = field(default=None, repr=False)

    @property
    def is_interrupted(self) -> bool:
        """True once this attempt no longer owns its step (its run was canceled, or the run
        monitor gave it up): a long loop that does not log can check it and stop early. Its
        outcome will not be recorded either way."""
        return self.interruption.is_set()

    @property
    def partition_key(self) -> str | None:
        """This step's partition; None when unpartitioned. A run over a range of partitions
        (``BackfillPolicy.single_run()``) has no single key: use ``partition_keys``."""
        if len(self.partition_keys) > 1:
            raise TidegateError(
                f"asset '{self.asset_key}': this run covers {len(self.partition_keys)} partitions "
                f"({self.partition_keys[0]}..{self.partition_keys[-1]}); use context.partition_keys "
                "or context.partition_key_range"
            )
        return self.partition_keys[0] if self.partition_keys else None

    @property
    def has_partition_key(self) -> bool:
        return len(self.partition_keys) == 1

    @property
    def has_partition_key_range(self) -> bool:
        return len(self.partition_keys) > 1

    @property
    def partition_key_range(self) -> PartitionKeyRange:
        """First and last partition of this run (the same key twice for a single partition)."""
        if not self.partition_keys:
            raise AttributeError(f"asset '{self.asset_key}': not partitioned")
        return PartitionKeyRange(self.partition_keys[0], self.partition_keys[-1])

    @property
    def partition_time_window(self) -> TimeWindow:
        """The (start, end) time window of this step's partitions, timezone-aware: from the
        start of the first to the end of the last."""
        window = getattr(self.partitions_def, "time_window_for_key", None)
        if not self.partition_keys or window is None:
            raise AttributeError(f"asset '{self.asset_key}': not partitioned by time windows")
        first: TimeWindow = window(self.partition_keys[0])
        last: TimeWindow = window(self.partition_keys[-1]) if len(self.partition_keys) > 1 else first
        return TimeWindow(first.start, last.end)

    @property
    def retry_number(self) -> int:
        """0 on the first attempt, 1 on the first retry (Dagster's name)."""
        return self.attempt - 1

    def add_output_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Attach metadata to this materialization (merged with a MaterializeResult's)."""
        self.metadata.update(metadata)


@dataclass(frozen=True)
class MaterializeResult:
    """Return this from an asset that stores its data itself: only the metadata is recorded."""

    metadata: Mapping[str, Any] = field(default_factory=dict)
    asset_key: AssetKey | None = None
