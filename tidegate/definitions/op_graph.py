"""Graphs of ops: ``@graph`` composition, the flattened node graph of an op job, and its steps.

A ``@graph`` or ``@job`` body is called once, when the job is defined, with each op call
recorded as a node (nested graphs are inlined with their name as a prefix: ``outer.inner``).
``.map(fn)`` on a DynamicOut's output calls ``fn`` once with a stand-in for "each value", so
the ops it calls are *mapped*: planned, once per mapping key, in the transaction that records
the producing step's success. ``.collect()`` makes one input of every mapped value.

Step keys are Dagster's: the node handle, with the mapping keys of a mapped step in brackets
(``process[a]``; ``inner[a,b]`` under two nested maps).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tidegate.definitions.job import StepPlan
from tidegate.definitions.op import DynamicOutput, OpDefinition
from tidegate.errors import InvalidDefinitionError

Scope = tuple[tuple[str, str], ...]  # the (producer handle, dynamic output) of each enclosing map
InputKind = Literal["value", "mapped", "collect"]


@dataclass(frozen=True)
class InputSource:
    """Where one op input comes from: an output of another node (``value``), one value of a
    dynamic output per mapped step (``mapped``) or the list of all of them (``collect``)."""

    node: str
    output: str
    kind: InputKind


@dataclass(frozen=True)
class OpNode:
    handle: str
    op: OpDefinition
    inputs: Mapping[str, InputSource]
    scope: Scope


# -- composition ------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvokedOutput:
    """An output of a node, as seen in a graph body: pass it to another op, or for a
    DynamicOut ``.map(fn)`` / ``.collect()`` it."""

    node: str
    output: str
    scope: Scope
    dynamic: bool = False

    def map(self, fn: Callable[[InvokedOutput], Any]) -> Any:
        if not self.dynamic:
            raise InvalidDefinitionError(
                f"node '{self.node}': .map() needs a DynamicOut output, '{self.output}' is not"
            )
        return fn(InvokedOutput(self.node, self.output, (*self.scope, (self.node, self.output))))

    def collect(self) -> CollectedOutput:
        if not self.dynamic and not self.scope:
            raise InvalidDefinitionError(f"node '{self.node}': .collect() needs a mapped or dynamic output")
        return CollectedOutput(self.node, self.output, self.scope if self.dynamic else self.scope[:-1])


@dataclass(frozen=True)
class CollectedOutput:
    node: str
    output: str
    scope: Scope  # the scope of the node that consumes the collected list


@dataclass
class _Composition:
    nodes: dict[str, OpNode] = field(default_factory=dict)
    prefix: list[str] = field(default_factory=list)


_local = threading.local()


def composing() -> bool:
    return bool(getattr(_local, "stack", None))


def _current() -> _Composition:
    stack: list[_Composition] = _local.stack
    return stack[-1]


def compose(label: str, fn: Callable[..., Any], args: Sequence[Any] = ()) -> tuple[dict[str, OpNode], Any]:
    """Call a graph body with op calls recorded; returns the nodes and what the body returned."""
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    composition = _Composition()
    stack.append(composition)
    try:
        returned = fn(*args)
    except InvalidDefinitionError as exc:
        raise InvalidDefinitionError(f"{label}: {exc}") from None
    finally:
        stack.pop()
    _check_scopes(label, composition.nodes)
    return composition.nodes, returned


def invoke_op(op_def: OpDefinition, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """Record a call of ``op_def`` as a node of the graph being composed."""
    composition = _current()
    handle = ".".join([*composition.prefix, name])
    if handle in composition.nodes:
        n = 2
        while f"{handle}_{n}" in composition.nodes:
            n += 1
        handle = f"{handle}_{n}"
    label = f"op '{handle}'"
    params = list(op_def.ins)
    if len(args) > len(params):
        raise InvalidDefinitionError(f"{label}: called with {len(args)} inputs, it has {len(params)}")
    given = dict(zip(params, args, strict=False))
    for key, value in kwargs.items():
        if key not in op_def.ins:
            raise InvalidDefinitionError(f"{label}: no input named {key!r} (inputs: {', '.join(params) or 'none'})")
        given[key] = value
    inputs: dict[str, InputSource] = {}
    scope: Scope = ()
    for param, value in given.items():
        source, source_scope = _source(label, param, value)
        inputs[param] = source
        if len(source_scope) > len(scope):
            scope, shorter = source_scope, scope
        else:
            shorter = source_scope
        if scope[: len(shorter)] != shorter:
            raise InvalidDefinitionError(f"{label}: input {param!r} mixes values of different dynamic outputs")
    for param, spec in op_def.ins.items():
        if param not in inputs and not spec.has_default:
            raise InvalidDefinitionError(f"{label}: input {param!r} is not connected and has no default value")
    composition.nodes[handle] = OpNode(handle, op_def, inputs, scope)
    outs = [InvokedOutput(handle, name_, scope, out.is_dynamic) for name_, out in op_def.outs.items()]
    if not outs:
        return None
    return outs[0] if len(outs) == 1 else tuple(outs)


def _source(label: str, param: str, value: Any) -> tuple[InputSource, Scope]:
    if isinstance(value, CollectedOutput):
        return InputSource(value.node, value.output, "collect"), value.scope
    if isinstance(value, InvokedOutput):
        if value.dynamic:
            raise InvalidDefinitionError(
                f"{label}: input {param!r} gets dynamic output '{value.node}.{value.output}' directly; "
                "use .map(fn) or .collect()"
            )
        producer_mapped = value.scope and value.scope[-1] == (value.node, value.output)
        return InputSource(value.node, value.output, "mapped" if producer_mapped else "value"), value.scope
    raise InvalidDefinitionError(
        f"{label}: input {param!r} gets {value!r}; inside a graph, inputs are outputs of other ops"
    )


def invoke_graph(graph: GraphDefinition, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """Inline a nested graph's body, its node handles prefixed with ``name``."""
    composition = _current()
    composition.prefix.append(name)
    try:
        bound = graph.bind(args, kwargs)
        return graph.fn(**bound)
    finally:
        composition.prefix.pop()


def _check_scopes(label: str, nodes: Mapping[str, OpNode]) -> None:
    """A mapped op may read an output from outside its map only if that output is made before
    the map's producer (an ancestor of it), since mapped steps count no such upstream."""
    for node in nodes.values():
        for param, source in node.inputs.items():
            upstream = nodes.get(source.node)
            if upstream is None:
                continue
            if source.kind == "value" and len(upstream.scope) < len(node.scope):
                producer = node.scope[len(upstream.scope)][0]
                if source.node != producer and source.node not in _ancestors(nodes, producer):
                    raise InvalidDefinitionError(
                        f"{label}: mapped op '{node.handle}' reads {param!r} from '{source.node}', which is not "
                        f"upstream of the dynamic output's producer '{producer}'"
                    )


def _ancestors(nodes: Mapping[str, OpNode], handle: str) -> set[str]:
    found: set[str] = set()
    frontier = [handle]
    while frontier:
        for source in nodes[frontier.pop()].inputs.values():
            if source.node not in found:
                found.add(source.node)
                frontier.append(source.node)
    return found


# -- graphs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphDefinition:
    """What ``@graph`` builds: a composition of ops and graphs, made a job by ``.to_job``."""

    name: str
    fn: Callable[..., Any]
    description: str | None = None
    input_names: tuple[str, ...] = ()

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if len(args) > len(self.input_names):
            raise InvalidDefinitionError(f"graph '{self.name}': called with {len(args)} inputs")
        bound = dict(zip(self.input_names, args, strict=False))
        bound.update(kwargs)
        missing = [n for n in self.input_names if n not in bound]
        if missing:
            raise InvalidDefinitionError(f"graph '{self.name}': input {missing[0]!r} is not connected")
        return bound

    def alias(self, name: str) -> _AliasedGraph:
        return _AliasedGraph(self, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not composing():
            raise InvalidDefinitionError(
                f"graph '{self.name}': call it inside another @graph or @job, or use .to_job() / .execute_in_process()"
            )
        return invoke_graph(self, self.name, args, kwargs)

    def nodes(self, label: str | None = None) -> dict[str, OpNode]:
        if self.input_names:
            raise InvalidDefinitionError(
                f"graph '{self.name}': has inputs ({', '.join(self.input_names)}); only a graph without inputs "
                "can be a job"
            )
        nodes, _ = compose(label or f"graph '{self.name}'", self.fn)
        return nodes

    def to_job(
        self,
        name: str | None = None,
        description: str | None = None,
        resource_defs: Mapping[str, Any] | None = None,
        config: Any = None,
        tags: Mapping[str, str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        partitions_def: Any = None,
        op_retry_policy: Any = None,
        run_tags: Mapping[str, str] | None = None,
    ) -> Any:
        from tidegate.definitions.op_job import build_op_job

        return build_op_job(
            self,
            name=name or self.name,
            description=description if description is not None else self.description,
            resource_defs=resource_defs,
            config=config,
            tags=tags,
            metadata=metadata,
            partitions_def=partitions_def,
            op_retry_policy=op_retry_policy,
            run_tags=run_tags,
        )

    def execute_in_process(self, run_config: Any = None, resources: Mapping[str, Any] | None = None) -> Any:
        return self.to_job().execute_in_process(run_config=run_config, resources=resources)


@dataclass(frozen=True)
class _AliasedGraph:
    graph: GraphDefinition
    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return invoke_graph(self.graph, self.name, args, kwargs)


def graph(fn: Callable[..., Any] | None = None, /, *, name: str | None = None, description: str | None = None) -> Any:
    """Define a graph of ops from a function whose body calls ops (Dagster's ``@graph``)."""
    import inspect

    def build(func: Callable[..., Any]) -> GraphDefinition:
        graph_name = str(name or getattr(func, "__name__", ""))
        params = tuple(inspect.signature(func).parameters)
        definition = GraphDefinition(graph_name, func, description or inspect.getdoc(func), params)
        if not params:
            definition.nodes()  # composed now: a bad graph fails at import, not at launch
        return definition

    return build(fn) if fn is not None else build


# -- planning ---------------------------------------------------------------------------------


def step_key_for(handle: str, keys: Sequence[str]) -> str:
    return f"{handle}[{','.join(keys)}]" if keys else handle


def parse_step_key(step_key: str) -> tuple[str, tuple[str, ...]]:
    if step_key.endswith("]") and "[" in step_key:
        handle, _, inner = step_key[:-1].partition("[")
        return handle, tuple(inner.split(","))
    return step_key, ()


@dataclass(frozen=True)
class OpGraph:
    """The flattened nodes of an op job and the step-level edges between their instances."""

    nodes: Mapping[str, OpNode]
    consumers: Mapping[str, tuple[tuple[str, InputSource], ...]]

    @classmethod
    def build(cls, nodes: Mapping[str, OpNode]) -> OpGraph:
        consumers: dict[str, list[tuple[str, InputSource]]] = {h: [] for h in nodes}
        for node in nodes.values():
            for source in node.inputs.values():
                consumers[source.node].append((node.handle, source))
        return cls(dict(nodes), {h: tuple(c) for h, c in consumers.items()})

    def upstream(self, handle: str, keys: Sequence[str]) -> list[str]:
        """Step keys this instance waits for (same map instance, or the producer of a collect)."""
        node = self.nodes[handle]
        found: dict[str, None] = {}
        for source in node.inputs.values():
            upstream = self.nodes[source.node]
            depth = len(upstream.scope)
            if source.kind in ("value", "collect") and depth == len(node.scope):  # collect: a dynamic output as is
                found[step_key_for(source.node, keys)] = None
            elif source.kind == "collect":  # mapped values: wait for their producer (and, later, them)
                found[step_key_for(upstream.scope[-1][0], keys)] = None
        return list(found)

    def downstream(self, handle: str, keys: Sequence[str]) -> list[str]:
        node = self.nodes[handle]
        found: dict[str, None] = {}
        depth = len(node.scope)
        for consumer, source in self.consumers[handle]:
            consumer_depth = len(self.nodes[consumer].scope)
            if source.kind in ("value", "collect") and consumer_depth == depth:
                found[step_key_for(consumer, keys)] = None
            elif source.kind == "collect" and consumer_depth == depth - 1:
                found[step_key_for(consumer, keys[:-1])] = None
        for other in self.nodes.values():  # collects of maps this node produces: it stands for them
            for source in other.inputs.values():
                mapped = self.nodes[source.node]
                if (
                    source.kind == "collect"
                    and len(mapped.scope) == len(other.scope) + 1
                    and mapped.scope[-1][0] == handle
                    and len(other.scope) == depth
                ):
                    found[step_key_for(other.handle, keys)] = None
        return list(found)

    def step_plans(
        self, instances: Iterable[tuple[str, tuple[str, ...]]], partition_key: str | None = None
    ) -> list[StepPlan]:
        """StepPlans of these node instances, with edges only among them."""
        chosen = {step_key_for(h, k): (h, k) for h, k in instances}
        plans = []
        for step_key, (handle, keys) in chosen.items():
            op_def = self.nodes[handle].op
            ups = tuple(u for u in self.upstream(handle, keys) if u in chosen)
            ups += tuple(self._collected_instances(handle, keys, chosen))
            downs = tuple(self.downstream(handle, keys))
            shown = f"{step_key}[{partition_key}]" if partition_key is not None else step_key
            plans.append(StepPlan(step_key, handle, op_def.queue, ups, downs, shown, op_def.pool, op_def.timeout))
        return plans

    def _collected_instances(
        self, handle: str, keys: tuple[str, ...], chosen: Mapping[str, tuple[str, tuple[str, ...]]]
    ) -> list[str]:
        """For a re-execution without the map's producer: the chosen mapped steps a collect
        waits for (the others' outputs are read from the run that made them)."""
        found = []
        for source in self.nodes[handle].inputs.values():
            mapped = self.nodes[source.node]
            if source.kind != "collect" or len(mapped.scope) != len(self.nodes[handle].scope) + 1:
                continue
            if step_key_for(mapped.scope[-1][0], keys) in chosen:
                continue  # the producer runs again and plans them
            found += [k for k, (h, ks) in chosen.items() if h == source.node and ks[:-1] == keys]
        return found

    def root_instances(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(h, ()) for h, n in self.nodes.items() if not n.scope]

    def mapped_instances(
        self, producer: str, keys: tuple[str, ...], emitted: Mapping[str, Sequence[str]]
    ) -> list[tuple[str, tuple[str, ...]]]:
        """The instances planned when ``producer[keys]`` emits ``emitted`` (dynamic output ->
        mapping keys): every node directly inside each of those maps, once per key."""
        found = []
        for output, mapping_keys in emitted.items():
            scope = (*self.nodes[producer].scope, (producer, output))
            inside = [h for h, n in self.nodes.items() if n.scope == scope]
            for mapping_key in mapping_keys:
                found += [(h, (*keys, mapping_key)) for h in inside]
        return found

    def skipped_by(self, handle: str, keys: tuple[str, ...], missing: Iterable[str]) -> list[str]:
        """Step keys of the consumers of outputs ``missing`` (optional, not emitted)."""
        gone = set(missing)
        depth = len(self.nodes[handle].scope)
        return sorted(
            {
                step_key_for(consumer, keys)
                for consumer, source in self.consumers[handle]
                if source.output in gone and source.kind == "value" and len(self.nodes[consumer].scope) == depth
            }
        )


def dynamic_values(outputs: Iterable[Any]) -> dict[str, list[DynamicOutput]]:
    found: dict[str, list[DynamicOutput]] = {}
    for item in outputs:
        if isinstance(item, DynamicOutput):
            found.setdefault(item.output_name, []).append(item)
    return found
