"""Software-defined assets: the ``@asset`` decorator and what it builds."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from tidegate.definitions.automation_condition import AutomationCondition, check_automation_condition
from tidegate.definitions.key import AssetKey, CoercibleToAssetKey
from tidegate.definitions.limits import check_metadata, check_name, check_tags
from tidegate.definitions.partitions import BackfillPolicy, PartitionMapping, PartitionsDefinition
from tidegate.definitions.resource import ConfigurableResource
from tidegate.definitions.retry import RetryPolicy
from tidegate.errors import InvalidDefinitionError

DEFAULT_GROUP = "default"
DEFAULT_QUEUE = "tidegate"
DEFAULT_IO_MANAGER_KEY = "io_manager"
# matched with fullmatch: "$" would admit a trailing newline
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")  # selectable as "group:<name>"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_KINDS = 3  # as Dagster: "Assets can have at most three kinds"


@dataclass(frozen=True)
class AssetIn:
    """How a parameter loads its upstream asset: a key other than the parameter's name,
    and/or which upstream partitions one partition reads (``partition_mapping``)."""

    key: CoercibleToAssetKey | None = None
    partition_mapping: PartitionMapping | None = None


@dataclass(frozen=True)
class AssetsDefinition:
    """One asset: its key, the function that computes it, and how it is executed.

    ``inputs`` maps parameter names to upstream keys whose values are loaded;
    ``deps`` are upstream keys that must be materialized first but are not loaded;
    ``ambiguous_params`` are parameters resolved when Definitions knows the resources: a
    resource of that name, else the asset of that name. ``resource_params`` are parameters
    that receive a resource; ``context_resource_keys`` are resources required through
    ``required_resource_keys`` that are not parameters (reached as ``context.resources.x``).
    """

    key: AssetKey
    fn: Callable[..., Any]
    inputs: Mapping[str, AssetKey]
    deps: tuple[AssetKey, ...]
    resource_params: frozenset[str]
    ambiguous_params: tuple[str, ...]
    context_param: str | None
    group_name: str = DEFAULT_GROUP
    tags: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None
    retry_policy: RetryPolicy | None = None
    queue: str = DEFAULT_QUEUE
    pool: str | None = None
    timeout: float | None = None
    io_manager_key: str = DEFAULT_IO_MANAGER_KEY
    context_resource_keys: frozenset[str] = frozenset()
    partitions_def: PartitionsDefinition | None = None
    partition_mappings: Mapping[AssetKey, PartitionMapping] = field(default_factory=dict)
    backfill_policy: BackfillPolicy | None = None
    op_tags: Mapping[str, Any] = field(default_factory=dict)
    kinds: frozenset[str] = frozenset()
    owners: tuple[str, ...] = ()
    code_version: str | None = None
    is_external: bool = False
    automation_condition: AutomationCondition | None = None

    @property
    def name(self) -> str:
        return self.key.path[-1]

    def resolve_params(self, resource_keys: Iterable[str], asset_keys: Iterable[AssetKey]) -> AssetsDefinition:
        """Return a copy whose ambiguous parameters are sorted into resources and inputs."""
        if not self.ambiguous_params:
            return self
        available = set(resource_keys)
        assets = set(asset_keys)
        inputs = dict(self.inputs)
        resources = set(self.resource_params)
        for param in self.ambiguous_params:
            if param in available and AssetKey(param) in assets:
                raise InvalidDefinitionError(
                    f"asset '{self.key}': parameter {param!r} names both a resource and an asset; "
                    f"use ins={{{param!r}: AssetIn(...)}} or required_resource_keys"
                )
            if param in available:
                resources.add(param)
            else:
                inputs[param] = AssetKey(param)
        return _replace(self, inputs=inputs, resource_params=frozenset(resources), ambiguous_params=())

    @property
    def required_resource_keys(self) -> frozenset[str]:
        """Every resource this asset needs, as a parameter or through its context."""
        return self.resource_params | self.context_resource_keys

    @property
    def upstream_keys(self) -> tuple[AssetKey, ...]:
        """Every asset that must be materialized before this one, loaded or not."""
        seen = dict.fromkeys([*self.inputs.values(), *self.deps])
        return tuple(seen)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly, as in a plain unit test."""
        return self.fn(*args, **kwargs)


def _replace(asset: AssetsDefinition, **changes: Any) -> AssetsDefinition:
    return dataclasses.replace(asset, **changes)


@overload
def asset(fn: Callable[..., Any], /) -> AssetsDefinition: ...


@overload
def asset(
    *,
    name: str | None = None,
    key: CoercibleToAssetKey | None = None,
    key_prefix: str | Sequence[str] | None = None,
    ins: Mapping[str, AssetIn | CoercibleToAssetKey] | None = None,
    deps: Sequence[AssetsDefinition | CoercibleToAssetKey] | None = None,
    group_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    description: str | None = None,
    retry_policy: RetryPolicy | None = None,
    queue: str | None = None,
    pool: str | None = None,
    timeout: float | None = None,
    io_manager_key: str | None = None,
    required_resource_keys: Iterable[str] | None = None,
    partitions_def: PartitionsDefinition | None = None,
    backfill_policy: BackfillPolicy | None = None,
    op_tags: Mapping[str, Any] | None = None,
    kinds: Iterable[str] | None = None,
    owners: Sequence[str] | None = None,
    code_version: str | None = None,
    automation_condition: AutomationCondition | None = None,
) -> Callable[[Callable[..., Any]], AssetsDefinition]: ...


def asset(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    key: CoercibleToAssetKey | None = None,
    key_prefix: str | Sequence[str] | None = None,
    ins: Mapping[str, AssetIn | CoercibleToAssetKey] | None = None,
    deps: Sequence[AssetsDefinition | CoercibleToAssetKey] | None = None,
    group_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    description: str | None = None,
    retry_policy: RetryPolicy | None = None,
    queue: str | None = None,
    pool: str | None = None,
    timeout: float | None = None,
    io_manager_key: str | None = None,
    required_resource_keys: Iterable[str] | None = None,
    partitions_def: PartitionsDefinition | None = None,
    backfill_policy: BackfillPolicy | None = None,
    op_tags: Mapping[str, Any] | None = None,
    kinds: Iterable[str] | None = None,
    owners: Sequence[str] | None = None,
    code_version: str | None = None,
    automation_condition: AutomationCondition | None = None,
) -> AssetsDefinition | Callable[[Callable[..., Any]], AssetsDefinition]:
    """Define an asset from a function, validating every argument at once.

    Parameters are classified by name: ``context`` (or one annotated with
    ``AssetExecutionContext``) receives the execution context; names in ``ins`` are loaded
    from those upstream assets; names in ``required_resource_keys`` or annotated with a
    ``ConfigurableResource`` subclass are resources; any other name is a resource if
    Definitions provides one of that name, else the upstream asset of that name.
    """

    def build(func: Callable[..., Any]) -> AssetsDefinition:
        return _build_asset(
            func,
            name=name,
            key=key,
            key_prefix=key_prefix,
            ins=ins or {},
            deps=deps or (),
            group_name=group_name,
            tags=tags or {},
            metadata=metadata or {},
            description=description,
            retry_policy=retry_policy,
            queue=queue,
            pool=pool,
            timeout=timeout,
            io_manager_key=io_manager_key,
            required_resource_keys=set(required_resource_keys or ()),
            partitions_def=partitions_def,
            backfill_policy=backfill_policy,
            op_tags=op_tags or {},
            kinds=kinds,
            owners=owners or (),
            code_version=code_version,
            automation_condition=automation_condition,
        )

    return build(fn) if fn is not None else build


def _build_asset(
    func: Callable[..., Any],
    *,
    name: str | None,
    key: CoercibleToAssetKey | None,
    key_prefix: str | Sequence[str] | None,
    ins: Mapping[str, AssetIn | CoercibleToAssetKey],
    deps: Sequence[AssetsDefinition | CoercibleToAssetKey],
    group_name: str | None,
    tags: Mapping[str, str],
    metadata: Mapping[str, Any],
    description: str | None,
    retry_policy: RetryPolicy | None,
    queue: str | None,
    pool: str | None,
    timeout: float | None,
    io_manager_key: str | None,
    required_resource_keys: set[str],
    partitions_def: PartitionsDefinition | None = None,
    backfill_policy: BackfillPolicy | None = None,
    op_tags: Mapping[str, Any] | None = None,
    kinds: Iterable[str] | None = None,
    owners: Sequence[str] = (),
    code_version: str | None = None,
    automation_condition: AutomationCondition | None = None,
) -> AssetsDefinition:
    fn_name = getattr(func, "__name__", repr(func))
    label = f"asset {name or fn_name!r}"
    if not callable(func):
        raise InvalidDefinitionError(f"{label}: @asset decorates a function, got {func!r}")
    if key is not None and (name is not None or key_prefix is not None):
        raise InvalidDefinitionError(f"{label}: give either key= or name=/key_prefix=, not both")
    try:
        asset_key = AssetKey.from_coercible(key) if key is not None else AssetKey(name or fn_name)
        if key_prefix is not None:
            asset_key = asset_key.with_prefix(key_prefix)
    except InvalidDefinitionError as exc:
        raise type(exc)(f"{label}: {exc}") from None  # an InputLimitError stays one
    label = f"asset '{asset_key}'"

    check_descriptive_args(
        label, tags=tags, group_name=group_name, owners=owners, code_version=code_version, metadata=metadata
    )
    kind_set = check_kinds(label, kinds)
    tag_values = check_op_tags(label, op_tags or {})
    for what, value in (("queue", queue), ("pool", pool)):
        if value is not None:
            check_name(label, f"{what} name", value)  # the steps' queue and pool columns
            if not _QUEUE_NAME.fullmatch(value):
                raise InvalidDefinitionError(f"{label}: invalid {what} name {value!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise InvalidDefinitionError(f"{label}: timeout must be a number of seconds > 0, got {timeout!r}")
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise InvalidDefinitionError(f"{label}: retry_policy must be a RetryPolicy, got {retry_policy!r}")

    params, context_param, annotated_resources = _classify_params(func, label)
    if partitions_def is not None and not isinstance(partitions_def, PartitionsDefinition):
        raise InvalidDefinitionError(f"{label}: partitions_def must be a PartitionsDefinition, got {partitions_def!r}")
    inputs: dict[str, AssetKey] = {}
    mappings: dict[AssetKey, PartitionMapping] = {}
    for param, target in ins.items():
        if param not in params:
            raise InvalidDefinitionError(f"{label}: ins names {param!r}, which is not a parameter")
        try:
            if isinstance(target, AssetIn):
                inputs[param] = AssetKey.from_coercible(target.key if target.key is not None else param)
                if target.partition_mapping is not None:
                    mappings[inputs[param]] = target.partition_mapping
                continue
            inputs[param] = AssetKey.from_coercible(target)
        except (InvalidDefinitionError, TypeError) as exc:
            raise InvalidDefinitionError(f"{label}: invalid key for ins {param!r}: {target!r} ({exc})") from None
    resource_params = (required_resource_keys & set(params)) | annotated_resources
    ambiguous = tuple(p for p in params if p not in inputs and p not in resource_params)
    extra_required = required_resource_keys - set(params)

    dep_keys: list[AssetKey] = []
    for dep in deps:
        try:
            dep_keys.append(AssetKey.from_coercible(dep))
        except (InvalidDefinitionError, TypeError) as exc:
            raise InvalidDefinitionError(f"{label}: invalid entry in deps: {dep!r} ({exc})") from None

    return AssetsDefinition(
        key=asset_key,
        fn=func,
        inputs=inputs,
        deps=tuple(dep_keys),
        resource_params=frozenset(resource_params),
        ambiguous_params=ambiguous,
        context_param=context_param,
        group_name=group_name or DEFAULT_GROUP,
        tags=dict(tags),
        metadata=dict(metadata),
        description=description if description is not None else inspect.getdoc(func),
        retry_policy=retry_policy,
        queue=queue or DEFAULT_QUEUE,
        pool=pool,
        timeout=float(timeout) if timeout is not None else None,
        io_manager_key=io_manager_key or DEFAULT_IO_MANAGER_KEY,
        context_resource_keys=frozenset(extra_required),
        partitions_def=partitions_def,
        partition_mappings=mappings,
        backfill_policy=backfill_policy,
        op_tags=tag_values,
        kinds=kind_set,
        owners=tuple(owners),
        code_version=code_version,
        automation_condition=check_automation_condition(label, automation_condition),
    )


def check_descriptive_args(
    label: str,
    *,
    tags: Mapping[str, str],
    group_name: str | None,
    owners: Sequence[str],
    code_version: str | None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Validate what ``@asset`` and ``AssetSpec`` share: tags, group, owners, code version,
    metadata keys (within tidegate.definitions.limits)."""
    for tag_key, tag_value in tags.items():
        if not isinstance(tag_key, str) or not isinstance(tag_value, str):
            raise InvalidDefinitionError(f"{label}: tags must map str to str, got {tag_key!r}: {tag_value!r}")
    check_tags(label, tags)
    check_metadata(label, metadata or {})
    if group_name is not None and isinstance(group_name, str):
        check_name(label, "group name", group_name)
    if group_name is not None and (not isinstance(group_name, str) or not _GROUP_NAME.fullmatch(group_name)):
        raise InvalidDefinitionError(
            f"{label}: invalid group name {group_name!r} (letters, digits, '_' and '-', not starting with a digit)"
        )
    if isinstance(owners, str):
        raise InvalidDefinitionError(f"{label}: owners must be a list of strings, got the string {owners!r}")
    for owner in owners:
        if not isinstance(owner, str) or not (_EMAIL.match(owner) or (owner.startswith("team:") and len(owner) > 5)):
            raise InvalidDefinitionError(
                f"{label}: invalid owner {owner!r} (an email address, or a team name prefixed with 'team:')"
            )
    if code_version is not None and not isinstance(code_version, str):
        raise InvalidDefinitionError(f"{label}: code_version must be a string, got {code_version!r}")


def check_kinds(label: str, kinds: Iterable[str] | None) -> frozenset[str]:
    """Kinds are a set of strings (what the asset is: ``{"python", "snowflake"}``), at most three."""
    if kinds is None:
        return frozenset()
    if isinstance(kinds, str) or not isinstance(kinds, Iterable):
        raise InvalidDefinitionError(f"{label}: kinds must be a set of strings, got {kinds!r}")
    found = frozenset(kinds)
    bad = [k for k in found if not isinstance(k, str) or not k]
    if bad:
        raise InvalidDefinitionError(f"{label}: kinds must be non-empty strings, got {bad[0]!r}")
    if len(found) > MAX_KINDS:
        raise InvalidDefinitionError(f"{label}: at most {MAX_KINDS} kinds, got {len(found)}: {sorted(found)}")
    return found


def check_op_tags(label: str, op_tags: Mapping[str, Any]) -> dict[str, Any]:
    """Op tags (Dagster's per-step execution hints) map strings to JSON values."""
    if not isinstance(op_tags, Mapping):
        raise InvalidDefinitionError(f"{label}: op_tags must be a mapping, got {op_tags!r}")
    for key, value in op_tags.items():
        if not isinstance(key, str):
            raise InvalidDefinitionError(f"{label}: op_tags keys must be strings, got {key!r}")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise InvalidDefinitionError(f"{label}: op_tags[{key!r}] is not JSON-serializable: {value!r}") from None
    return dict(op_tags)


def _classify_params(func: Callable[..., Any], label: str) -> tuple[list[str], str | None, set[str]]:
    """Return (data-or-resource params, the context param, params typed as resources)."""
    from tidegate.definitions.context import AssetExecutionContext

    signature = inspect.signature(func)
    annotations = _resolved_annotations(func)
    params: list[str] = []
    context_param: str | None = None
    resources: set[str] = set()
    for param in signature.parameters.values():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise InvalidDefinitionError(f"{label}: *args and **kwargs are not supported")
        annotation = annotations.get(param.name)
        is_context = annotation is AssetExecutionContext or (
            isinstance(annotation, type) and issubclass(annotation, AssetExecutionContext)
        )
        if is_context or (param.name == "context" and context_param is None):
            if context_param is not None:
                raise InvalidDefinitionError(f"{label}: two context parameters")
            context_param = param.name
            continue
        if isinstance(annotation, type) and issubclass(annotation, ConfigurableResource):
            resources.add(param.name)
        params.append(param.name)
    return params, context_param, resources


def _resolved_annotations(func: Callable[..., Any]) -> dict[str, Any]:
    """The function's annotations, string ones evaluated one by one.

    One annotation that cannot be evaluated (a name imported under ``TYPE_CHECKING``) is left
    out on its own; the others, such as ``context: AssetExecutionContext``, still count.
    """
    try:
        raw = inspect.get_annotations(func)
    except Exception:
        return {}
    namespace = getattr(inspect.unwrap(func), "__globals__", {})
    resolved: dict[str, Any] = {}
    for name, annotation in raw.items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)
            except Exception:  # unresolvable: classify this parameter by name only
                continue
        resolved[name] = annotation
    return resolved
