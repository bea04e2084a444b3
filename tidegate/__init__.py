"""tidegate: a Dagster-style orchestrator whose execution runs on Celery.

The public API mirrors Dagster's names: ``import tidegate as tg`` (or ``as dg``).
"""

from tidegate.client import TidegateClient
from tidegate.definitions.asset import AssetIn, AssetsDefinition, asset
from tidegate.definitions.asset_sensor import AssetSensorDefinition, asset_sensor
from tidegate.definitions.asset_spec import AssetSpec
from tidegate.definitions.automation_condition import AutomationCondition
from tidegate.definitions.automation_sensor import AutomationConditionSensorDefinition
from tidegate.definitions.config import Config, EnvVar, RunConfig
from tidegate.definitions.context import AssetExecutionContext, MaterializeResult
from tidegate.definitions.defs import Definitions
from tidegate.definitions.defs import definitions as definitions  # tg.definitions: the decorator, not the subpackage
from tidegate.definitions.events import AssetMaterialization, AssetObservation, Output
from tidegate.definitions.file_sensor import file_sensor
from tidegate.definitions.instance import (
    AssetRecordsFilter,
    DagsterEvent,
    DagsterEventType,
    DagsterRun,
    DagsterRunStatus,
    EventLogEntry,
    EventLogRecord,
    EventRecordsFilter,
    EventRecordsResult,
    RunRecord,
    RunsFilter,
)
from tidegate.definitions.instigator import DefaultScheduleStatus, DefaultSensorStatus
from tidegate.definitions.job import JobDefinition, define_asset_job, validate_run_config
from tidegate.definitions.key import AssetKey
from tidegate.definitions.metadata import MetadataValue
from tidegate.definitions.multi_asset_sensor import (
    MultiAssetSensorDefinition,
    MultiAssetSensorEvaluationContext,
    multi_asset_sensor,
)
from tidegate.definitions.op import DynamicOut, DynamicOutput, In, OpDefinition, Out, op
from tidegate.definitions.op_context import OpExecutionContext
from tidegate.definitions.op_graph import GraphDefinition, graph
from tidegate.definitions.op_job import (
    PartitionedConfig,
    daily_partitioned_config,
    job,
    static_partitioned_config,
)
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
from tidegate.definitions.run_status_sensor import (
    RunFailureSensorContext,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    build_run_status_sensor_context,
    run_failure_sensor,
    run_status_sensor,
)
from tidegate.definitions.schedule import (
    ScheduleDefinition,
    ScheduleEvaluationContext,
    build_schedule_context,
    schedule,
)
from tidegate.definitions.selection import AssetSelection
from tidegate.definitions.sensor import SensorDefinition, SensorEvaluationContext, build_sensor_context, sensor
from tidegate.errors import (
    AssetOutputError,
    DefinitionError,
    DefinitionsLoadError,
    DependencyCycleError,
    DuplicateDefinitionError,
    EmptySelectionError,
    ExternalAssetError,
    InputLimitError,
    InvalidDefinitionError,
    InvalidInvocationError,
    InvalidPartitionKeyError,
    InvalidSelectionError,
    MissingResourceError,
    PartitionKeyError,
    RunConfigError,
    RunRequestTargetError,
    StepInterruptedError,
    TidegateError,
    UnknownDependencyError,
    UnknownJobError,
)
from tidegate.s3 import S3IOManager, S3Resource, s3_sensor  # boto3 is imported only when a client is built
from tidegate.storage.instance import DagsterInstance, instance_for_test
from tidegate.workers.inprocess import ExecuteInProcessResult, materialize
from tidegate.workers.io import FilesystemIOManager, InMemoryIOManager, InputContext, IOManager, OutputContext

__version__ = "0.1.0"

__all__ = [
    "AddDynamicPartitionsRequest",
    "AllPartitionMapping",
    "AssetExecutionContext",
    "AssetIn",
    "AssetKey",
    "AssetMaterialization",
    "AssetObservation",
    "AssetOutputError",
    "AssetRecordsFilter",
    "AssetSelection",
    "AssetSensorDefinition",
    "AssetSpec",
    "AssetsDefinition",
    "AutomationCondition",
    "AutomationConditionSensorDefinition",
    "BackfillPolicy",
    "Backoff",
    "Config",
    "ConfigurableResource",
    "DagsterEvent",
    "DagsterEventType",
    "DagsterInstance",
    "DagsterRun",
    "DagsterRunStatus",
    "DailyPartitionsDefinition",
    "DefaultScheduleStatus",
    "DefaultSensorStatus",
    "DefinitionError",
    "Definitions",
    "DefinitionsLoadError",
    "DeleteDynamicPartitionsRequest",
    "DependencyCycleError",
    "DuplicateDefinitionError",
    "DynamicOut",
    "DynamicOutput",
    "DynamicPartitionsDefinition",
    "EmptySelectionError",
    "EnvVar",
    "EventLogEntry",
    "EventLogRecord",
    "EventRecordsFilter",
    "EventRecordsResult",
    "ExecuteInProcessResult",
    "ExternalAssetError",
    "FilesystemIOManager",
    "GraphDefinition",
    "HourlyPartitionsDefinition",
    "IOManager",
    "IdentityPartitionMapping",
    "In",
    "InMemoryIOManager",
    "InputContext",
    "InputLimitError",
    "InvalidDefinitionError",
    "InvalidInvocationError",
    "InvalidPartitionKeyError",
    "InvalidSelectionError",
    "Jitter",
    "JobDefinition",
    "MaterializeResult",
    "MetadataValue",
    "MissingResourceError",
    "MonthlyPartitionsDefinition",
    "MultiAssetSensorDefinition",
    "MultiAssetSensorEvaluationContext",
    "OpDefinition",
    "OpExecutionContext",
    "Out",
    "Output",
    "OutputContext",
    "PartitionKeyError",
    "PartitionKeyRange",
    "PartitionMapping",
    "PartitionedConfig",
    "PartitionsDefinition",
    "RetryPolicy",
    "RunConfig",
    "RunConfigError",
    "RunFailureSensorContext",
    "RunRecord",
    "RunRequest",
    "RunRequestTargetError",
    "RunStatusSensorContext",
    "RunStatusSensorDefinition",
    "RunsFilter",
    "S3IOManager",
    "S3Resource",
    "ScheduleDefinition",
    "ScheduleEvaluationContext",
    "SensorDefinition",
    "SensorEvaluationContext",
    "SensorResult",
    "SkipReason",
    "StaticPartitionsDefinition",
    "StepInterruptedError",
    "TidegateClient",
    "TidegateError",
    "TimeWindow",
    "TimeWindowPartitionMapping",
    "TimeWindowPartitionsDefinition",
    "UnknownDependencyError",
    "UnknownJobError",
    "WeeklyPartitionsDefinition",
    "asset",
    "asset_sensor",
    "build_run_status_sensor_context",
    "build_schedule_context",
    "build_schedule_from_partitioned_job",
    "build_sensor_context",
    "daily_partitioned_config",
    "define_asset_job",
    "definitions",
    "file_sensor",
    "graph",
    "instance_for_test",
    "job",
    "materialize",
    "multi_asset_sensor",
    "op",
    "run_failure_sensor",
    "run_status_sensor",
    "s3_sensor",
    "schedule",
    "sensor",
    "static_partitioned_config",
    "validate_run_config",
]
