"""What an asset function may return or yield besides its value, and how one call is read.

Dagster's rules: an asset returns its value, an ``Output(value, metadata=...)`` or a
``MaterializeResult`` (metadata only, nothing stored by the IO manager). Written as a
generator, it yields exactly one ``Output`` or ``MaterializeResult`` for its output and any
number of ``AssetMaterialization`` / ``AssetObservation`` events. An asset annotated
``-> None`` stores nothing through its IO manager; any other asset that returns ``None`` has
``None`` stored as its value, so a downstream asset that takes it as a parameter receives
``None``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tidegate.definitions.context import MaterializeResult
from tidegate.definitions.key import AssetKey, CoercibleToAssetKey
from tidegate.errors import AssetOutputError

DEFAULT_OUTPUT_NAME = "result"  # the name of an asset's one output (Dagster's)


class Output:
    """An asset's value with metadata to record on its materialization."""

    def __init__(
        self, value: Any, output_name: str = DEFAULT_OUTPUT_NAME, metadata: Mapping[str, Any] | None = None
    ) -> None:
        self.value = value
        self.output_name = output_name
        self.metadata: Mapping[str, Any] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"Output({self.value!r}, output_name={self.output_name!r}, metadata={dict(self.metadata)!r})"


@dataclass(frozen=True)
class _AssetEvent:
    asset_key: AssetKey
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    partition: str | None = None

    def __init__(
        self,
        asset_key: CoercibleToAssetKey,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        partition: str | None = None,
    ) -> None:
        name = type(self).__name__
        try:
            key = AssetKey.from_coercible(asset_key)
        except Exception as exc:
            raise AssetOutputError(f"{name}: invalid asset_key {asset_key!r}: {exc}") from None
        if partition is not None and not isinstance(partition, str):
            raise AssetOutputError(f"{name} of '{key}': partition must be a str, got {partition!r}")
        object.__setattr__(self, "asset_key", key)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "metadata", dict(metadata or {}))
        object.__setattr__(self, "partition", partition)


class AssetMaterialization(_AssetEvent):
    """Yielded by an asset: record a materialization of ``asset_key`` (this asset or another,
    e.g. a table it also wrote), of one ``partition`` or the whole asset."""


class AssetObservation(_AssetEvent):
    """Yielded by an asset: record metadata observed about ``asset_key`` (an event in the
    run's log, not a materialization)."""


@dataclass
class AssetOutcome:
    """What one call of an asset function produced."""

    stores_value: bool  # False: MaterializeResult or an asset annotated ``-> None``
    value: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    materializations: list[AssetMaterialization] = field(default_factory=list)
    observations: list[AssetObservation] = field(default_factory=list)


def annotated_none(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is annotated ``-> None`` (also as a string, under postponed annotations)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve here: read it as written
        hints = {"return": getattr(fn, "__annotations__", {}).get("return", inspect.Signature.empty)}
    return "return" in hints and hints["return"] in (type(None), None, "None")


def read_result(
    key: AssetKey, result: Any, *, returns_none: bool, checkpoint: Callable[[], None] = lambda: None
) -> AssetOutcome:
    """Read what asset ``key``'s function returned (or, for a generator, everything it yields;
    ``checkpoint`` runs before each next item, so an interrupted step stops between them).
    ``returns_none``: the function is annotated ``-> None``."""
    if inspect.isgenerator(result):
        return _read_generator(key, result, returns_none, checkpoint)
    outcome = AssetOutcome(stores_value=True)
    if result is None and returns_none:
        outcome.stores_value = False
    elif isinstance(result, (Output, MaterializeResult)):
        _take_output(key, outcome, result)
    else:
        outcome.value = result
    return outcome


def _read_generator(
    key: AssetKey, events: Iterator[Any], returns_none: bool, checkpoint: Callable[[], None]
) -> AssetOutcome:
    label = f"asset '{key}'"
    outcome = AssetOutcome(stores_value=False)
    seen_output = False
    while True:
        checkpoint()
        try:
            item = next(events)
        except StopIteration:
            break
        if isinstance(item, AssetMaterialization):
            outcome.materializations.append(item)
        elif isinstance(item, AssetObservation):
            outcome.observations.append(item)
        elif isinstance(item, (Output, MaterializeResult)):
            if seen_output:
                raise AssetOutputError(f"{label}: yielded its output '{DEFAULT_OUTPUT_NAME}' more than once")
            seen_output = True
            _take_output(key, outcome, item)
        else:
            raise AssetOutputError(
                f"{label}: yielded a {type(item).__name__} ({item!r:.80}); a generator asset yields "
                "Output(value), MaterializeResult, AssetMaterialization or AssetObservation - "
                "wrap the value in Output(...)"
            )
    if not seen_output and not returns_none:
        raise AssetOutputError(
            f"{label}: did not yield an Output or MaterializeResult for its output '{DEFAULT_OUTPUT_NAME}'"
        )
    return outcome


def _take_output(key: AssetKey, outcome: AssetOutcome, item: Output | MaterializeResult) -> None:
    label = f"asset '{key}'"
    if isinstance(item, MaterializeResult):
        if item.asset_key is not None and AssetKey.from_coercible(item.asset_key) != key:
            raise AssetOutputError(f"{label}: MaterializeResult names asset '{item.asset_key}', not this asset")
        outcome.stores_value = False
        outcome.metadata.update(item.metadata)
        return
    if item.output_name != DEFAULT_OUTPUT_NAME:
        raise AssetOutputError(
            f"{label}: Output names output {item.output_name!r}, which does not exist; "
            f"an asset has one output, {DEFAULT_OUTPUT_NAME!r}"
        )
    outcome.stores_value = True
    outcome.value = item.value
    outcome.metadata.update(item.metadata)
