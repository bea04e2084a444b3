"""Dagster's documented declarative-automation examples (tests/projects/dagster_automation_examples/,
each the docs' file with only the import line changed), loaded and evaluated by the pure evaluator
against a scripted event log; the requested (asset, partition) pairs per tick are written out."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

import tidegate as tg
from tests.automation_world import World
from tidegate import AutomationCondition as AC
from tidegate.errors import InvalidDefinitionError

EXAMPLES = Path(__file__).parent / "projects" / "dagster_automation_examples"
NOTHING: set[tuple[str, str | None]] = set()


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"dagster_automation_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _assets(module: ModuleType) -> list[tg.AssetsDefinition]:
    return [v for v in vars(module).values() if isinstance(v, tg.AssetsDefinition)]


def _with(condition: AC, deps: list[str], **asset_args: object) -> tg.AssetsDefinition:
    @tg.asset(name="target", deps=deps, automation_condition=condition, **asset_args)  # type: ignore[call-overload]
    def target() -> None: ...

    return target  # type: ignore[no-any-return]


def test_eager_basic() -> None:
    w = World(tg.Definitions(assets=_assets(_load("eager_basic"))), datetime(2025, 1, 2, 9, tzinfo=UTC))
    assert w.tick() == NOTHING
    w.materialize("upstream")  # an external asset: its materialization is reported
    assert w.tick() == {("eager_asset", None)}
    assert w.tick() == NOTHING


def test_on_missing_basic_needs_a_partition_mapping_in_tidegate() -> None:
    """The one example that does not load unchanged: tidegate asks for an explicit mapping
    between an hourly upstream and a daily downstream where Dagster infers one."""
    with pytest.raises(InvalidDefinitionError, match=r"asset 'downstream': partitioned by .* give ins="):
        tg.Definitions(assets=_assets(_load("on_missing_basic")))


def test_on_missing_across_time_windows_waits_for_every_hour_of_the_new_day() -> None:
    """The same graph with the mapping given: the new day is requested once its 24 hours exist."""
    hourly = tg.HourlyPartitionsDefinition("2025-01-01-00:00")

    @tg.asset(partitions_def=hourly)
    def upstream() -> None: ...

    @tg.asset(
        ins={"upstream": tg.AssetIn(partition_mapping=tg.TimeWindowPartitionMapping())},
        automation_condition=tg.AutomationCondition.on_missing(),
        partitions_def=tg.DailyPartitionsDefinition("2025-01-01"),
    )
    def downstream(upstream: None) -> None: ...

    w = World(tg.Definitions(assets=[upstream, downstream]), datetime(2025, 1, 3, 0, 30, tzinfo=UTC))
    assert w.tick() == NOTHING  # 2025-01-01 and -02 were missing before: not backfilled
    assert w.tick(timedelta(days=1)) == NOTHING  # 2025-01-03 appears, its hours are missing
    hours = [f"2025-01-03-{h:02d}:00" for h in range(24)]
    w.materialize("upstream", *hours[:23])
    assert w.tick() == NOTHING  # 23:00 still missing
    w.materialize("upstream", hours[23])
    assert w.tick() == {("downstream", "2025-01-03")}
    assert w.tick() == NOTHING


def test_eager_combined_custom_condition() -> None:
    module = _load("eager_combined")
    w = World(tg.Definitions(assets=_assets(module)), datetime(2025, 1, 2, 10, 1, tzinfo=UTC))
    assert w.tick() == NOTHING
    w.materialize("upstream_asset_1")
    w.materialize("upstream_asset_2")
    # deps updated, but the asset has not updated since a */5 tick and no tick passed yet
    assert w.tick() == NOTHING
    assert w.tick(timedelta(minutes=4)) == NOTHING  # 10:05:30: tick passed; deps updated before it
    w.materialize("upstream_asset_2")
    w.materialize("upstream_asset_1")
    assert w.tick() == {("automation_condition_combination", None)}  # on_cron: all deps since 10:05
    w.run_requested()
    assert w.tick() == NOTHING
    w.materialize("upstream_asset_1")  # updated since the asset's own update: the second branch
    assert w.tick() == {("automation_condition_combination", None)}


def test_eager_without_any_deps_missing_runs_with_a_missing_upstream() -> None:
    condition = _load("allow_missing_upstreams").condition
    assert condition.label == "eager_allow_missing"
    assert ~AC.any_deps_missing() not in condition.operands

    @tg.asset
    def present() -> None: ...

    @tg.asset
    def absent() -> None: ...

    w = World(tg.Definitions(assets=[present, absent, _with(condition, ["present", "absent"])]), datetime.now(UTC))
    w.tick()
    w.materialize("present")
    assert w.tick() == {("target", None)}


def test_eager_ignore_dependencies() -> None:
    condition = _load("eager_ignore_dependencies").condition

    @tg.asset
    def foo() -> None: ...

    @tg.asset
    def bar() -> None: ...

    w = World(tg.Definitions(assets=[foo, bar, _with(condition, ["foo", "bar"])]), datetime.now(UTC))
    w.tick()
    w.materialize("foo")  # ignored: neither triggers nor blocks
    assert w.tick() == NOTHING
    w.materialize("bar")
    assert w.tick() == {("target", None)}


def test_eager_update_older_time_partitions() -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2025-01-01")

    @tg.asset(partitions_def=daily)
    def source() -> None: ...

    condition = _load("eager_update_older_time_partitions").condition
    target = _with(condition, ["source"], partitions_def=daily)
    w = World(tg.Definitions(assets=[source, target]), datetime(2025, 1, 10, 12, tzinfo=UTC))
    w.tick()
    w.materialize("source", "2025-01-03")  # an old partition now counts
    assert w.tick() == {("target", "2025-01-03")}


def test_update_specific_older_partition() -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2025-01-01")

    @tg.asset(partitions_def=daily)
    def source() -> None: ...

    condition = _load("update_specific_older_partition").condition
    target = _with(condition, ["source"], partitions_def=daily)
    w = World(tg.Definitions(assets=[source, target]), datetime(2025, 1, 10, 12, tzinfo=UTC))  # latest: 01-09
    w.tick()
    w.materialize("source", "2025-01-05", "2025-01-08")  # only the partition five days back counts
    assert w.tick() == {("target", "2025-01-05")}


def test_on_cron_with_the_deps_of_another_cron() -> None:
    condition = _load("on_cron_multiple_cron_schedules").condition
    crons = {n.cron_schedule for n in condition.walk() if n.name == "cron_tick_passed"}  # type: ignore[attr-defined]
    assert crons == {"0 9 * * *", "0 0 * * *"}

    @tg.asset
    def nightly_feed() -> None: ...

    w = World(
        tg.Definitions(assets=[nightly_feed, _with(condition, ["nightly_feed"])]), datetime(2025, 1, 2, 8, tzinfo=UTC)
    )
    w.tick()
    w.materialize("nightly_feed")  # 08:00: after midnight, so it counts for the 09:00 tick
    assert w.tick() == NOTHING
    assert w.tick(timedelta(hours=1, minutes=1)) == {("target", None)}  # 09:01


def test_allow_dependencies_cron_and_on_missing_allow() -> None:
    cron_condition = _load("allow_dependencies_cron").condition
    missing_condition = _load("on_missing_allow_dependencies").condition

    @tg.asset(group_name="abc")
    def in_abc() -> None: ...

    @tg.asset
    def elsewhere() -> None: ...

    @tg.asset(name="hourly", deps=["in_abc", "elsewhere"], automation_condition=cron_condition)
    def hourly() -> None: ...

    w = World(tg.Definitions(assets=[in_abc, elsewhere, hourly]), datetime(2025, 1, 2, 9, 59, tzinfo=UTC))
    w.tick()
    assert w.tick(timedelta(minutes=1)) == NOTHING  # 10:00:29 tick passed
    w.materialize("in_abc")  # `elsewhere` never updates: it is not allowed, so not waited for
    assert w.tick() == {("hourly", None)}
    deps_nodes = [n for n in missing_condition.walk() if n.name == "ANY_DEPS_MATCH"]
    assert deps_nodes and all(n.allow_selection is not None for n in deps_nodes)  # type: ignore[attr-defined]


def test_condition_labels_in_explain() -> None:
    condition = _load("condition_labels").in_progress_or_failed_deps

    @tg.asset
    def flaky() -> None: ...

    w = World(tg.Definitions(assets=[flaky, _with(condition, ["flaky"])]), datetime.now(UTC))
    w.tick()
    w.fail("flaky")
    assert w.tick() == {("target", None)}
    assert w.last is not None
    lines = w.last.evaluations[tg.AssetKey("target")].explain_lines()
    assert lines[0] == "✓ any_deps_in_progress_or_failed: true — upstream 'flaky' in progress or failed  [1/1]"
