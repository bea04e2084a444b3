"""The input types of the mutations and queries, as Dagster's schema names them."""

from __future__ import annotations

from enum import Enum
from typing import Any, NewType

import strawberry

from tidegate.webserver.graphql.types import GraphQLRunStatus

RunConfigData = NewType("RunConfigData", object)  # a scalar: see RUN_CONFIG_SCALAR


def _as_is(value: object) -> object:
    return value


RUN_CONFIG_SCALAR = strawberry.scalar(
    name="RunConfigData",
    description="A run's config: a JSON object (or a string holding one), as in Dagster.",
    serialize=_as_is,
    parse_value=_as_is,
)


@strawberry.enum
class TerminateRunPolicy(Enum):
    """Accepted as Dagster's: tidegate cancels at once either way (unfinished steps CANCELED,
    running ones revoked), which is what both of Dagster's policies end in."""

    SAFE_TERMINATE = "SAFE_TERMINATE"
    MARK_AS_CANCELED_IMMEDIATELY = "MARK_AS_CANCELED_IMMEDIATELY"


@strawberry.input
class AssetKeyInput:
    path: list[str]


@strawberry.input
class ExecutionTag:
    key: str
    value: str


@strawberry.input
class JobOrPipelineSelector:
    repository_location_name: str
    repository_name: str
    pipeline_name: str | None = None
    job_name: str | None = None
    solid_selection: list[str] | None = None
    asset_selection: list[AssetKeyInput] | None = None


@strawberry.input
class ExecutionMetadata:
    tags: list[ExecutionTag] | None = None
    root_run_id: str | None = None
    parent_run_id: str | None = None


@strawberry.input
class ExecutionParams:
    selector: JobOrPipelineSelector
    run_config_data: RunConfigData | None = None
    mode: str | None = None
    execution_metadata: ExecutionMetadata | None = None
    step_keys: list[str] | None = None
    preset: str | None = None


@strawberry.input
class RunsFilter:
    run_ids: list[str | None] | None = None
    pipeline_name: str | None = None
    tags: list[ExecutionTag] | None = None
    statuses: list[GraphQLRunStatus] | None = None
    created_before: float | None = None
    created_after: float | None = None
    updated_after: float | None = None
    updated_before: float | None = None
    mode: str | None = None


@strawberry.input
class RepositorySelector:
    repository_location_name: str
    repository_name: str


@strawberry.input
class SensorSelector:
    repository_location_name: str
    repository_name: str
    sensor_name: str


@strawberry.input
class ScheduleSelector:
    repository_location_name: str
    repository_name: str
    schedule_name: str


@strawberry.input
class PartitionSetSelector:
    partition_set_name: str
    repository_selector: RepositorySelector


@strawberry.input
class LaunchBackfillParams:
    selector: PartitionSetSelector | None = None
    partition_names: list[str] | None = None
    all_partitions: bool | None = None
    asset_selection: list[AssetKeyInput] | None = None
    from_failure: bool | None = None
    tags: list[ExecutionTag] | None = None
    title: str | None = None
    description: str | None = None
    run_config_data: RunConfigData | None = None


def tag_dict(tags: list[ExecutionTag] | None) -> dict[str, str]:
    return {t.key: t.value for t in tags or ()}


def config_dict(value: Any) -> Any:
    """``runConfigData`` as given: an object, or a string holding a JSON object."""
    if isinstance(value, str):
        import json

        text = value.strip()
        if not text:
            return {}
        try:
            return json.loads(text)
        except ValueError:
            return value
    return value
