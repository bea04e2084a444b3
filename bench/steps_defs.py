"""The code location of the step benchmark (bench/steps.py): trivial assets, two jobs.

* ``chain_job``: ``chain_00 -> chain_01 -> ... -> chain_49``, 50 steps in a line.
* ``fanout_job``: ``fan_root -> fan_000 .. fan_199 -> fan_sink``, 1 + 200 + 1 = 202 steps.
* ``dynamic_job`` (ops): ``dyn_root`` yields 1,000 DynamicOutputs, ``.map(dyn_step)`` makes
  1,000 mapped steps, planned in ``dyn_root``'s success transaction, ``.collect()`` into
  ``dyn_sink``: 1 + 1,000 + 1 = 1,002 steps. Its outputs go to a null IO manager (stores
  nothing, loads None), so, as for the assets, no value is stored.

Every edge is a ``deps=`` edge and every body returns None, so no value goes through an IO
manager: a step is claim -> call a no-op -> record the (empty) materialization and release
its children -> publish them. What is measured is tidegate's per-step overhead alone.
"""

from __future__ import annotations

import tidegate as tg

CHAIN_LENGTH = 50
FANOUT_WIDTH = 200


def _noop() -> None:
    return None


def _asset(name: str, group: str, deps: list[str] | None = None) -> tg.AssetsDefinition:
    # A fresh function object per asset: the body does nothing.
    def body() -> None:
        return _noop()

    body.__name__ = name
    return tg.asset(name=name, deps=deps or None, group_name=group)(body)


chain_names = [f"chain_{i:02d}" for i in range(CHAIN_LENGTH)]
chain_assets = [_asset(name, "chain", [chain_names[i - 1]] if i else None) for i, name in enumerate(chain_names)]

fan_middle_names = [f"fan_{i:03d}" for i in range(FANOUT_WIDTH)]
fanout_assets = [
    _asset("fan_root", "fanout"),
    *(_asset(name, "fanout", ["fan_root"]) for name in fan_middle_names),
    _asset("fan_sink", "fanout", fan_middle_names),
]

chain_job = tg.define_asset_job("chain_job", selection=tg.AssetSelection.groups("chain"))
fanout_job = tg.define_asset_job("fanout_job", selection=tg.AssetSelection.groups("fanout"))

DYNAMIC_WIDTH = 1000


class NullIOManager(tg.IOManager):
    """Stores nothing and loads None: the op fan-out is measured without IO, like the assets."""

    def handle_output(self, context: tg.OutputContext, obj: object) -> None:
        return None

    def load_input(self, context: tg.InputContext) -> None:
        return None


@tg.op(out=tg.DynamicOut(io_manager_key="null_io"))
def dyn_root():  # type: ignore[no-untyped-def]
    for i in range(DYNAMIC_WIDTH):
        yield tg.DynamicOutput(None, mapping_key=f"k{i:04d}")


@tg.op(out=tg.Out(io_manager_key="null_io"))
def dyn_step(value: None) -> None:
    return _noop()


@tg.op(out=tg.Out(io_manager_key="null_io"))
def dyn_sink(values: list[None]) -> None:
    return _noop()


@tg.job
def dynamic_job() -> None:
    dyn_sink(dyn_root().map(dyn_step).collect())


defs = tg.Definitions(
    assets=[*chain_assets, *fanout_assets],
    jobs=[chain_job, fanout_job, dynamic_job],
    resources={"null_io": NullIOManager()},
)
