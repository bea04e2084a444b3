"""What schedules and sensors share: a name, a target, a default status, user code called
with a context whose other parameters are resources."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tidegate.definitions.job import UnresolvedAssetJob
from tidegate.definitions.selection import AssetSelection, CoercibleToAssetSelection, coerce_selection
from tidegate.errors import InvalidDefinitionError, InvalidSelectionError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class DefaultScheduleStatus(Enum):
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


DefaultSensorStatus = DefaultScheduleStatus


@dataclass(frozen=True)
class Target:
    """A job (by definition or name), or an asset selection run as an ad-hoc job."""

    job: UnresolvedAssetJob | None = None
    job_name: str | None = None
    selection: AssetSelection | None = None

    @property
    def describe(self) -> str:
        if self.job_name:
            return f"job {self.job_name}"
        return "asset selection"


def coerce_target(label: str, job: Any, target: Any) -> Target:
    if job is not None and target is not None:
        raise InvalidDefinitionError(f"{label}: give job= or target=, not both")
    value = job if job is not None else target
    if value is None:
        raise InvalidDefinitionError(f"{label}: no target (pass target=a job or an asset selection)")
    if isinstance(value, UnresolvedAssetJob):
        return Target(job=value, job_name=value.name)
    if isinstance(value, str) and job is not None:
        return Target(job_name=value)
    try:
        return Target(selection=coerce_selection(_as_selection(value)))
    except (InvalidSelectionError, InvalidDefinitionError, TypeError) as exc:
        raise InvalidDefinitionError(f"{label}: invalid target {value!r} ({exc})") from None


def _as_selection(value: Any) -> CoercibleToAssetSelection:
    if isinstance(value, str | AssetSelection):
        return value
    if isinstance(value, Sequence):
        return list(value)
    return [value]  # a single AssetsDefinition


def check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidDefinitionError(f"{kind} {name!r}: invalid name (letters, digits, '_', '-')")
    return name


def check_tags(label: str, tags: Mapping[str, str] | None) -> dict[str, str]:
    for k, v in (tags or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidDefinitionError(f"{label}: tags must map str to str, got {k!r}: {v!r}")
    return dict(tags or {})


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
