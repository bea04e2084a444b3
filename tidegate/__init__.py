"""tidegate: a Dagster-style orchestrator whose execution runs on Celery.

The public API mirrors Dagster's names: ``import tidegate as tg`` (or ``as dg``).
"""

from tidegate.definitions.asset import AssetIn, AssetsDefinition, asset
from tidegate.definitions.context import AssetExecutionContext, MaterializeResult
from tidegate.definitions.defs import Definitions
from tidegate.definitions.file_sensor import file_sensor
from tidegate.definitions.instigator import DefaultScheduleStatus, DefaultSensorStatus
from tidegate.definitions.job import define_asset_job
from tidegate.definitions.key import AssetKey
from tidegate.definitions.resource import ConfigurableResource
from tidegate.definitions.retry import Backoff, Jitter, RetryPolicy
from tidegate.definitions.run_request import RunRequest, SensorResult, SkipReason
from tidegate.definitions.schedule import ScheduleDefinition, ScheduleEvaluationContext, schedule
from tidegate.definitions.selection import AssetSelection
from tidegate.definitions.sensor import SensorDefinition, SensorEvaluationContext, sensor
from tidegate.errors import (
    DefinitionError,
    DefinitionsLoadError,
    DependencyCycleError,
    DuplicateDefinitionError,
    EmptySelectionError,
    InvalidDefinitionError,
    InvalidSelectionError,
    MissingResourceError,
    TidegateError,
    UnknownDependencyError,
    UnknownJobError,
)
from tidegate.workers.inprocess import ExecuteInProcessResult, materialize
from tidegate.workers.io import FilesystemIOManager, InMemoryIOManager, InputContext, IOManager, OutputContext

__version__ = "0.1.0"

__all__ = [
    "AssetExecutionContext",
    "AssetIn",
    "AssetKey",
    "AssetSelection",
    "AssetsDefinition",
    "Backoff",
    "ConfigurableResource",
    "DefaultScheduleStatus",
    "DefaultSensorStatus",
    "DefinitionError",
    "Definitions",
    "DefinitionsLoadError",
    "DependencyCycleError",
    "DuplicateDefinitionError",
    "EmptySelectionError",
    "ExecuteInProcessResult",
    "FilesystemIOManager",
    "IOManager",
    "InMemoryIOManager",
    "InputContext",
    "InvalidDefinitionError",
    "InvalidSelectionError",
    "Jitter",
    "MaterializeResult",
    "MissingResourceError",
    "OutputContext",
    "RetryPolicy",
    "RunRequest",
    "ScheduleDefinition",
    "ScheduleEvaluationContext",
    "SensorDefinition",
    "SensorEvaluationContext",
    "SensorResult",
    "SkipReason",
    "TidegateError",
    "UnknownDependencyError",
    "UnknownJobError",
    "asset",
    "define_asset_job",
    "file_sensor",
    "materialize",
    "schedule",
    "sensor",
]
