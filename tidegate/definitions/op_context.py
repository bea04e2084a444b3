"""What an op function sees while it runs (Dagster's ``OpExecutionContext``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tidegate.definitions.context import Interruption, Resources
from tidegate.definitions.partitions import TimeWindow
from tidegate.errors import TidegateError


@dataclass
class OpExecutionContext:
    """Passed to an op function that has a ``context`` parameter."""

    run_id: str
    job_name: str
    op_handle: str  # the node's path in the job: ``op`` or ``graph.op``
    step_key: str  # the node handle, with its mapping keys for a mapped step: ``op[key]``
    tags: Mapping[str, str]
    resources: Resources
    log: logging.Logger
    op_config: Any = None
    attempt: int = 1
    partition_key_or_none: str | None = None
    partitions_def: Any = None
    mapping_keys: tuple[str, ...] = ()
    interruption: Interruption = field(default_factory=Interruption, repr=False, compare=False)
    output_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def op_name(self) -> str:
        return self.op_handle.rsplit(".", 1)[-1]

    @property
    def is_interrupted(self) -> bool:
        return self.interruption.is_set()

    @property
    def retry_number(self) -> int:
        return self.attempt - 1

    @property
    def has_partition_key(self) -> bool:
        return self.partition_key_or_none is not None

    @property
    def partition_key(self) -> str:
        if self.partition_key_or_none is None:
            raise TidegateError(f"op '{self.op_handle}': run {self.run_id} is not partitioned")
        return self.partition_key_or_none

    @property
    def partition_time_window(self) -> TimeWindow:
        window = getattr(self.partitions_def, "time_window_for_key", None)
        if window is None:
            raise AttributeError(f"op '{self.op_handle}': its job is not partitioned by time windows")
        result: TimeWindow = window(self.partition_key)
        return result

    def get_mapping_key(self) -> str | None:
        """The mapping key of this mapped step (the innermost one); None if not mapped."""
        return self.mapping_keys[-1] if self.mapping_keys else None

    def add_output_metadata(self, metadata: Mapping[str, Any], output_name: str = "result") -> None:
        self.output_metadata.setdefault(output_name, {}).update(metadata)
