"""The runs an automation tick creates, on SQLite and PostgreSQL: a tick requesting ~150
assets stores, per run, exactly the steps of the requested assets, each with its upstream
count and downstream steps within the run, its queue, pool, timeout and display name; driven
to the end, every step becomes READY only once all its upstream steps in the run succeeded.

The expectation is computed here from the graph's edges, not by the planner: the steps are
inserted in bulk (``COPY`` on psycopg, the driver's ``executemany`` on SQLite) from the rows
the planner pre-serializes, and this checks them column by column."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

import tidegate as tg
from tests.automation_world import commit_tick
from tidegate.definitions.automation_sensor import DEFAULT_AUTOMATION_SENSOR, AutomationConditionSensorDefinition
from tidegate.definitions.key import AssetKey
from tidegate.names import AUTOMATION_TAG, PARTITION_TAG, RunStatus, StepStatus
from tidegate.scheduler.beat import Beat
from tidegate.scheduler.clock import FakeClock
from tidegate.storage.api import Storage

EAGER = tg.AutomationCondition.eager()
START = datetime(2024, 3, 4, 0, 0, 30, tzinfo=UTC)
DAYS = tg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-03-01")
LAYERS, WIDTH = 5, 30


def _graph() -> tg.Definitions:
    """``source`` (unpartitioned, no condition) above 5 layers of 30 eager assets, each on up to
    4 assets of the layer above (some keys of two parts, some on a queue or a pool or with a
    timeout); ``daily_source`` above a daily-partitioned eager chain with a fan-in."""
    rng = random.Random(13)
    made: list[tg.AssetsDefinition] = []

    def body() -> int:
        return 1

    made.append(tg.asset(name="source")(body))
    above = [AssetKey("source")]
    for layer in range(LAYERS):
        here = []
        for i in range(WIDTH):
            key = AssetKey(["grp", f"l{layer}_{i}"]) if i % 7 == 0 else AssetKey(f"l{layer}_{i}")
            deps = rng.sample(above, min(len(above), rng.randint(1, 4)))
            made.append(
                tg.asset(
                    key=key,
                    deps=deps,
                    automation_condition=EAGER,
                    queue="heavy" if i % 5 == 0 else None,
                    pool="db" if i % 11 == 0 else None,
                    timeout=30.0 if i % 13 == 0 else None,
                )(body)
            )
            here.append(key)
        above = here
    made.append(tg.asset(name="daily_source", partitions_def=DAYS)(body))
    chain = ["daily_source"]
    for i in range(12):
        deps = [chain[-1]] + ([chain[-3]] if i >= 2 else [])
        made.append(tg.asset(name=f"d{i}", deps=deps, partitions_def=DAYS, automation_condition=EAGER)(body))
        chain.append(f"d{i}")
    return tg.Definitions(assets=made)


def _tick(storage: Storage, beat: Beat, when: datetime) -> list[str]:
    """One automation tick of the default sensor, committed as the beat does; the runs it created."""
    sensor = beat.defs.sensors[DEFAULT_AUTOMATION_SENSOR]
    assert isinstance(sensor, AutomationConditionSensorDefinition)
    return list(commit_tick(storage, beat.automation, sensor, when)[1].run_ids)


def _drive(storage: Storage, run_id: str, parents: dict[str, set[str]]) -> list[str]:
    """Start the run and succeed its steps as they become READY (the pool has no limit, so
    none stays WAITING); every step, when READY, has all its parents done."""
    done: list[str] = []
    ready = [r.step_key for r in storage.start_run(run_id)]
    while True:
        if not ready:
            waiting = [s.step_key for s in storage.get_steps(run_id) if s.status == StepStatus.WAITING]
            assert not waiting, f"steps wait with nothing running: {waiting}"
            break
        key = ready.pop(0)
        assert parents[key] <= set(done), f"{key} READY before {sorted(parents[key] - set(done))}"
        assert storage.claim_step(run_id, key, 1, "w") is not None
        more = storage.complete_step(run_id, key, 1, asset_key=key, metadata={})
        assert more is not None
        done.append(key)
        ready += [r.step_key for r in more]
    return done


def test_a_big_automation_run_stores_exactly_its_planned_steps(storage: Storage) -> None:
    defs = _graph()
    graph = defs.graph
    beat = Beat(defs, storage, lambda refs: None, clock=FakeClock(START), holder="runs")
    when = START
    _tick(storage, beat, when)
    for _ in range(3):  # settle: the first ticks request what was never materialized
        when += timedelta(seconds=30)
        for run_id in _tick(storage, beat, when):
            storage.cancel_run(run_id)
    storage.report_materialization("source")
    latest = DAYS.get_partition_keys(START)[-1]  # eager() requests a time window's latest partition
    storage.report_materialization("daily_source", partition_key=latest)
    when += timedelta(seconds=30)
    run_ids = _tick(storage, beat, when)
    runs = {storage.get_run(r).tags.get(PARTITION_TAG): storage.get_run(r) for r in run_ids}
    assert set(runs) == {None, latest}  # the unpartitioned closure, and the daily chain's partition
    below_source = graph.descendants([AssetKey("source")])
    below_daily = graph.descendants([AssetKey("daily_source")])
    assert len(below_source) > 100
    for partition, expected in ((None, below_source), (latest, below_daily)):
        run = runs[partition]
        assert run.status == RunStatus.QUEUED and run.tags[AUTOMATION_TAG] == DEFAULT_AUTOMATION_SENSOR
        names = {k.to_user_string(): k for k in expected}
        stored = {s.step_key: s for s in storage.get_steps(run.run_id)}
        assert set(stored) == set(names)
        assert run.steps_remaining == len(names)
        parents: dict[str, set[str]] = {}
        for name, key in names.items():
            step, asset = stored[name], graph.assets[key]
            ups = {u.to_user_string() for u in graph.upstream[key]} & set(names)
            downs = sorted(d for d in graph.downstream[key] if d.to_user_string() in names)
            parents[name] = ups
            assert step.asset_key == name and step.status == StepStatus.PLANNED and step.attempt == 1
            assert step.pending_upstream == len(ups)
            assert list(step.downstream) == [d.to_user_string() for d in downs]  # sorted by asset key
            assert (step.queue, step.pool, step.timeout) == (asset.queue, asset.pool, asset.timeout)
            assert step.display_name == (name if partition is None else f"{name}[{partition}]")
        assert sorted(_drive(storage, run.run_id, parents)) == sorted(names)
        assert storage.get_run(run.run_id).status == RunStatus.SUCCESS


def test_a_failing_step_insert_is_a_database_error_and_commits_nothing(storage: Storage) -> None:
    """Steps go to the driver in bulk (``COPY`` on psycopg): a failure there is raised as any
    statement's (SQLAlchemy's IntegrityError here, which ``retry_transient`` and the callers
    read alike on both databases) and the run's transaction commits nothing."""
    defs = _graph()
    plan = defs.plan("__ASSET_JOB", tg.AssetSelection.assets("l0_1", "l1_1"))
    twice = dataclasses.replace(plan, steps=(*plan.steps, plan.steps[0]))  # a step key twice: UNIQUE(run, step)
    with pytest.raises(IntegrityError):
        storage.submit_run(twice, origin="test")
    assert storage.list_runs() == []
    assert storage.submit_run(plan, origin="test").created  # the connection is usable again
