"""A scripted event log for automation tests: materializations, failures and runs per tick,
evaluated by the pure evaluator against a fake clock, the cursor round-tripped through JSON;
and ``commit_tick``, one automation tick evaluated and committed on a storage as the beat does."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from tidegate.definitions.asset import asset
from tidegate.definitions.automation_condition import AutomationCondition
from tidegate.definitions.automation_evaluator import (
    AssetSlice,
    AutomationCursor,
    AutomationResult,
    evaluate_automation,
    group_requests,
)
from tidegate.definitions.automation_sensor import AutomationConditionSensorDefinition
from tidegate.definitions.defs import Definitions
from tidegate.definitions.key import AssetKey
from tidegate.definitions.partitions import PartitionsDefinition
from tidegate.scheduler.automation import AutomationTick, AutomationTicks
from tidegate.storage.api import Storage
from tidegate.storage.instigators import TickRecord

Request = tuple[str, str | None]


class World:
    """The state an event log would give: what is materialized, failed, in progress."""

    def __init__(self, defs: Definitions, start: datetime) -> None:
        self.graph = defs.graph
        self.now = start
        self.cursor: AutomationCursor | None = None
        self.materialized: dict[AssetKey, set[str | None]] = {}
        self.updated: dict[AssetKey, set[str | None]] = {}
        self.failed: dict[AssetKey, set[str | None]] = {}
        self.running: dict[AssetKey, set[str | None]] = {}
        self.backfilling: dict[AssetKey, set[str | None]] = {}
        self.changed: set[AssetKey] = set()
        self.last: AutomationResult | None = None

    # -- events ------------------------------------------------------------------------------

    def materialize(self, name: str, *partitions: str | None) -> None:
        key = AssetKey.from_user_string(name)
        for p in partitions or (None,):
            self.materialized.setdefault(key, set()).add(p)
            self.updated.setdefault(key, set()).add(p)
            self.failed.get(key, set()).discard(p)
            self.running.get(key, set()).discard(p)
        self.changed.add(key)

    def fail(self, name: str, *partitions: str | None) -> None:
        key = AssetKey.from_user_string(name)
        for p in partitions or (None,):
            self.failed.setdefault(key, set()).add(p)
            self.running.get(key, set()).discard(p)
        self.changed.add(key)

    def start_run(self, name: str, *partitions: str | None) -> None:
        key = AssetKey.from_user_string(name)
        self.running.setdefault(key, set()).update(partitions or (None,))
        self.changed.add(key)

    def start_backfill(self, name: str, *partitions: str | None) -> None:
        key = AssetKey.from_user_string(name)
        self.backfilling.setdefault(key, set()).update(partitions or (None,))
        self.changed.add(key)

    def run_requested(self) -> None:
        """The runs requested by the last tick succeed (in dependency order)."""
        assert self.last is not None
        for key, partitions in self.last.requested.items():
            self.materialize(key.to_user_string(), *partitions)

    # -- the evaluator's inputs ----------------------------------------------------------------

    def slice(self, key: AssetKey) -> AssetSlice:
        return AssetSlice(
            materialized=frozenset(self.materialized.get(key, ())),
            updated=frozenset(self.updated.get(key, ())),
            failed=frozenset(self.failed.get(key, ())),
            run_in_progress=frozenset(self.running.get(key, ())),
            backfill_in_progress=frozenset(self.backfilling.get(key, ())),
        )

    def partition_keys(self, key: AssetKey) -> Sequence[str | None]:
        definition = self.graph.assets[key].partitions_def
        if definition is None:
            return [None]
        return list(definition.get_partition_keys(current_time=self.now))

    def tick(self, advance: timedelta = timedelta(seconds=30)) -> set[Request]:
        """One evaluation at now + ``advance``; returns the requested (asset, partition) pairs."""
        self.now += advance
        targets = [k for k, a in self.graph.assets.items() if a.automation_condition is not None]
        result = evaluate_automation(self.graph, targets, self, self.now, self.cursor, self.changed)
        # the beat stores the cursor as JSON: every tick goes through that round trip
        self.cursor = AutomationCursor.from_json(result.cursor.to_json())
        self.last = result
        self.updated.clear()
        self.changed = set()  # as the beat: only assets with new events are "changed"
        return {(k.to_user_string(), p) for k, parts in result.requested.items() for p in parts}

    def groups(self) -> list[tuple[tuple[str, ...], str | None, bool, tuple[str, ...]]]:
        assert self.last is not None
        return [
            (tuple(k.to_user_string() for k in g.asset_keys), g.partition_key, g.is_backfill, g.partition_keys)
            for g in group_requests(self.graph, self.last.requested)
        ]


def names(pairs: Iterable[Request]) -> set[str]:
    return {a for a, _ in pairs}


def commit_tick(
    storage: Storage, ticks: AutomationTicks, sensor: AutomationConditionSensorDefinition, when: datetime
) -> tuple[AutomationTick, TickRecord]:
    """One automation tick of ``sensor`` at ``when``, evaluated and committed as the beat does
    (the tick's state kept once committed): the evaluation and the tick record."""
    state = storage.get_instigator(sensor.name) or storage.initialize_instigator(sensor.name, "sensor", when)
    tick = ticks.evaluate(sensor, state.cursor, when)
    record = storage.commit_tick(
        sensor.name,
        "sensor",
        expected_version=state.version,
        tick_time=when,
        started_at=when,
        outcome=tick.outcome,
        origin=f"sensor:{sensor.name}",
        next_tick_at=when + timedelta(seconds=30),
    )
    assert record is not None
    tick.install()
    return tick, record


def layered_graph(
    rng: random.Random,
    conditions: Sequence[AutomationCondition | None],
    partitions_def: Callable[[int, int], PartitionsDefinition | None],
) -> tuple[Definitions, list[list[str]]]:
    """Six layers of six assets ``l{layer}_{i}``, each depending on 1-3 random assets of the
    layer before, with a condition drawn from ``conditions`` (none on the first layer) and
    ``partitions_def(layer, i)``: the definitions and the layers' names."""
    layers: list[list[str]] = []
    assets = []
    for layer in range(6):
        names = []
        for i in range(6):
            name = f"l{layer}_{i}"
            deps = rng.sample(layers[-1], rng.randint(1, 3)) if layers else []
            condition = rng.choice(conditions) if layer else None

            @asset(name=name, deps=deps, automation_condition=condition, partitions_def=partitions_def(layer, i))
            def body() -> None: ...

            assets.append(body)
            names.append(name)
        layers.append(names)
    return Definitions(assets=assets), layers
