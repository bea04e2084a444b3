"""``AssetSpec``: an asset's attributes without a function; alone in ``Definitions(assets=...)``
it declares an *external* asset, one that another system produces.

An external asset is part of the graph: assets depend on it (``deps=``) or load it through its
IO manager (``AssetIn``), selections and ``tidegate assets list`` show it, and
``tidegate assets report`` records its materializations, which asset sensors see. tidegate never
materializes it: a job, selection or launch that names it raises ExternalAssetError.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidegate.definitions.asset import (
    DEFAULT_GROUP,
    DEFAULT_IO_MANAGER_KEY,
    AssetsDefinition,
    check_descriptive_args,
    check_kinds,
)
from tidegate.definitions.automation_condition import AutomationCondition, check_automation_condition
from tidegate.definitions.key import AssetKey, CoercibleToAssetKey
from tidegate.definitions.partitions import PartitionsDefinition
from tidegate.errors import ExternalAssetError, InvalidDefinitionError, TidegateError

IO_MANAGER_KEY_METADATA = "dagster/io_manager_key"  # Dagster's key, read by with_io_manager_key


@dataclass(frozen=True, init=False)
class AssetSpec:
    """The attributes of one asset (Dagster's signature, keyword-only after ``key``)."""

    key: AssetKey
    deps: tuple[AssetKey, ...] = ()
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    skippable: bool = False
    group_name: str | None = None
    code_version: str | None = None
    owners: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    kinds: frozenset[str] = frozenset()
    partitions_def: PartitionsDefinition | None = None
    automation_condition: AutomationCondition | None = None

    def __init__(
        self,
        key: CoercibleToAssetKey,
        *,
        deps: Iterable[CoercibleToAssetKey | AssetsDefinition | AssetSpec] | None = None,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        skippable: bool = False,
        group_name: str | None = None,
        code_version: str | None = None,
        owners: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
        kinds: Iterable[str] | None = None,
        partitions_def: PartitionsDefinition | None = None,
        automation_condition: AutomationCondition | None = None,
    ) -> None:
        try:
            asset_key = AssetKey.from_coercible(key)
        except (InvalidDefinitionError, TypeError) as exc:
            raise InvalidDefinitionError(f"AssetSpec {key!r}: {exc}") from None
        label = f"AssetSpec '{asset_key}'"
        dep_keys: list[AssetKey] = []
        for dep in deps or ():
            try:
                dep_key = AssetKey.from_coercible(dep)
            except (InvalidDefinitionError, TypeError) as exc:
                raise InvalidDefinitionError(f"{label}: invalid entry in deps: {dep!r} ({exc})") from None
            if dep_key in dep_keys:
                raise InvalidDefinitionError(f"{label}: deps names '{dep_key}' twice")
            dep_keys.append(dep_key)
        check_descriptive_args(
            label,
            tags=tags or {},
            group_name=group_name,
            owners=owners or (),
            code_version=code_version,
            metadata=metadata,
        )
        if partitions_def is not None and not isinstance(partitions_def, PartitionsDefinition):
            raise InvalidDefinitionError(f"{label}: partitions_def must be a PartitionsDefinition")
        values: dict[str, Any] = dict(
            key=asset_key,
            deps=tuple(dep_keys),
            description=description,
            metadata=dict(metadata or {}),
            skippable=bool(skippable),
            group_name=group_name,
            code_version=code_version,
            owners=tuple(owners or ()),
            tags=dict(tags or {}),
            kinds=check_kinds(label, kinds),
            partitions_def=partitions_def,
            automation_condition=check_automation_condition(label, automation_condition),
        )
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def with_io_manager_key(self, io_manager_key: str) -> AssetSpec:
        """A copy whose value downstream assets load through the IO manager ``io_manager_key``."""
        return self.replace_attributes(metadata={**self.metadata, IO_MANAGER_KEY_METADATA: io_manager_key})

    def replace_attributes(self, **changes: Any) -> AssetSpec:
        """A copy with ``changes`` applied (validated again)."""
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return AssetSpec(**{**current, **changes})

    def to_assets_definition(self) -> AssetsDefinition:
        """The external asset this spec declares."""
        io_manager_key = self.metadata.get(IO_MANAGER_KEY_METADATA, DEFAULT_IO_MANAGER_KEY)
        return external_asset(
            self.key,
            deps=self.deps,
            description=self.description,
            metadata=self.metadata,
            group_name=self.group_name or DEFAULT_GROUP,
            tags=self.tags,
            kinds=self.kinds,
            owners=self.owners,
            code_version=self.code_version,
            partitions_def=self.partitions_def,
            io_manager_key=str(io_manager_key),
            automation_condition=self.automation_condition,
        )


def external_asset(key: AssetKey, **attributes: Any) -> AssetsDefinition:
    """An asset definition that cannot be materialized, for an AssetSpec or an undefined dep."""

    def not_materializable(*_args: Any, **_kwargs: Any) -> Any:
        raise ExternalAssetError(f"asset '{key}': external, so tidegate does not materialize it")

    not_materializable.__name__ = key.path[-1]
    return AssetsDefinition(
        key=key,
        fn=not_materializable,
        inputs={},
        deps=tuple(attributes.pop("deps", ())),
        resource_params=frozenset(),
        ambiguous_params=(),
        context_param=None,
        is_external=True,
        **attributes,
    )


def external_input_error(
    asset_key: AssetKey, param: str, upstream: AssetsDefinition | None, error: Exception
) -> TidegateError | None:
    """What a failed load of an external upstream raises: a TidegateError saying who must store
    it. None when the upstream is not external (the original error stands)."""
    if upstream is None or not upstream.is_external:
        return None
    return TidegateError(
        f"asset '{asset_key}': input {param!r} loads external asset '{upstream.key}' through IO manager "
        f"'{upstream.io_manager_key}', which has nothing for it ({error}); the system producing "
        f"'{upstream.key}' must store it there (or depend on it with deps= instead of loading it)"
    )
