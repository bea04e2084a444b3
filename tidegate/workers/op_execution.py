"""One attempt of one op step: load its inputs, call the op, store its outputs, and work out
what its success plans (a dynamic output's mapped steps) and skips (the consumers of optional
outputs it did not emit). ``StepExecutor`` claims the step and records the outcome in one
transaction, as for an asset.

Where an input comes from: the producing step's output in this run, or, for a step this run
does not re-execute, in the parent run that produced it (a re-execution from failure reads the
outputs of the steps that already succeeded).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tidegate.definitions.config import node_config, run_resources
from tidegate.definitions.context import Interruption, Resources
from tidegate.definitions.events import Output
from tidegate.definitions.job import JobDefinition, StepPlan
from tidegate.definitions.metadata import metadata_json_default
from tidegate.definitions.op import DynamicOutput, OpDefinition, op_outputs
from tidegate.definitions.op_context import OpExecutionContext
from tidegate.definitions.op_graph import InputSource, OpGraph, OpNode, parse_step_key, step_key_for
from tidegate.definitions.retry import RetryPolicy
from tidegate.errors import AssetOutputError, TidegateError
from tidegate.names import PARENT_RUN_TAG, PARTITION_TAG, EventType
from tidegate.storage.records import ClaimedStep, NewEvent
from tidegate.workers.io import InputContext, IOManager, OutputContext

if TYPE_CHECKING:
    from tidegate.workers.execution import StepExecutor, _CapturedLog

DYNAMIC_OUTPUT_EVENT = EventType.DYNAMIC_OUTPUT
STEP_OUTPUT_EVENT = EventType.STEP_OUTPUT


@dataclass
class OpRecorded:
    """What a successful op attempt records in its success transaction."""

    events: list[NewEvent] = field(default_factory=list)
    planned: list[StepPlan] = field(default_factory=list)
    more_upstream: dict[str, int] = field(default_factory=dict)
    skip: list[str] = field(default_factory=list)
    skip_reason: str = ""


class OpStepRun:
    def __init__(
        self,
        executor: StepExecutor,
        claimed: ClaimedStep,
        job: JobDefinition,
        captured: _CapturedLog,
        interruption: Interruption,
    ) -> None:
        assert job.op_graph is not None
        self.executor, self.claimed, self.job = executor, claimed, job
        self.graph: OpGraph = job.op_graph
        self.captured, self.interruption = captured, interruption
        self.handle, self.keys = parse_step_key(claimed.step.step_key)
        node = self.graph.nodes.get(self.handle)
        if node is None:
            raise TidegateError(f"job '{job.name}': no op '{self.handle}' in the loaded code")
        self.node: OpNode = node
        self.op: OpDefinition = node.op
        self.resources = run_resources({**executor.defs.resources, **job.resource_defs}, claimed.run.run_config)
        self._lineage: list[str] | None = None
        # a nested graph's op is configured under its path: {"ops": {"graph": {"ops": {"op": ...}}}}
        self.configured = node_config(claimed.run.run_config, self.handle.split("."), self.op.config_type)

    @property
    def retry_policy(self) -> RetryPolicy | None:
        policy = self.op.retry_policy or self.job.op_retry_policy
        return policy if isinstance(policy, RetryPolicy) else None

    # -- running ---------------------------------------------------------------------------

    def run(self) -> OpRecorded:
        run, step = self.claimed.run, self.claimed.step
        kwargs: dict[str, Any] = {}
        for param, spec in self.op.ins.items():
            self.interruption.raise_if_set()
            source = self.node.inputs.get(param)
            kwargs[param] = self._load(source) if source is not None else spec.default_value
        for param in self.op.resource_params:
            kwargs[param] = self.resources[param]
        context = OpExecutionContext(
            run_id=run.run_id,
            job_name=run.job_name,
            op_handle=self.handle,
            step_key=step.step_key,
            tags=dict(run.tags),
            resources=Resources(self.resources),
            log=self.captured.logger(self.handle, self.interruption),
            op_config=self.configured.op_config,
            attempt=step.attempt,
            partition_key_or_none=run.tags.get(PARTITION_TAG),
            partitions_def=self.job.partitions_def,
            mapping_keys=self.keys,
            interruption=self.interruption,
        )
        if self.op.context_param is not None:
            kwargs[self.op.context_param] = context
        if self.op.config_param is not None:
            kwargs[self.op.config_param] = self.configured.config if self.op.config_type else context.op_config
        result = self.op.fn(**kwargs)
        items = self._read(result)
        self.interruption.raise_if_set()
        return self._store(items, context)

    def _read(self, result: Any) -> list[Output | DynamicOutput]:
        if not inspect.isgenerator(result):
            try:
                return op_outputs(self.op, result)
            except TidegateError as exc:
                raise AssetOutputError(f"op '{self.handle}': {exc}") from None
        items: list[Output | DynamicOutput] = []
        for item in result:
            self.interruption.raise_if_set()
            if isinstance(item, DynamicOutput | Output):
                items.append(item)
            else:
                raise AssetOutputError(
                    f"op '{self.handle}': yielded {type(item).__name__}; an op yields Output or DynamicOutput"
                )
        return items

    def _store(self, items: list[Output | DynamicOutput], context: OpExecutionContext) -> OpRecorded:
        outs = self.op.outs
        recorded = OpRecorded()
        emitted: dict[str, list[str]] = {name: [] for name, out in outs.items() if out.is_dynamic}
        seen: set[str] = set()
        for item in items:
            out = outs.get(item.output_name)
            if out is None:
                raise AssetOutputError(
                    f"op '{self.handle}': output {item.output_name!r} does not exist (outputs: {', '.join(outs)})"
                )
            if out.is_dynamic != isinstance(item, DynamicOutput):
                kind = "a DynamicOutput" if out.is_dynamic else "an Output"
                raise AssetOutputError(f"op '{self.handle}': output {item.output_name!r} takes {kind}")
            mapping_key = item.mapping_key if isinstance(item, DynamicOutput) else None
            if mapping_key is not None:
                if mapping_key in emitted[item.output_name]:
                    raise AssetOutputError(
                        f"op '{self.handle}': mapping key {mapping_key!r} emitted twice on {item.output_name!r}"
                    )
                emitted[item.output_name].append(mapping_key)
            elif item.output_name in seen:
                raise AssetOutputError(f"op '{self.handle}': output {item.output_name!r} emitted twice")
            seen.add(item.output_name)
            self.interruption.raise_if_set()
            out_context = OutputContext(
                None,
                self.claimed.run.run_id,
                self.claimed.step.step_key,
                name=item.output_name,
                mapping_key=mapping_key,
            )
            self._manager(out.io_manager_key).handle_output(out_context, item.value)
            metadata = {**context.output_metadata.get(item.output_name, {}), **item.metadata, **out_context.metadata}
            if mapping_key is None:
                recorded.events.append(
                    NewEvent(
                        STEP_OUTPUT_EVENT, item.output_name, {"output": item.output_name, "metadata": _json(metadata)}
                    )
                )
        missing_required = [n for n, o in outs.items() if o.is_required and not o.is_dynamic and n not in seen]
        if missing_required:
            raise AssetOutputError(f"op '{self.handle}': did not emit required output {missing_required[0]!r}")
        missing = [n for n, o in outs.items() if not o.is_dynamic and n not in seen]
        if missing:
            recorded.skip = self.graph.skipped_by(self.handle, self.keys, missing)
            recorded.skip_reason = f"op '{self.handle}' did not emit output {', '.join(repr(m) for m in missing)}"
        for name, keys in emitted.items():
            recorded.events.append(NewEvent(DYNAMIC_OUTPUT_EVENT, name, {"output": name, "mapping_keys": keys}))
        if emitted:
            self._plan_mapped(recorded, emitted)
        return recorded

    def _plan_mapped(self, recorded: OpRecorded, emitted: Mapping[str, list[str]]) -> None:
        """The mapped steps this success plans, and how many more steps each collect waits for."""
        instances = self.graph.mapped_instances(self.handle, self.keys, emitted)
        partition = self.claimed.run.tags.get(PARTITION_TAG)
        recorded.planned = self.graph.step_plans(instances, partition)
        planned = {p.step_key for p in recorded.planned}
        for plan in recorded.planned:
            for child in plan.downstream:
                if child not in planned:
                    recorded.more_upstream[child] = recorded.more_upstream.get(child, 0) + 1

    # -- inputs ----------------------------------------------------------------------------

    def _load(self, source: InputSource) -> Any:
        upstream = self.graph.nodes[source.node]
        out = upstream.op.outs[source.output]
        manager = self._manager(out.io_manager_key)
        depth = len(upstream.scope)
        if source.kind == "value":
            return self._read_output(manager, step_key_for(source.node, self.keys[:depth]), source.output, None)
        if source.kind == "mapped":
            producer = step_key_for(source.node, self.keys[:depth])
            return self._read_output(manager, producer, source.output, self.keys[depth])
        if depth == len(self.node.scope):  # a dynamic output collected as it is
            producer = step_key_for(source.node, self.keys)
            keys = self._mapping_keys(producer, source.output)
            return [self._read_output(manager, producer, source.output, k) for k in keys]
        producer_handle, dynamic_output = upstream.scope[-1]
        keys = self._mapping_keys(step_key_for(producer_handle, self.keys), dynamic_output)
        return [
            self._read_output(manager, step_key_for(source.node, (*self.keys, k)), source.output, None) for k in keys
        ]

    def _read_output(self, manager: IOManager, step_key: str, output: str, mapping_key: str | None) -> Any:
        self.interruption.raise_if_set()
        run_id = self._producing_run(step_key)
        upstream = OutputContext(None, run_id, step_key, name=output, mapping_key=mapping_key)
        context = InputContext(None, self.claimed.run.run_id, self.claimed.step.step_key, upstream_output=upstream)
        return manager.load_input(context)

    def _mapping_keys(self, producer_step: str, output: str) -> list[str]:
        found = self.executor.storage.step_events(self.lineage(), producer_step, DYNAMIC_OUTPUT_EVENT)
        for event in reversed(found):  # the latest production of that output
            data = event.data or {}
            if data.get("output") == output:
                return list(data.get("mapping_keys") or [])
        raise TidegateError(f"op '{self.handle}': no record of dynamic output '{producer_step}.{output}'")

    def lineage(self) -> list[str]:
        """This run, then its parent, grandparent... (re-executions read their ancestors' outputs)."""
        if self._lineage is None:
            chain = [self.claimed.run.run_id]
            tags = self.claimed.run.tags
            while PARENT_RUN_TAG in tags and len(chain) < 100:
                parent = self.executor.storage.get_run(tags[PARENT_RUN_TAG])
                chain.append(parent.run_id)
                tags = parent.tags
            self._lineage = chain
        return self._lineage

    def _producing_run(self, step_key: str) -> str:
        """The run whose output of ``step_key`` this step reads: the newest in the lineage in
        which that step succeeded (this run's own, first)."""
        chain = self.lineage()
        if len(chain) == 1:
            return chain[0]
        for run_id in chain:
            succeeded = self.executor.storage.step_events([run_id], step_key, EventType.STEP_SUCCESS)
            if succeeded:
                return run_id
        return chain[0]

    # -- resources and config ----------------------------------------------------------------

    def _manager(self, key: str) -> IOManager:
        manager = self.resources.get(key)
        if manager is not None:
            return manager  # type: ignore[no-any-return]
        return self.executor._io_manager(key)


def _json(metadata: Mapping[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(dict(metadata), default=metadata_json_default))  # type: ignore[no-any-return]
