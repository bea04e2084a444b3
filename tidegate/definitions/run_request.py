"""What schedules and sensors return: ``RunRequest``, ``SkipReason``, ``SensorResult``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidegate.definitions.key import AssetKey
from tidegate.definitions.limits import (
    MAX_RUN_KEY_LENGTH,
    check_cursor,
    check_run_key,
    check_stored_text,
    check_tags,
)
from tidegate.errors import InstigatorEvaluationError, InvalidDefinitionError

__all__ = ["MAX_RUN_KEY_LENGTH", "Evaluation", "RunRequest", "SensorResult", "SkipReason", "normalize"]


@dataclass(frozen=True)
class RunRequest:
    """Ask for one run. ``run_key`` makes the request idempotent for the life of the
    instigator: a key it has used before never creates a second run. Its run key and tags are
    checked against tidegate.definitions.limits when it is built (InputLimitError)."""

    run_key: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    job_name: str | None = None
    asset_selection: Sequence[AssetKey] | None = None
    partition_key: str | None = None
    priority: int | None = None
    run_config: Any = None  # a RunConfig or its dict form; checked against the job when planned

    def __post_init__(self) -> None:
        if self.run_key is not None and not isinstance(self.run_key, str):
            raise InvalidDefinitionError(f"RunRequest: run_key must be a string, got {self.run_key!r}")
        check_run_key("RunRequest", self.run_key, "run_key")
        for k, v in (self.tags or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InvalidDefinitionError(f"RunRequest: tags must map str to str, got {k!r}: {v!r}")
        check_tags("RunRequest", self.tags or {})
        if self.asset_selection is not None:
            object.__setattr__(self, "asset_selection", tuple(AssetKey.from_coercible(k) for k in self.asset_selection))


@dataclass(frozen=True)
class SkipReason:
    """Return this to record why a tick requested nothing."""

    skip_message: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.skip_message, str):
            check_stored_text("SkipReason", "skip message", self.skip_message)


@dataclass(frozen=True)
class SensorResult:
    """What a sensor tick decided. ``on_commit`` (no arguments) is called by the beat once the
    tick, its cursor and its runs are committed, and never otherwise: not when the commit fails
    or is superseded, not on a FAILURE tick, not by ``tidegate sensor preview``. Use it to
    acknowledge what the tick consumed (e.g. delete queue messages); an exception it raises is
    logged and does not undo the tick."""

    run_requests: Sequence[RunRequest] | None = None
    cursor: str | None = None
    skip_reason: SkipReason | str | None = None
    dynamic_partitions_requests: Sequence[Any] | None = None
    on_commit: Callable[[], None] | None = None


@dataclass(frozen=True)
class Evaluation:
    """A schedule's or sensor's return value, normalized and checked."""

    run_requests: tuple[RunRequest, ...]
    skip_reason: str | None
    cursor: str | None  # None: leave the cursor as it was
    cursor_set: bool
    dynamic_partitions_requests: tuple[Any, ...] = ()
    on_commit: Callable[[], None] | None = None  # SensorResult.on_commit
    backlog: bool = False  # an event sensor left events for the next tick: evaluate it again at once


def normalize(label: str, value: Any, *, cursor: str | None = None, cursor_set: bool = False) -> Evaluation:
    """Turn what user code returned (or yielded) into an Evaluation; a wrong type raises
    InstigatorEvaluationError naming the instigator and the type, a cursor or skip message the
    database cannot store (tidegate.definitions.limits) InputLimitError naming the instigator."""
    if inspect.isgenerator(value):
        value = list(value)
    evaluation = _normalize(label, value, cursor, cursor_set)
    if evaluation.cursor_set and evaluation.cursor is not None:
        if not isinstance(evaluation.cursor, str):
            raise InstigatorEvaluationError(f"{label}: the cursor must be a string, got {evaluation.cursor!r:.80}")
        check_cursor(label, evaluation.cursor)
    if isinstance(evaluation.skip_reason, str):
        check_stored_text(label, "skip message", evaluation.skip_reason)
    return evaluation


def _normalize(label: str, value: Any, cursor: str | None, cursor_set: bool) -> Evaluation:
    if isinstance(value, SensorResult):
        if value.cursor is not None and cursor_set:
            raise InstigatorEvaluationError(f"{label}: set the cursor either with update_cursor() or in SensorResult")
        requests = list(value.run_requests or ())
        skip = value.skip_reason
        skip_text = skip.skip_message if isinstance(skip, SkipReason) else skip
        _check_requests(label, requests)
        return Evaluation(
            tuple(requests),
            skip_text,
            value.cursor if value.cursor is not None else cursor,
            cursor_set or value.cursor is not None,
            tuple(value.dynamic_partitions_requests or ()),
            value.on_commit,
        )
    if value is None:
        return Evaluation((), None, cursor, cursor_set)
    if isinstance(value, SkipReason):
        return Evaluation((), value.skip_message, cursor, cursor_set)
    if isinstance(value, RunRequest):
        return Evaluation((value,), None, cursor, cursor_set)
    if isinstance(value, list | tuple):
        skips = [v for v in value if isinstance(v, SkipReason)]
        requests = [v for v in value if not isinstance(v, SkipReason)]
        _check_requests(label, requests)
        if skips and requests:
            raise InstigatorEvaluationError(f"{label}: returned both RunRequests and a SkipReason")
        return Evaluation(tuple(requests), skips[0].skip_message if skips else None, cursor, cursor_set)
    raise InstigatorEvaluationError(
        f"{label}: returned {type(value).__name__} ({value!r:.80}); expected RunRequest, a list of them, "
        "SkipReason, SensorResult or None"
    )


def _check_requests(label: str, requests: list[Any]) -> None:
    for item in requests:
        if not isinstance(item, RunRequest):
            raise InstigatorEvaluationError(
                f"{label}: returned {type(item).__name__} ({item!r:.80}) among its run requests; expected RunRequest"
            )
