"""The error results of Dagster's schema, with the typenames its Python client switches on.

Dagster's GraphQL API answers most failures with a typed result (``PipelineNotFoundError``,
``RunConfigValidationInvalid``, ...) rather than a GraphQL error, and its client reads
``__typename``; these are those types. Interfaces that the client's queries name in a fragment
(``PipelineRunConflict``, ``PipelineConfigValidationInvalid``, ...) are declared too: a query
naming an unknown type fails validation as a whole.
"""

from __future__ import annotations

import logging
from enum import Enum

import strawberry
from sqlalchemy.exc import DBAPIError

from tidegate.errors import TidegateError

log = logging.getLogger("tidegate.webserver.graphql")


def log_unexpected(action: str, exc: BaseException) -> None:
    """Log an exception that is none of tidegate's typed errors. A database error is logged by
    its class alone, as the REST API does (a driver's message may show the server's address or
    user); anything else with its traceback, to find the bug."""
    if isinstance(exc, DBAPIError):
        log.warning("graphql: %s: database error %s", action, type(exc).__name__)
    else:
        log.error("graphql: %s failed", action, exc_info=exc)


@strawberry.interface(name="Error")
class Error:
    message: str


@strawberry.type
class PythonError(Error):
    """An error that fits no typed result. ``stack`` stays empty: no traceback (which may show
    paths or values) leaves the server."""

    class_name: str | None = None
    stack: list[str] = strawberry.field(default_factory=list)

    @classmethod
    def of(cls, exc: BaseException) -> PythonError:
        message = str(exc) if isinstance(exc, TidegateError) else f"{type(exc).__name__}: internal error"
        return cls(message=message, class_name=type(exc).__name__)


@strawberry.type
class UnauthorizedError(Error):
    pass


@strawberry.type
class PipelineNotFoundError(Error):
    pipeline_name: str
    repository_name: str
    repository_location_name: str


@strawberry.interface
class PipelineRunConflict:
    message: str


@strawberry.type
class RunConflict(Error, PipelineRunConflict):
    pass


@strawberry.type
class InvalidStepError:
    invalid_step_key: str


@strawberry.type
class InvalidOutputError:
    step_key: str
    invalid_output_name: str


@strawberry.type
class PresetNotFoundError(Error):
    preset: str


@strawberry.type
class ConflictingExecutionParamsError(Error):
    pass


@strawberry.type
class NoModeProvidedError(Error):
    pipeline_name: str


@strawberry.type
class InvalidSubsetError(Error):
    pass


@strawberry.enum
class EvaluationErrorReason(Enum):
    RUNTIME_TYPE_MISMATCH = "RUNTIME_TYPE_MISMATCH"
    MISSING_REQUIRED_FIELD = "MISSING_REQUIRED_FIELD"
    MISSING_REQUIRED_FIELDS = "MISSING_REQUIRED_FIELDS"
    FIELD_NOT_DEFINED = "FIELD_NOT_DEFINED"
    FIELDS_NOT_DEFINED = "FIELDS_NOT_DEFINED"
    SELECTOR_FIELD_ERROR = "SELECTOR_FIELD_ERROR"


@strawberry.interface
class PipelineConfigValidationError:
    message: str
    path: list[str]
    reason: EvaluationErrorReason


@strawberry.type
class FieldNotDefinedConfigError(PipelineConfigValidationError):
    field_name: str


@strawberry.type
class RuntimeMismatchConfigError(PipelineConfigValidationError):
    value_rep: str | None = None


@strawberry.interface
class PipelineConfigValidationInvalid:
    pipeline_name: str
    errors: list[PipelineConfigValidationError]


@strawberry.type
class RunConfigValidationInvalid(PipelineConfigValidationInvalid):
    pass


@strawberry.interface
class PipelineRunNotFoundError(Error):
    run_id: str


@strawberry.type
class RunNotFoundError(PipelineRunNotFoundError):
    pass


@strawberry.type
class InvalidPipelineRunsFilterError(Error):
    pass


@strawberry.type
class RepositoryNotFoundError(Error):
    repository_name: str
    repository_location_name: str


@strawberry.type
class RepositoryLocationNotFound(Error):
    pass


@strawberry.type
class ReloadNotSupported(Error):
    pass


@strawberry.type
class SensorNotFoundError(Error):
    sensor_name: str


@strawberry.type
class ScheduleNotFoundError(Error):
    schedule_name: str


@strawberry.type
class PartitionSetNotFoundError(Error):
    partition_set_name: str


@strawberry.type
class PartitionKeysNotFoundError(Error):
    partition_keys: list[str]
