"""What an asset function sees while it runs, and what it may return besides a value."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tidegate.definitions.key import AssetKey


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
    partition_key: str | None = None
    partitions_def: Any = None

    @property
    def has_partition_key(self) -> bool:
        return self.partition_key is not None

    @property
    def partition_time_window(self) -> Any:
        """The (start, end) TimeWindow of this step's partition, timezone-aware."""
        window = getattr(self.partitions_def, "time_window_for_key", None)
        if self.partition_key is None or window is None:
            raise AttributeError(f"asset '{self.asset_key}': not partitioned by time windows")
        return window(self.partition_key)

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
