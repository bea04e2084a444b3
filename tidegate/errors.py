"""Every error tidegate raises on purpose, in one tree under :class:`TidegateError`.

Messages name the offending definition first, then what is wrong, then (where there is one)
the fix: ``asset 'daily_report': unknown dependency 'cleaned' (no asset or resource has that
name)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tidegate.definitions.key import AssetKey


class TidegateError(Exception):
    """Base class of every error tidegate raises on purpose."""


# -- definitions: raised when user code is imported or Definitions is built ----------------


class DefinitionError(TidegateError):
    """A definition is invalid; raised at import or load time, never in the beat at 3 a.m."""


class InvalidDefinitionError(DefinitionError):
    """An argument of a definition is malformed (a bad name, a negative retry count, ...)."""


class DuplicateDefinitionError(DefinitionError):
    """Two definitions share one key or name."""


class UnknownDependencyError(DefinitionError):
    """An asset depends on an asset that is not defined."""


class DependencyCycleError(DefinitionError):
    """The asset graph has a cycle; ``cycle`` lists it, first key repeated at the end."""

    def __init__(self, message: str, cycle: list[str]) -> None:
        super().__init__(message)
        self.cycle = cycle


class InvalidSelectionError(DefinitionError):
    """An asset selection string cannot be parsed."""


class EmptySelectionError(DefinitionError):
    """A job's selection matches no asset."""


class ExternalAssetError(InvalidSelectionError):
    """A job, selection or launch names an external asset (an ``AssetSpec``, or a ``deps=`` key
    no code defines): another system produces it, tidegate only records reports of it."""


class MissingResourceError(DefinitionError):
    """An asset needs a resource that Definitions does not provide."""


class DefinitionsLoadError(TidegateError):
    """User code could not be imported, or holds no (or more than one) Definitions object."""


# -- runtime ----------------------------------------------------------------------------------


class UnknownJobError(TidegateError):
    """A run was requested for a job the loaded code does not define."""


class PartitionKeyError(TidegateError):
    """A partition key the partitions definition does not have, or a malformed one."""


class InvalidPartitionKeyError(PartitionKeyError):
    """A partition key no partitions definition may hold: empty, longer than the storage column
    (255 characters), holding a control character, ``,``, ``[``, ``]`` or ``\\``, or reading as
    a path out of its folder (``..``, ``/x``, ``a//b``). Refused wherever a key comes in."""


class LaunchRequestError(TidegateError):
    """A request to launch a job is malformed (a job name, partition key, run key or tag that is
    not a string, a priority tag that is not an integer)."""


class InputLimitError(InvalidDefinitionError, LaunchRequestError):
    """A value longer than its limit, or holding a character it may not (a control character in
    a key, name or tag; NUL in a cursor): see tidegate.definitions.limits and docs/limits.md.
    Raised where the value comes in (a definition, a RunRequest, a sensor's cursor, the CLI, a
    launch), the same on SQLite and PostgreSQL; the message names the value, cut short, and the
    limit. Both an invalid definition argument and a malformed launch request, so either
    ``except`` catches it."""


@dataclass(frozen=True)
class ConfigProblem:
    """One place where a run's config does not fit its job: ``path`` in the run config's own
    shape (``("ops", NODE, "config", FIELD)``, a nested graph's op as ``("ops", GRAPH, "ops",
    OP, ...)``, or ``("resources", KEY, "config", FIELD)``) and ``kind``: ``missing`` (a
    required field not given), ``not_defined`` (a node, resource or field the job does not
    have) or ``type_mismatch`` (a value of the wrong type)."""

    path: tuple[str, ...]
    kind: Literal["missing", "not_defined", "type_mismatch"]


class RunConfigError(LaunchRequestError):
    """A run's configuration does not fit its job: an unknown op, asset or resource, a field
    missing, unknown or of the wrong type, an environment variable unset on the worker. The
    message names the job, the node and the field, never a value (it may be a secret);
    ``problems`` says the same per field, for a caller that answers in a structured form (the
    GraphQL API's ``RunConfigValidationInvalid``). It is empty when the config as a whole is
    malformed (not an object, not JSON-serialisable)."""

    def __init__(self, message: str, problems: tuple[ConfigProblem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class NotFoundError(TidegateError):
    """A named thing (run, backfill, asset, schedule, sensor, token) does not exist; the API
    answers 404."""


class RunNotFoundError(NotFoundError):
    """No run has the given id."""


class BackfillNotFoundError(NotFoundError):
    """No backfill has the given id (or the prefix matches none)."""


class ConflictError(TidegateError):
    """The request clashes with the current state; the API answers 409."""


class DuplicateRunKeyError(ConflictError):
    """A launch names a run key that already has a run (``run_id`` is that run)."""

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class AuthenticationError(TidegateError):
    """A request to the webserver carries no API token, or one that is unknown, revoked or
    expired (the message never shows the token); the API answers 401."""


class AuthRateLimitError(AuthenticationError):
    """Too many failed authentications from one client lately; the API answers 429 until the
    window has passed."""


class PermissionDeniedError(TidegateError):
    """An API token's role is below what the request needs; the API answers 403."""


class TokenError(TidegateError):
    """An API token request is malformed: a bad name, role or expiry, or a duplicate name."""


class StorageError(TidegateError):
    """The database is not usable as it is (e.g. its schema is older than this code)."""


class InstigatorEvaluationError(TidegateError):
    """A schedule or sensor function returned something it may not (recorded on its tick)."""


class RunRequestTargetError(InstigatorEvaluationError):
    """A RunRequest's job does not fit its instigator: no job_name although the instigator
    targets several jobs (or none), or a job_name it does not target."""


class InvalidInvocationError(TidegateError):
    """A schedule or sensor called directly (in a unit test) with arguments it cannot take."""


class AssetOutputError(TidegateError):
    """An asset function returned or yielded something it may not: a second ``Output`` for its
    one output, an output name it does not have, a bare value from a generator, or no output
    at all from a generator."""


class StepInterruptedError(TidegateError):
    """Raised inside a running asset (at its next ``context.log`` call or input/output) once
    its attempt no longer owns the step: the run was canceled, or the run monitor gave the
    attempt up. Nothing of the attempt is recorded."""


class RunFailedError(TidegateError):
    """An in-process run (``tidegate.materialize``) failed; the message holds the traceback."""


class ConfigError(TidegateError):
    """``tidegate.toml`` (or a TIDEGATE_* variable) holds an invalid setting."""


# -- S3 (tidegate.s3, the ``s3`` extra) -------------------------------------------------------


class S3DependencyError(TidegateError):
    """boto3 is not installed (it comes with the ``s3`` extra)."""


class S3IOManagerError(TidegateError):
    """Reading or writing a step's output in S3 failed (the message names asset, partition and URI)."""


class S3OutputNotFoundError(S3IOManagerError, LookupError):
    """A downstream step asked for an output that is not in the bucket."""

    def __init__(self, message: str, *, asset_key: AssetKey | None, partition_key: str | None, uri: str) -> None:
        super().__init__(message)
        self.asset_key = asset_key
        self.partition_key = partition_key
        self.uri = uri
