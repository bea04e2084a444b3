"""``launchRun`` / ``launchPipelineExecution`` and ``launchPartitionBackfill``: Dagster's launch
parameters turned into tidegate's submit path (the one the CLI and Flower take), each failure
into the typed result Dagster's client expects. No run is created unless the whole request is
valid."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import strawberry

from tidegate.definitions.defs import Definitions
from tidegate.definitions.job import IMPLICIT_ASSET_JOB
from tidegate.errors import (
    EmptySelectionError,
    InvalidSelectionError,
    PartitionKeyError,
    RunConfigError,
    TidegateError,
    UnknownJobError,
)
from tidegate.names import LAUNCHED_BY_TAG, PARTITION_TAG, Role
from tidegate.submit import prepare_job_run
from tidegate.webserver.graphql.context import PARTITION_SET_SUFFIX, REPOSITORY_NAME, GraphQLContext
from tidegate.webserver.graphql.errors import (
    ConflictingExecutionParamsError,
    EvaluationErrorReason,
    FieldNotDefinedConfigError,
    InvalidOutputError,
    InvalidStepError,
    InvalidSubsetError,
    NoModeProvidedError,
    PartitionKeysNotFoundError,
    PartitionSetNotFoundError,
    PipelineConfigValidationError,
    PipelineNotFoundError,
    PresetNotFoundError,
    PythonError,
    RunConfigValidationInvalid,
    RunConflict,
    RuntimeMismatchConfigError,
    UnauthorizedError,
    log_unexpected,
)
from tidegate.webserver.graphql.inputs import ExecutionParams, LaunchBackfillParams, config_dict, tag_dict
from tidegate.webserver.graphql.types import LaunchBackfillSuccess, LaunchRunSuccess, Run

GRAPHQL_ORIGIN = "graphql"  # the origin of runs launched through /graphql
DAGSTER_PARTITION_TAG = "dagster/partition"  # how Dagster's clients name the partition of a launch

LaunchRunResult = Annotated[
    LaunchRunSuccess
    | InvalidStepError
    | InvalidOutputError
    | RunConfigValidationInvalid
    | PipelineNotFoundError
    | RunConflict
    | UnauthorizedError
    | PythonError
    | InvalidSubsetError
    | PresetNotFoundError
    | ConflictingExecutionParamsError
    | NoModeProvidedError,
    strawberry.union("LaunchRunResult"),
]

LaunchBackfillResult = Annotated[
    LaunchBackfillSuccess
    | PartitionSetNotFoundError
    | PartitionKeysNotFoundError
    | PipelineNotFoundError
    | RunConfigValidationInvalid
    | UnauthorizedError
    | PythonError,
    strawberry.union("LaunchBackfillResult"),
]


def unauthorized(context: GraphQLContext, needed: Role, action: str) -> UnauthorizedError:
    return UnauthorizedError(message=f"{action} needs the {needed} role; this token has the {context.role} role")


def launch_run(context: GraphQLContext, params: ExecutionParams) -> LaunchRunResult:
    if not context.allows(Role.LAUNCHER):
        return unauthorized(context, Role.LAUNCHER, "launching a run")
    try:
        return _launch(context, params)
    except TidegateError as exc:
        return PythonError.of(exc)
    except Exception as exc:
        log_unexpected("launching a run", exc)
        return PythonError.of(exc)


def _launch(context: GraphQLContext, params: ExecutionParams) -> LaunchRunResult:
    selector = params.selector
    defs = context.workspace.defs
    job_name = selector.job_name or selector.pipeline_name or ""
    not_found = _job_not_found(context, job_name, selector.repository_location_name, selector.repository_name)
    if not_found is not None:
        return not_found
    if params.preset is not None:
        return PresetNotFoundError(message=f"job '{job_name}': presets do not exist in tidegate", preset=params.preset)
    if selector.solid_selection or params.step_keys:
        return InvalidSubsetError(
            message=f"job '{job_name}': op and step selections are not supported; select assets with assetSelection"
        )
    config = config_dict(params.run_config_data)
    if config is not None and not isinstance(config, dict):
        return _not_an_object(job_name, config)
    tags = tag_dict(params.execution_metadata.tags if params.execution_metadata else None)
    partition_key = tags.pop(DAGSTER_PARTITION_TAG, None) or tags.pop(PARTITION_TAG, None)
    tags[LAUNCHED_BY_TAG] = context.caller  # who launched it, whatever the tags say
    selection = ["/".join(key.path) for key in selector.asset_selection] if selector.asset_selection else None
    try:
        # {} (what Dagster's client sends without run_config) means the job's default config
        request = prepare_job_run(
            defs, context.storage, job_name, partition_key=partition_key, tags=tags, run_config=config or None
        )
        if selection is not None:
            plan = defs.plan(
                job_name,
                selection,
                partition_key=partition_key,
                dynamic_keys=context.storage.dynamic_partition_keys,
                run_config=config or None,
            )
            request = dataclasses.replace(request, plan=plan)
    except RunConfigError as exc:
        return config_invalid(job_name, exc)
    except (EmptySelectionError, InvalidSelectionError) as exc:
        return InvalidSubsetError(message=str(exc))
    result = request.submit(context.storage, origin=GRAPHQL_ORIGIN)
    return LaunchRunSuccess(run=Run(record=context.storage.get_run(result.run_id)))


def _job_not_found(
    context: GraphQLContext, job_name: str, location: str, repository: str
) -> PipelineNotFoundError | None:
    """The error for a selector naming another location or repository, or an unknown job."""
    workspace = context.workspace
    message = None
    if not job_name:
        message = "executionParams.selector: give jobName (or pipelineName)"
    elif location != workspace.name:
        message = f"code location '{location}': not served here (this webserver serves '{workspace.name}')"
    elif repository != REPOSITORY_NAME:
        message = f"repository '{repository}': not found in code location '{location}' (it holds '{REPOSITORY_NAME}')"
    else:
        try:
            workspace.defs.get_job(job_name)
        except UnknownJobError as exc:
            message = str(exc)
    if message is None:
        return None
    return PipelineNotFoundError(
        message=message, pipeline_name=job_name, repository_name=repository, repository_location_name=location
    )


def _not_an_object(job_name: str, config: Any) -> RunConfigValidationInvalid:
    message = f"job '{job_name}': run config must be an object, got {type(config).__name__}"
    error = RuntimeMismatchConfigError(message=message, path=[], reason=EvaluationErrorReason.RUNTIME_TYPE_MISMATCH)
    return RunConfigValidationInvalid(pipeline_name=job_name, errors=[error])


def config_invalid(job_name: str, exc: RunConfigError) -> RunConfigValidationInvalid:
    """Dagster's result for config that does not fit the job: one error per problem the check
    found (``exc.problems``), with its path in the run config (``ops.NODE.config.FIELD`` or
    ``resources.KEY.config.FIELD``) and Dagster's reason. Each message is tidegate's, naming
    the job, the op or asset and the field (never a value: it may be a secret)."""
    text = str(exc)
    errors: list[PipelineConfigValidationError] = []
    for problem in exc.problems:
        path = list(problem.path)
        if problem.kind == "not_defined":
            errors.append(_not_defined(text, path, path[-1]))
        else:
            reason = (
                EvaluationErrorReason.MISSING_REQUIRED_FIELD
                if problem.kind == "missing"
                else EvaluationErrorReason.RUNTIME_TYPE_MISMATCH
            )
            errors.append(RuntimeMismatchConfigError(message=text, path=path, reason=reason))
    if not errors:  # the config as a whole is malformed
        errors.append(
            RuntimeMismatchConfigError(message=text, path=[], reason=EvaluationErrorReason.RUNTIME_TYPE_MISMATCH)
        )
    return RunConfigValidationInvalid(pipeline_name=job_name, errors=errors)


def _not_defined(message: str, path: list[str], field: str) -> FieldNotDefinedConfigError:
    return FieldNotDefinedConfigError(
        message=message, path=path, reason=EvaluationErrorReason.FIELD_NOT_DEFINED, field_name=field
    )


def launch_backfill(context: GraphQLContext, params: LaunchBackfillParams) -> LaunchBackfillResult:
    if not context.allows(Role.LAUNCHER):
        return unauthorized(context, Role.LAUNCHER, "launching a backfill")
    try:
        return _backfill(context, params)
    except TidegateError as exc:
        return PythonError.of(exc)
    except Exception as exc:
        log_unexpected("launching a backfill", exc)
        return PythonError.of(exc)


def _backfill(context: GraphQLContext, params: LaunchBackfillParams) -> LaunchBackfillResult:
    from tidegate.scheduler.backfill import backfill_partitions, create_backfill

    if params.selector is None:
        return PythonError(
            message="launchPartitionBackfill: give a selector (a job's partition set); "
            "asset backfills are not supported",
            class_name="LaunchRequestError",
        )
    defs = context.workspace.defs
    name = params.selector.partition_set_name
    job_name = name.removesuffix(PARTITION_SET_SUFFIX)
    repository = params.selector.repository_selector
    if not _is_partitioned_job(defs, job_name) or _job_not_found(
        context, job_name, repository.repository_location_name, repository.repository_name
    ):
        return PartitionSetNotFoundError(
            message=f"partition set '{name}': no partitioned job '{job_name}' in code location "
            f"'{repository.repository_location_name}'",
            partition_set_name=name,
        )
    config = config_dict(params.run_config_data)
    if config is not None and not isinstance(config, dict):
        return _not_an_object(job_name, config)
    if bool(params.all_partitions) == (params.partition_names is not None):
        return PythonError(
            message=f"partition set '{name}': give exactly one of partitionNames or allPartitions",
            class_name="LaunchRequestError",
        )
    unknown = _unknown_keys(context, job_name, params.partition_names or [])
    if unknown:
        return PartitionKeysNotFoundError(
            message=f"job '{job_name}': unknown partition key(s) {', '.join(repr(k) for k in unknown)}",
            partition_keys=unknown,
        )
    keys = backfill_partitions(
        defs, context.storage, job_name, partitions=params.partition_names, all_keys=bool(params.all_partitions)
    )
    tags = {**tag_dict(params.tags), LAUNCHED_BY_TAG: context.caller}  # its runs carry them
    try:
        record = create_backfill(defs, context.storage, job_name, keys, tags=tags, run_config=config or None)
    except RunConfigError as exc:
        return config_invalid(job_name, exc)
    return LaunchBackfillSuccess(backfill_id=record.backfill_id, launched_run_ids=[])


def _is_partitioned_job(defs: Definitions, job_name: str) -> bool:
    job = defs.jobs.get(job_name)
    return job is not None and job_name != IMPLICIT_ASSET_JOB and job.partitions_def is not None


def _unknown_keys(context: GraphQLContext, job_name: str, keys: list[str]) -> list[str]:
    partitions_def = context.workspace.defs.get_job(job_name).partitions_def
    assert partitions_def is not None
    dynamic = context.storage.dynamic_partition_keys
    unknown = []
    for key in keys:
        try:
            partitions_def.validate_key(key, None, dynamic)
        except PartitionKeyError:
            unknown.append(key)
    return unknown
