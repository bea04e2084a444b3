"""SQL storage: schema, migrations, and the one storage API every process uses."""

from tidegate.storage.api import Storage
from tidegate.storage.records import (
    ClaimedStep,
    EventRecord,
    MaterializationRecord,
    NewEvent,
    RunRecord,
    StepRecord,
    StepRef,
    SubmitResult,
)

__all__ = [
    "ClaimedStep",
    "EventRecord",
    "MaterializationRecord",
    "NewEvent",
    "RunRecord",
    "StepRecord",
    "StepRef",
    "Storage",
    "SubmitResult",
]
