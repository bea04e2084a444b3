"""What schedules and sensors share: a name, a target, a default status, user code called
with a context whose other parameters are resources."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tidegate.definitions import limits
from tidegate.definitions.context import Resources
from tidegate.definitions.job import JobDefinition, JobTarget, UnresolvedAssetJob
from tidegate.definitions.selection import AssetSelection, CoercibleToAssetSelection, coerce_selection
from tidegate.errors import (
    InvalidDefinitionError,
    InvalidInvocationError,
    InvalidSelectionError,
    MissingResourceError,
    RunRequestTargetError,
    UnknownJobError,
)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class DefaultScheduleStatus(Enum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


DefaultSensorStatus = DefaultScheduleStatus


@dataclass(frozen=True)
class Target:
    """What a schedule or sensor runs: one or more jobs (by definition or by name), or an asset
    selection run as an ad-hoc job; nothing at all for a sensor that requests no runs."""

    jobs: tuple[JobTarget | str, ...] = ()
    selection: AssetSelection | None = None

    @property
    def job_names(self) -> tuple[str, ...]:
        return tuple(j if isinstance(j, str) else j.name for j in self.jobs)

    @property
    def job_name(self) -> str | None:
        """The targeted job's name when there is exactly one."""
        return self.job_names[0] if len(self.jobs) == 1 else None

    @property
    def job_definitions(self) -> tuple[JobTarget, ...]:
        """The targeted jobs given as definitions (they join Definitions, as in Dagster)."""
        return tuple(j for j in self.jobs if isinstance(j, UnresolvedAssetJob | JobDefinition))

    @property
    def describe(self) -> str:
        if self.jobs:
            return f"job{'s' if len(self.jobs) > 1 else ''} {', '.join(self.job_names)}"
        return "asset selection" if self.selection is not None else "nothing"

    def job_for(self, label: str, job_name: str | None, known_jobs: Collection[str]) -> str | None:
        """The job a RunRequest with ``job_name`` runs, as in Dagster: a request to an
        instigator with several jobs must name one of them; a named job must be one the
        instigator targets (for an asset-selection target, any defined job). None: the ad-hoc
        job of the selection. A wrong request raises a typed error naming both."""
        if self.selection is None and not self.jobs:
            raise RunRequestTargetError(
                f"{label}: requested a run but targets no job; give the decorator target=, job=, jobs= or job_name="
            )
        if job_name is None:
            if len(self.jobs) > 1:
                raise RunRequestTargetError(
                    f"{label}: targets several jobs ({', '.join(self.job_names)}); each RunRequest must "
                    "set job_name to one of them"
                )
            return self.job_name
        if job_name not in known_jobs:
            raise UnknownJobError(f"{label}: RunRequest names job '{job_name}', which is not defined")
        if self.jobs and job_name not in self.job_names:
            raise RunRequestTargetError(
                f"{label}: RunRequest names job '{job_name}', which it does not target "
                f"(targets: {', '.join(self.job_names)})"
            )
        return job_name


def coerce_target(
    label: str,
    job: Any,
    target: Any,
    *,
    job_name: Any = None,
    jobs: Any = None,
    asset_selection: Any = None,
    required: bool = True,
) -> Target:
    """One Target from the mutually exclusive ways Dagster spells it (target=, job=, jobs=,
    job_name=, asset_selection=); ``required=False`` lets a sensor target nothing."""
    given = {
        k: v
        for k, v in (
            ("target", target),
            ("job", job),
            ("jobs", jobs),
            ("job_name", job_name),
            ("asset_selection", asset_selection),
        )
        if v is not None
    }
    if len(given) > 1:
        raise InvalidDefinitionError(f"{label}: give only one of {', '.join(f'{k}=' for k in given)}")
    if not given:
        if required:
            raise InvalidDefinitionError(f"{label}: no target (pass target=a job or an asset selection)")
        return Target()
    kind, value = next(iter(given.items()))
    if kind == "job_name" or (kind == "job" and isinstance(value, str)):
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            raise InvalidDefinitionError(f"{label}: invalid job name {value!r}")
        return Target(jobs=(value,))
    if kind == "jobs":
        return _coerce_jobs(label, value)
    if isinstance(value, UnresolvedAssetJob | JobDefinition):
        return Target(jobs=(value,))
    try:
        return Target(selection=coerce_selection(_as_selection(value)))
    except (InvalidSelectionError, InvalidDefinitionError, TypeError) as exc:
        raise InvalidDefinitionError(f"{label}: invalid target {value!r} ({exc})") from None


def _coerce_jobs(label: str, value: Any) -> Target:
    if isinstance(value, str | UnresolvedAssetJob | JobDefinition) or not isinstance(value, Sequence) or not value:
        raise InvalidDefinitionError(f"{label}: jobs= must be a non-empty list of jobs, got {value!r}")
    for item in value:
        if not isinstance(item, UnresolvedAssetJob | JobDefinition | str):
            raise InvalidDefinitionError(f"{label}: jobs= holds {item!r}, not a job")
    target = Target(jobs=tuple(value))
    duplicates = sorted({n for n in target.job_names if target.job_names.count(n) > 1})
    if duplicates:
        raise InvalidDefinitionError(f"{label}: jobs= names job '{duplicates[0]}' twice")
    return target


def _as_selection(value: Any) -> CoercibleToAssetSelection:
    if isinstance(value, str | AssetSelection):
        return value
    if isinstance(value, Sequence):
        return list(value)
    return [value]  # a single AssetsDefinition


def check_name(kind: str, name: Any) -> str:
    if isinstance(name, str):
        limits.check_name(kind, "name", name)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidDefinitionError(f"{kind} {name!r}: invalid name (letters, digits, '_', '-')")
    return name


def check_tags(label: str, tags: Mapping[str, str] | None) -> dict[str, str]:
    for k, v in (tags or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidDefinitionError(f"{label}: tags must map str to str, got {k!r}: {v!r}")
    return dict(limits.check_tags(label, tags or {}))


def resource_params(label: str, fn: Callable[..., Any]) -> tuple[bool, tuple[str, ...]]:
    """(takes a context?, names of resource parameters) for a schedule or sensor function."""
    params = list(inspect.signature(fn).parameters.values())
    takes_context = bool(params) and params[0].name in ("context", "_context", "_")
    if takes_context:
        params = params[1:]
    for p in params:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise InvalidDefinitionError(f"{label}: *args and **kwargs are not supported")
    return takes_context, tuple(p.name for p in params)


def call_user_code(
    fn: Callable[..., Any], context: Any, takes_context: bool, params: Sequence[str], resources: Mapping[str, Any]
) -> Any:
    kwargs = {name: resources[name] for name in params}
    return fn(context, **kwargs) if takes_context else fn(**kwargs)


def invoke_directly(
    label: str,
    fn: Callable[..., Any],
    takes_context: bool,
    params: Sequence[str],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    context_type: type[Any],
    default_context: Callable[[], Any],
) -> Any:
    """Call a schedule's or sensor's function as Dagster's direct invocation does (a user's
    unit test: ``my_sensor(build_sensor_context(...))``): at most one positional argument, the
    context; resources by keyword or from the context's resources. Returns what the function
    returned (a generator stays a generator)."""
    extra = {k: v for k, v in kwargs.items() if k not in params}
    if len(args) + len(extra) > 1:
        raise InvalidInvocationError(f"{label}: called with more than a context and resources ({sorted(extra)})")
    context: Any = args[0] if args else next(iter(extra.values()), None)
    if context is None:
        if takes_context:
            raise InvalidInvocationError(f"{label}: its function takes a context; pass {default_context.__name__}()")
        context = default_context()
    if not isinstance(context, context_type):
        raise InvalidInvocationError(
            f"{label}: expected a {context_type.__name__} as the context, got {type(context).__name__}"
        )
    resources: Resources = context.resources
    available = {**resources.as_dict(), **{k: v for k, v in kwargs.items() if k in params}}
    missing = [name for name in params if name not in available]
    if missing:
        raise MissingResourceError(f"{label}: missing resource '{missing[0]}' (pass it to the context's resources=)")
    return call_user_code(fn, context, takes_context, params, available)
