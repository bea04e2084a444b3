"""The code location of the step benchmark (bench/steps.py): trivial assets, two jobs.

* ``chain_job``: ``chain_00 -> chain_01 -> ... -> chain_49``, 50 steps in a line.
* ``fanout_job``: ``fan_root -> fan_000 .. fan_199 -> fan_sink``, 1 + 200 + 1 = 202 steps.

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

defs = tg.Definitions(assets=[*chain_assets, *fanout_assets], jobs=[chain_job, fanout_job])
