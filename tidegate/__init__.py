"""tidegate: a Dagster-style orchestrator whose execution runs on Celery.

The public API mirrors Dagster's names: ``import tidegate as tg`` (or ``as dg``).
"""

from tidegate.definitions.asset import AssetIn, AssetsDefinition, asset
from tidegate.definitions.asset_spec import AssetSpec
from tidegate.definitions.context import AssetExecutionContext, MaterializeResult
from tidegate.definitions.defs import Definitions
from tidegate.definitions.defs import definitions as definitions  # tg.definitions: the decorator, not the subpackage
from tidegate.definitions.file_sensor import file_sensor
from tidegate.definitions.instigator import DefaultScheduleStatus, DefaultSensorStatus
from tidegate.definitions.job import define_asset_job
from tidegate.definitions.key import AssetKey
from tidegate.definitions.metadata import MetadataValue
from tidegate.definitions.partitioned_schedule import build_schedule_from_partitioned_job
from tidegate.definitions.partitions import (
    AddDynamicPartitionsRequest,
    AllPartitionMapping,
    BackfillPolicy,
    DailyPartitionsDefinition,
    DeleteDynamicPartitionsRequest,
    DynamicPartitionsDefinition,
    HourlyPartitionsDefinition,
    IdentityPartitionMapping,
    MonthlyPartitionsDefinition,
    PartitionKeyRange,
    PartitionMapping,
    PartitionsDefinition,
    StaticPartitionsDefinition,
    TimeWindow,
    TimeWindowPartitionMapping,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
)
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
    ExternalAssetError,
    InvalidDefinitionError,
    InvalidSelectionError,
    MissingResourceError,
    PartitionKeyError,
    TidegateError,
    UnknownDependencyError,
    UnknownJobError,
)
from tidegate.s3 import S3IOManager, S3Resource, s3_sensor  # boto3 is imported only when a client is built
from tidegate.workers.inprocess import ExecuteInProcessResult, materialize
from tidegate.workers.io import FilesystemIOManager, InMemoryIOManager, InputContext, IOManager, OutputContext

__version__ = "0.1.0"

__all__ = [
    "AddDynamicPartitionsRequest",
    "AllPartitionMapping",
    "AssetExecutionContext",
    "AssetIn",
    "AssetKey",
    "AssetSelection",
    "AssetSpec",
    "AssetsDefinition",
    "BackfillPolicy",
    "Backoff",
    "ConfigurableResource",
    "DailyPartitionsDefinition",
    "DefaultScheduleStatus",
    "DefaultSensorStatus",
    "DefinitionError",
    "Definitions",
    "DefinitionsLoadError",
    "DeleteDynamicPartitionsRequest",
    "DependencyCycleError",
    "DuplicateDefinitionError",
    "DynamicPartitionsDefinition",
    "EmptySelectionError",
    "ExecuteInProcessResult",
    "ExternalAssetError",
    "FilesystemIOManager",
    "HourlyPartitionsDefinition",
    "IOManager",
    "IdentityPartitionMapping",
    "InMemoryIOManager",
    "InputContext",
    "InvalidDefinitionError",
    "InvalidSelectionError",
    "Jitter",
    "MaterializeResult",
    "MetadataValue",
    "MissingResourceError",
    "MonthlyPartitionsDefinition",
    "OutputContext",
    "PartitionKeyError",
    "PartitionKeyRange",
    "PartitionMapping",
    "PartitionsDefinition",
    "RetryPolicy",
    "RunRequest",
    "S3IOManager",
    "S3Resource",
    "ScheduleDefinition",
    "ScheduleEvaluationContext",
    "SensorDefinition",
    "SensorEvaluationContext",
    "SensorResult",
    "SkipReason",
    "StaticPartitionsDefinition",
    "TidegateError",
    "TimeWindow",
    "TimeWindowPartitionMapping",
    "TimeWindowPartitionsDefinition",
    "UnknownDependencyError",
    "UnknownJobError",
    "WeeklyPartitionsDefinition",
    "asset",
    "build_schedule_from_partitioned_job",
    "define_asset_job",
    "definitions",
    "file_sensor",
    "materialize",
    "s3_sensor",
    "schedule",
    "sensor",
]
