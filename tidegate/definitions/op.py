"""Ops: the ``@op`` decorator, its inputs and outputs, and what an op returns or yields.

An op is a function run as one step of an op job (see ``op_graph``). Its parameters are
classified as Dagster's: ``context`` (or one annotated ``OpExecutionContext``) receives the
execution context, ``config`` (or one annotated with a ``Config`` subclass) the op's run
configuration, one annotated with a ``ConfigurableResource`` subclass (or named in
``required_resource_keys``) a resource; every other parameter is an input, connected when the
op is called inside a ``@graph`` or ``@job``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from tidegate.definitions.asset import DEFAULT_IO_MANAGER_KEY, DEFAULT_QUEUE, _resolved_annotations
from tidegate.definitions.config import Config, config_param_type
from tidegate.definitions.events import DEFAULT_OUTPUT_NAME, Output
from tidegate.definitions.limits import check_name
from tidegate.definitions.resource import ConfigurableResource
from tidegate.definitions.retry import RetryPolicy
from tidegate.errors import InvalidDefinitionError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # fullmatch; a node name is part of step keys
_QUEUE = re.compile(r"[A-Za-z0-9_.\-]+")
MAPPING_KEY = re.compile(r"[A-Za-z0-9_]+")  # Dagster's rule: keys are part of step keys

_NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class In:
    """An op input's options (Dagster's ``In``): a description and a default value used when
    nothing is connected to it."""

    dagster_type: Any = None
    description: str | None = None
    default_value: Any = _NO_DEFAULT
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def has_default(self) -> bool:
        return self.default_value is not _NO_DEFAULT


@dataclass(frozen=True)
class Out:
    """An op output (Dagster's ``Out``). ``is_required=False``: the op may leave it out, and
    the ops that consume it are then skipped (the run still succeeds)."""

    dagster_type: Any = None
    description: str | None = None
    is_required: bool = True
    io_manager_key: str = DEFAULT_IO_MANAGER_KEY
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_dynamic(self) -> bool:
        return False


@dataclass(frozen=True)
class DynamicOut(Out):
    """An output of any number of ``DynamicOutput`` values, each with a mapping key; ``.map``
    runs downstream ops once per value (each its own step) and ``.collect`` gathers them."""

    @property
    def is_dynamic(self) -> bool:
        return True


class DynamicOutput:
    """One value of a ``DynamicOut``: ``mapping_key`` names its mapped steps (``op[key]``)."""

    def __init__(
        self,
        value: Any,
        mapping_key: str,
        output_name: str = DEFAULT_OUTPUT_NAME,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(mapping_key, str) or not MAPPING_KEY.fullmatch(mapping_key):
            raise InvalidDefinitionError(
                f"DynamicOutput: invalid mapping_key {mapping_key!r} (letters, digits and '_' only)"
            )
        self.value = value
        self.mapping_key = mapping_key
        self.output_name = output_name
        self.metadata: Mapping[str, Any] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"DynamicOutput({self.value!r}, mapping_key={self.mapping_key!r}, output_name={self.output_name!r})"


@dataclass(frozen=True)
class OpDefinition:
    """What ``@op`` builds. Calling it inside a ``@graph``/``@job`` body adds a node; calling
    it anywhere else runs the function directly (for a plain unit test)."""

    name: str
    fn: Callable[..., Any]
    ins: Mapping[str, In]  # the inputs, in parameter order
    outs: Mapping[str, Out]
    context_param: str | None
    config_param: str | None
    resource_params: frozenset[str]
    required_resource_keys: frozenset[str]
    tags: Mapping[str, Any] = field(default_factory=dict)
    retry_policy: RetryPolicy | None = None
    pool: str | None = None
    queue: str = DEFAULT_QUEUE
    description: str | None = None
    config_schema: Any = None
    timeout: float | None = None
    config_type: type[Config] | None = None  # the Config model of its ``config`` parameter

    @property
    def label(self) -> str:
        return f"op '{self.name}'"

    @property
    def dynamic_outputs(self) -> tuple[str, ...]:
        return tuple(name for name, out in self.outs.items() if out.is_dynamic)

    def alias(self, name: str) -> _AliasedOp:
        """This op under another node name, to use it twice in one graph (Dagster's alias)."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidDefinitionError(f"{self.label}: invalid alias {name!r}")
        return _AliasedOp(self, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from tidegate.definitions.op_graph import composing, invoke_op

        if composing():
            return invoke_op(self, self.name, args, kwargs)
        return self.fn(*args, **kwargs)


@dataclass(frozen=True)
class _AliasedOp:
    op: OpDefinition
    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from tidegate.definitions.op_graph import composing, invoke_op

        if not composing():
            raise InvalidDefinitionError(f"{self.op.label}: an aliased op is called inside a @graph or @job")
        return invoke_op(self.op, self.name, args, kwargs)


@overload
def op(fn: Callable[..., Any], /) -> OpDefinition: ...


@overload
def op(
    *,
    name: str | None = None,
    ins: Mapping[str, In] | None = None,
    out: Out | Mapping[str, Out] | None = None,
    required_resource_keys: Iterable[str] | None = None,
    tags: Mapping[str, Any] | None = None,
    retry_policy: RetryPolicy | None = None,
    pool: str | None = None,
    queue: str | None = None,
    description: str | None = None,
    config_schema: Any = None,
    timeout: float | None = None,
) -> Callable[[Callable[..., Any]], OpDefinition]: ...


def op(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    ins: Mapping[str, In] | None = None,
    out: Out | Mapping[str, Out] | None = None,
    required_resource_keys: Iterable[str] | None = None,
    tags: Mapping[str, Any] | None = None,
    retry_policy: RetryPolicy | None = None,
    pool: str | None = None,
    queue: str | None = None,
    description: str | None = None,
    config_schema: Any = None,
    timeout: float | None = None,
) -> OpDefinition | Callable[[Callable[..., Any]], OpDefinition]:
    """Define an op from a function, validating every argument at once (see the module doc)."""

    def build(func: Callable[..., Any]) -> OpDefinition:
        return _build_op(
            func,
            name=name,
            ins=ins or {},
            out=out,
            required_resource_keys=frozenset(required_resource_keys or ()),
            tags=dict(tags or {}),
            retry_policy=retry_policy,
            pool=pool,
            queue=queue,
            description=description,
            config_schema=config_schema,
            timeout=timeout,
        )

    return build(fn) if fn is not None else build


def _build_op(
    func: Callable[..., Any],
    *,
    name: str | None,
    ins: Mapping[str, In],
    out: Out | Mapping[str, Out] | None,
    required_resource_keys: frozenset[str],
    tags: dict[str, Any],
    retry_policy: RetryPolicy | None,
    pool: str | None,
    queue: str | None,
    description: str | None,
    config_schema: Any,
    timeout: float | None,
) -> OpDefinition:
    if not callable(func):
        raise InvalidDefinitionError(f"@op decorates a function, got {func!r}")
    op_name = name or getattr(func, "__name__", "")
    if not isinstance(op_name, str) or not _NAME.fullmatch(op_name):
        raise InvalidDefinitionError(f"op {op_name!r}: invalid name (letters, digits and '_')")
    check_name(f"op '{op_name}'", "name", op_name)
    label = f"op '{op_name}'"
    for what, value in (("queue", queue), ("pool", pool)):
        if value is not None and (not isinstance(value, str) or not _QUEUE.fullmatch(value)):
            raise InvalidDefinitionError(f"{label}: invalid {what} name {value!r}")
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise InvalidDefinitionError(f"{label}: retry_policy must be a RetryPolicy, got {retry_policy!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
        raise InvalidDefinitionError(f"{label}: timeout must be a number of seconds > 0, got {timeout!r}")
    outs = _outs(label, out)
    context_param, config_param, config_type, resource_params, inputs = _classify(func, label, required_resource_keys)
    for param in ins:
        if param not in inputs:
            raise InvalidDefinitionError(f"{label}: ins names {param!r}, which is not an input parameter")
        if not isinstance(ins[param], In):
            raise InvalidDefinitionError(f"{label}: ins[{param!r}] must be an In(...), got {ins[param]!r}")
    signature = inspect.signature(func)
    op_ins: dict[str, In] = {}
    for param in inputs:
        given = ins.get(param)
        default = signature.parameters[param].default
        if given is None:
            given = In() if default is inspect.Parameter.empty else In(default_value=default)
        op_ins[param] = given
    return OpDefinition(
        name=op_name,
        fn=func,
        ins=op_ins,
        outs=outs,
        context_param=context_param,
        config_param=config_param,
        resource_params=frozenset(resource_params),
        required_resource_keys=required_resource_keys | frozenset(resource_params),
        tags=tags,
        retry_policy=retry_policy,
        pool=pool,
        queue=queue or DEFAULT_QUEUE,
        description=description if description is not None else inspect.getdoc(func),
        config_schema=config_schema,
        timeout=float(timeout) if timeout is not None else None,
        config_type=config_type,
    )


def _outs(label: str, out: Out | Mapping[str, Out] | None) -> dict[str, Out]:
    if out is None:
        return {DEFAULT_OUTPUT_NAME: Out()}
    if isinstance(out, Out):
        return {DEFAULT_OUTPUT_NAME: out}
    if not isinstance(out, Mapping):
        raise InvalidDefinitionError(f"{label}: out must be an Out or a dict of name -> Out, got {out!r}")
    for out_name, value in out.items():
        if not isinstance(out_name, str) or not _NAME.fullmatch(out_name):
            raise InvalidDefinitionError(f"{label}: invalid output name {out_name!r}")
        if not isinstance(value, Out):
            raise InvalidDefinitionError(f"{label}: output {out_name!r} must be an Out, got {value!r}")
    return dict(out)


def _classify(
    func: Callable[..., Any], label: str, required_resource_keys: frozenset[str]
) -> tuple[str | None, str | None, type[Config] | None, set[str], list[str]]:
    """(context param, config param, its Config model, resource params, input params in order)."""
    from tidegate.definitions.op_context import OpExecutionContext

    annotations = _resolved_annotations(func)
    context_param: str | None = None
    config_param: str | None = None
    config_type: type[Config] | None = None
    resources: set[str] = set()
    inputs: list[str] = []
    for index, param in enumerate(inspect.signature(func).parameters.values()):
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise InvalidDefinitionError(f"{label}: *args and **kwargs are not supported")
        annotation = annotations.get(param.name)
        if (isinstance(annotation, type) and issubclass(annotation, OpExecutionContext)) or (
            param.name == "context" and context_param is None and index == 0
        ):
            context_param = param.name
        elif param.name == "config" or config_param_type(annotation) is not None:
            config_param = param.name
            config_type = config_param_type(annotation)
        elif (
            isinstance(annotation, type) and issubclass(annotation, ConfigurableResource)
        ) or param.name in required_resource_keys:
            resources.add(param.name)
        else:
            inputs.append(param.name)
    return context_param, config_param, config_type, resources, inputs


def op_outputs(op_def: OpDefinition, result: Any) -> list[Output | DynamicOutput]:
    """What one call of ``op_def`` returned, as outputs (a generator's yields are read by the
    caller first): one value for one output, a tuple in output order for several, a list of
    DynamicOutput for a dynamic one; ``Output``/``DynamicOutput`` objects as they are."""
    outs = op_def.outs
    if isinstance(result, (Output, DynamicOutput)):
        return [result]
    if len(outs) == 1:
        (only,) = outs
        if outs[only].is_dynamic:
            if result is None:
                return []
            if not isinstance(result, (list, tuple)) or not all(isinstance(r, DynamicOutput) for r in result):
                raise InvalidDefinitionError(
                    f"{op_def.label}: output {only!r} is a DynamicOut; return or yield "
                    "DynamicOutput(value, mapping_key)"
                )
            return [DynamicOutput(r.value, r.mapping_key, only, r.metadata) for r in result]
        return [Output(result, only)]
    if not outs:
        return []
    if result is None and not any(o.is_required for o in outs.values()):
        return []
    if not isinstance(result, tuple) or len(result) != len(outs):
        raise InvalidDefinitionError(
            f"{op_def.label}: has outputs {', '.join(outs)}; return a tuple of {len(outs)} values in that order "
            "or yield Output(value, output_name)"
        )
    found: list[Output | DynamicOutput] = []
    for out_name, value in zip(outs, result, strict=True):
        if isinstance(value, Output):
            found.append(Output(value.value, out_name, value.metadata))
        elif outs[out_name].is_dynamic:
            found += [DynamicOutput(r.value, r.mapping_key, out_name, r.metadata) for r in value or ()]
        else:
            found.append(Output(value, out_name))
    return found
