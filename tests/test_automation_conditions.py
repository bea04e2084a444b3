"""AutomationCondition composites and operands against a fake clock and a scripted event log.

Each test writes out, per tick, the (asset, partition) pairs expected to be requested. The
evaluator is pure: these tests need no service and no process.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

import tidegate as tg
from tests.automation_world import World, layered_graph
from tidegate import AssetSelection
from tidegate import AutomationCondition as AC
from tidegate.definitions.automation_condition import from_template
from tidegate.definitions.automation_evaluator import evaluate_automation
from tidegate.definitions.automation_records import (
    AssetCursor,
    AutomationCursor,
    EvaluationRecord,
    NodeCursor,
    explained,
)
from tidegate.errors import InvalidDefinitionError

T0 = datetime(2024, 1, 22, 10, 0, tzinfo=UTC)
NOTHING: set[tuple[str, str | None]] = set()


def _chain(n: int, condition: AC) -> list[tg.AssetsDefinition]:
    """``a0`` (no condition: materialized by someone else) -> a1 -> ... -> a{n}."""

    @tg.asset(name="a0")
    def root() -> None: ...

    assets = [root]
    for i in range(1, n + 1):

        @tg.asset(name=f"a{i}", deps=[f"a{i - 1}"], automation_condition=condition)
        def step() -> None: ...

        assets.append(step)
    return assets


# -- eager -----------------------------------------------------------------------------------------


def test_eager_requests_on_upstream_update_waits_for_runs_and_handles_each_update_once() -> None:
    w = World(tg.Definitions(assets=_chain(2, AC.eager())), T0)
    assert w.tick() == NOTHING  # first evaluation: missing before the condition existed -> nothing
    assert w.tick() == NOTHING
    w.materialize("a0")
    assert w.tick() == {("a1", None), ("a2", None)}  # a2 joins through will_be_requested
    assert w.groups() == [(("a1", "a2"), None, False, ())]  # one run, in dependency order
    w.start_run("a1")
    w.start_run("a2")
    assert w.tick() == NOTHING  # handled: newly_requested
    w.materialize("a0")  # a new upstream update while the run is in progress
    assert w.tick() == NOTHING  # a1 in progress
    assert w.tick() == NOTHING
    w.materialize("a1")
    w.materialize("a2")  # the first run finishes
    assert w.tick() == NOTHING  # handled by the materialization itself
    w.materialize("a0")
    assert w.tick() == {("a1", None), ("a2", None)}
    assert w.tick() == NOTHING


def test_eager_update_during_run_is_not_lost() -> None:
    """An upstream update that lands while the asset is in progress is still requested after."""
    w = World(tg.Definitions(assets=_chain(1, AC.eager())), T0)
    w.tick()
    w.start_run("a1")  # someone runs a1 by hand
    w.materialize("a0")
    assert w.tick() == NOTHING  # ~in_progress
    w.fail("a1")  # that run fails: a1 no longer in progress, the update is still pending
    assert w.tick() == {("a1", None)}


def test_eager_chain_of_five_assets_is_one_run() -> None:
    w = World(tg.Definitions(assets=_chain(5, AC.eager())), T0)
    w.tick()
    w.materialize("a0")
    assert w.tick() == {(f"a{i}", None) for i in range(1, 6)}
    assert w.groups() == [(("a1", "a2", "a3", "a4", "a5"), None, False, ())]
    w.run_requested()
    assert w.tick() == NOTHING
    assert w.tick() == NOTHING


def test_eager_waits_for_missing_upstream_and_recovers_after_upstream_failure() -> None:
    w = World(tg.Definitions(assets=_chain(2, AC.eager())), T0)
    w.tick()
    w.fail("a0")  # the upstream's run failed: still missing
    assert w.tick() == NOTHING
    w.materialize("a0")  # a retry succeeds
    assert w.tick() == {("a1", None), ("a2", None)}
    w.fail("a1")  # a1 fails; a2 is skipped with it
    assert w.tick() == NOTHING  # no retry by itself: nothing new upstream
    w.materialize("a0")  # the next upstream update
    assert w.tick() == {("a1", None), ("a2", None)}  # recovered


def test_eager_blocks_on_missing_dependency_that_is_not_requested() -> None:
    @tg.asset
    def left() -> None: ...

    @tg.asset
    def right() -> None: ...

    @tg.asset(deps=["left", "right"], automation_condition=AC.eager())
    def both() -> None: ...

    w = World(tg.Definitions(assets=[left, right, both]), T0)
    w.tick()
    w.materialize("left")
    assert w.tick() == NOTHING  # right is missing
    rec = w.last.evaluations[tg.AssetKey("both")] if w.last else None
    assert rec is not None
    assert "~any_deps_missing: false — upstream 'right' missing" in "\n".join(rec.explain_lines())
    w.materialize("right")
    assert w.tick() == {("both", None)}  # left's update is still pending (since), right's is new


def test_ignore_and_allow_inside_eager() -> None:
    @tg.asset
    def data() -> None: ...

    @tg.asset
    def lookup() -> None: ...

    @tg.asset(deps=["data", "lookup"], automation_condition=AC.eager().ignore(AssetSelection.assets("lookup")))
    def ignoring() -> None: ...

    @tg.asset(deps=["data", "lookup"], automation_condition=AC.eager().allow(AssetSelection.assets("data")))
    def allowing() -> None: ...

    @tg.asset(deps=["data", "lookup"], automation_condition=AC.eager())
    def plain() -> None: ...

    w = World(tg.Definitions(assets=[data, lookup, ignoring, allowing, plain]), T0)
    w.tick()
    w.materialize("data")  # lookup is missing: only the conditions that ignore it go ahead
    assert w.tick() == {("ignoring", None), ("allowing", None)}
    w.run_requested()
    assert w.tick() == NOTHING
    w.materialize("lookup")  # an update of the ignored dependency triggers only `plain`
    assert w.tick() == {("plain", None)}


def test_eager_on_daily_partitions_considers_only_the_latest_partition() -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-15")

    @tg.asset(partitions_def=daily)
    def orders() -> None: ...

    @tg.asset(partitions_def=daily, deps=["orders"], automation_condition=AC.eager())
    def summary() -> None: ...

    w = World(tg.Definitions(assets=[orders, summary]), T0)  # partitions 01-15 .. 01-21 exist
    assert w.tick() == NOTHING
    w.materialize("orders", "2024-01-21")
    assert w.tick() == {("summary", "2024-01-21")}
    assert w.groups() == [(("summary",), "2024-01-21", False, ())]
    w.run_requested()
    w.materialize("orders", "2024-01-18")  # an old partition: outside the latest time window
    assert w.tick() == NOTHING
    w.materialize("orders", "2024-01-22")  # a new day: 2024-01-22 exists from 01-23 00:00
    assert w.tick(timedelta(hours=14)) == {("summary", "2024-01-22")}


def test_explain_names_the_missing_upstream_partition() -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-15")

    @tg.asset(partitions_def=daily)
    def orders() -> None: ...

    @tg.asset(partitions_def=daily)
    def customers() -> None: ...

    @tg.asset(partitions_def=daily, deps=["orders", "customers"], automation_condition=AC.eager())
    def report() -> None: ...

    w = World(tg.Definitions(assets=[orders, customers, report]), T0 + timedelta(days=1))
    w.tick()
    w.materialize("customers", "2024-01-22")
    assert w.tick() == NOTHING
    assert w.last is not None
    record = EvaluationRecord.from_json(w.last.evaluations[tg.AssetKey("report")].to_json())
    lines = record.explain_lines("2024-01-22", w.partition_keys(tg.AssetKey("report")))
    assert "✗ ~any_deps_missing: false — upstream 'orders' partition 2024-01-22 missing  [0/1]" in [
        line.strip() for line in lines
    ]
    assert lines[0].startswith("✗ eager: false — '~any_deps_missing' is false")


def test_a_record_is_stored_compact_and_explained_when_read() -> None:
    """The stored JSON holds the condition's template once and per node its counts, not the
    reasons; reading it explains the same tree; a record of the earlier format (the tree with
    every reason) still reads."""

    @tg.asset
    def left() -> None: ...

    @tg.asset(deps=["left"], automation_condition=AC.eager())
    def right() -> None: ...

    w = World(tg.Definitions(assets=[left, right]), T0)
    w.tick()
    w.materialize("left")
    assert w.tick() == {("right", None)}
    assert w.last is not None
    made = w.last.evaluations[tg.AssetKey("right")]
    stored = made.to_json()
    assert " — " not in stored and '"v":2' in stored
    again = EvaluationRecord.from_json(stored)
    assert again.explain_lines() == made.explain_lines()
    assert again.explain_lines()[0] == "✓ eager: true — every operand true  [1/1]"
    legacy = made.explained_dict()  # what an earlier version stored
    assert EvaluationRecord.from_dict(legacy).explain_lines() == made.explain_lines()
    assert explained(json.loads(stored)) == legacy == explained(legacy)


@pytest.mark.parametrize(
    "condition",
    [
        AC.eager(),
        AC.on_cron("0 9 * * 1", "Europe/Paris"),
        AC.on_missing(),
        AC.in_latest_time_window(timedelta(days=2)).with_label("recent") & ~AC.execution_failed(),
        AC.any_deps_match(AC.missing()).allow(AssetSelection.assets("a")),
    ],
)
def test_a_condition_template_reads_back_as_the_same_tree(condition: AC) -> None:
    back = from_template(condition.template())
    assert back.display() == condition.display()
    assert [(n.name, n.label, n.description) for n in back.walk()] == [
        (n.name, n.label, n.description) for n in condition.walk()
    ]
    with pytest.raises(InvalidDefinitionError, match="unknown node 'nope'"):
        from_template('["nope", null, []]')


# -- on_cron ---------------------------------------------------------------------------------------


def test_on_cron_waits_for_all_deps_updated_since_the_tick() -> None:
    @tg.asset
    def raw_a() -> None: ...

    @tg.asset
    def raw_b() -> None: ...

    @tg.asset(deps=["raw_a", "raw_b"], automation_condition=AC.on_cron("0 * * * *"))
    def hourly() -> None: ...

    w = World(tg.Definitions(assets=[raw_a, raw_b, hourly]), T0 + timedelta(minutes=50))  # 10:50
    assert w.tick() == NOTHING  # 10:50:30, first evaluation
    w.materialize("raw_a")  # before the 11:00 tick: does not count for it
    w.materialize("raw_b")
    assert w.tick() == NOTHING
    assert w.tick(timedelta(minutes=10)) == NOTHING  # 11:01: tick passed, no dep updated since
    w.materialize("raw_a")
    assert w.tick() == NOTHING  # raw_b not yet
    w.materialize("raw_b")
    assert w.tick() == {("hourly", None)}
    w.run_requested()
    w.materialize("raw_a")
    w.materialize("raw_b")
    assert w.tick() == NOTHING  # once per tick
    assert w.tick(timedelta(minutes=30)) == NOTHING  # 11:32
    assert w.tick(timedelta(minutes=30)) == NOTHING  # 12:02: new tick, deps updated before it
    w.materialize("raw_b")
    w.materialize("raw_a")
    assert w.tick() == {("hourly", None)}


def test_on_cron_without_deps_fires_once_per_tick_and_ignore_drops_a_dep() -> None:
    @tg.asset(automation_condition=AC.on_cron("0 0 * * *", "Europe/Berlin"))
    def nightly() -> None: ...

    @tg.asset
    def slow_feed() -> None: ...

    @tg.asset(
        deps=["nightly", "slow_feed"],
        automation_condition=AC.on_cron("0 0 * * *", "Europe/Berlin").ignore(AssetSelection.assets("slow_feed")),
    )
    def downstream() -> None: ...

    w = World(tg.Definitions(assets=[nightly, slow_feed, downstream]), datetime(2024, 1, 22, 22, 50, tzinfo=UTC))
    assert w.tick() == NOTHING
    # 23:00 UTC is midnight in Berlin; nightly will be requested, so downstream joins it
    assert w.tick(timedelta(minutes=15)) == {("nightly", None), ("downstream", None)}
    assert w.groups() == [(("nightly", "downstream"), None, False, ())]
    w.run_requested()
    assert w.tick() == NOTHING
    assert w.tick(timedelta(hours=12)) == NOTHING
    assert w.tick(timedelta(hours=12)) == {("nightly", None), ("downstream", None)}


# -- on_missing ------------------------------------------------------------------------------------


def test_on_missing_requests_new_partitions_once_their_deps_exist() -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-15")

    @tg.asset(partitions_def=daily)
    def events() -> None: ...

    @tg.asset(partitions_def=daily, deps=["events"], automation_condition=AC.on_missing())
    def sessions() -> None: ...

    w = World(tg.Definitions(assets=[events, sessions]), T0)
    w.materialize("events", "2024-01-21")
    assert w.tick() == NOTHING  # missing before the condition was applied: not backfilled
    assert w.tick(timedelta(hours=14)) == NOTHING  # 2024-01-22 appears; events for it is missing
    w.materialize("events", "2024-01-22")
    assert w.tick() == {("sessions", "2024-01-22")}
    assert w.tick() == NOTHING  # handled (requested), even though still missing
    assert w.tick() == NOTHING


# -- operands and operators ------------------------------------------------------------------------


def test_backfill_of_many_partitions_and_lookback_window() -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-01")
    condition = AC.in_latest_time_window(timedelta(days=3)) & AC.missing() & ~AC.in_progress()

    @tg.asset(partitions_def=daily, automation_condition=condition)
    def recent() -> None: ...

    @tg.asset(partitions_def=daily, automation_condition=condition)
    def recent_too() -> None: ...

    w = World(tg.Definitions(assets=[recent, recent_too]), T0)
    w.materialize("recent", "2024-01-20")
    assert w.tick() == {
        ("recent", "2024-01-19"),
        ("recent", "2024-01-21"),
        ("recent_too", "2024-01-19"),
        ("recent_too", "2024-01-20"),
        ("recent_too", "2024-01-21"),
    }
    assert w.groups() == [
        (("recent_too",), None, True, ("2024-01-19", "2024-01-20", "2024-01-21")),
        (("recent",), None, True, ("2024-01-19", "2024-01-21")),
    ]
    w.start_backfill("recent", "2024-01-19", "2024-01-21")
    assert ("recent", "2024-01-19") not in w.tick()


def test_execution_failed_newly_requested_and_since() -> None:
    retry_failed = AC.execution_failed() & ~AC.newly_requested() & ~AC.in_progress()
    newly = AC.newly_updated().since(AC.newly_requested()).with_label("updated_since_requested")

    @tg.asset(automation_condition=retry_failed)
    def flaky() -> None: ...

    @tg.asset(deps=["flaky"], automation_condition=AC.any_deps_match(newly) & ~AC.newly_requested())
    def follower() -> None: ...

    w = World(tg.Definitions(assets=[flaky, follower]), T0)
    assert w.tick() == NOTHING
    w.fail("flaky")
    assert w.tick() == {("flaky", None)}
    assert w.tick() == NOTHING  # newly_requested on the tick after the request
    w.start_run("flaky")
    assert w.tick() == NOTHING
    w.materialize("flaky")
    assert w.tick() == {("follower", None)}
    assert w.tick() == NOTHING


def test_newly_true_and_or_not() -> None:
    @tg.asset
    def src() -> None: ...

    became_missing = (AC.missing() | AC.execution_failed()).newly_true()

    @tg.asset(deps=["src"], automation_condition=AC.any_deps_match(became_missing))
    def watcher() -> None: ...

    w = World(tg.Definitions(assets=[src, watcher]), T0)
    assert w.tick() == {("watcher", None)}  # no previous state: missing counts as newly true
    assert w.tick() == NOTHING
    w.materialize("src")
    assert w.tick() == NOTHING
    w.fail("src")
    assert w.tick() == {("watcher", None)}
    assert w.tick() == NOTHING


# -- composing and validating ----------------------------------------------------------------------


def test_replace_without_and_labels_reach_inside_composites() -> None:
    eager = AC.eager()
    assert eager.label == "eager"
    relaxed = eager.without(~AC.any_deps_missing())
    assert ~AC.any_deps_missing() not in relaxed.operands and len(relaxed.operands) == 4
    assert AC.in_latest_time_window() not in eager.without(AC.in_latest_time_window()).operands
    replaced = AC.on_missing().replace("handled", AC.newly_requested() | AC.newly_updated())
    assert "initial_evaluation" not in {n.name for n in replaced.walk()}
    assert "initial_evaluation" in {n.name for n in AC.on_missing().walk()}
    with pytest.raises(InvalidDefinitionError, match="no operand 'nope'"):
        eager.without("nope")
    ignored = AC.eager().ignore(AssetSelection.assets("x"))
    deps_nodes = [n for n in ignored.walk() if n.name in ("ANY_DEPS_MATCH", "ALL_DEPS_MATCH")]
    assert len(deps_nodes) == 3 and all(n.ignore_selection is not None for n in deps_nodes)  # type: ignore[attr-defined]
    combined = (AC.missing() & AC.newly_updated()) & AC.in_progress()
    assert len(combined.operands) == 3  # unlabelled ANDs flatten, as in Dagster
    assert (AC.missing() | AC.newly_updated()).display() == "(missing) | (newly_updated)"


def test_conditions_are_validated_when_defined() -> None:
    with pytest.raises(InvalidDefinitionError, match="invalid cron '0 6 \\* \\*'"):
        AC.on_cron("0 6 * *")
    with pytest.raises(InvalidDefinitionError, match="unknown timezone 'Mars/Base'"):
        AC.cron_tick_passed("@daily", "Mars/Base")
    with pytest.raises(InvalidDefinitionError, match="asset 'x': automation_condition must be an AutomationCondition"):

        @tg.asset(automation_condition="eager")  # type: ignore[arg-type]
        def x() -> None: ...

    spec = tg.AssetSpec("warehouse_table", automation_condition=AC.eager())
    assert spec.automation_condition == AC.eager()
    with pytest.raises(
        InvalidDefinitionError, match="asset 'warehouse_table': has an automation_condition but is external"
    ):
        tg.Definitions(assets=[spec])


def _settle(w: World) -> None:
    """Tick until nothing is evaluated any more (an event operand seen true keeps an asset
    "unstable" for one more evaluation); it must settle within three ticks."""
    for _ in range(3):
        w.tick(timedelta(seconds=5))
        assert w.last is not None
        if w.last.evaluated == 0:
            return
    raise AssertionError("the evaluation did not settle")


def _evaluated(w: World) -> set[str]:
    assert w.last is not None
    return {k.to_user_string() for k in w.last.evaluations}


def test_unchanged_assets_are_skipped_but_cron_conditions_re_evaluate() -> None:
    assets = _chain(30, AC.eager())

    @tg.asset(deps=["a30"], automation_condition=AC.on_cron("0 * * * *"))
    def hourly() -> None: ...

    w = World(tg.Definitions(assets=[*assets, hourly]), T0 + timedelta(minutes=55))  # 10:55
    assert w.tick() == NOTHING and len(_evaluated(w)) == 31  # first evaluation: everything
    _settle(w)
    assert w.tick() == NOTHING and _evaluated(w) == set()  # nothing changed: nothing evaluated
    w.materialize("a0")
    assert len(w.tick()) == 30
    w.run_requested()
    _settle(w)
    w.materialize("a29")  # a change deep in the graph: it and what depends on it re-evaluate
    assert w.tick() == {("a30", None)}
    assert _evaluated(w) == {"a29", "a30", "hourly"}
    w.run_requested()
    _settle(w)
    assert w.now < T0 + timedelta(hours=1)
    assert w.tick(T0 + timedelta(hours=1, seconds=10) - w.now) == NOTHING  # 11:00:10: a30 not updated since 11:00
    assert _evaluated(w) == {"hourly"}  # only the cron condition re-evaluates
    w.materialize("a30")
    assert w.tick() == {("hourly", None)}


def test_cursor_round_trips_through_json() -> None:
    w = World(tg.Definitions(assets=_chain(2, AC.eager())), T0)
    w.tick()
    w.materialize("a0")
    w.tick()
    assert w.cursor is not None
    text = w.cursor.to_json()
    again = AutomationCursor.from_json(text)
    assert again == w.cursor
    # assembled from cached per-asset fragments, it is still plain compact JSON of the dict form
    assets = {k.to_user_string(): c.to_dict() for k, c in sorted(w.cursor.assets.items())}
    plain = {"v": 1, "evaluation_time": w.cursor.evaluation_time, "partitions": w.cursor.partitions_fingerprint}
    assert text == json.dumps({**plain, "assets": assets}, separators=(",", ":"))
    # the next cursor reuses the assets text only when every AssetCursor is the previous one
    same = AutomationCursor(w.cursor.evaluation_time, dict(w.cursor.assets), w.cursor.partitions_fingerprint)
    assert same.to_json(w.cursor) == text
    first = next(iter(w.cursor.assets))
    moved = dict(w.cursor.assets)
    moved[first] = dataclasses.replace(moved[first], evaluation_time=1.5)
    other = AutomationCursor(w.cursor.evaluation_time, moved, w.cursor.partitions_fingerprint)
    assert AutomationCursor.from_json(other.to_json(w.cursor)) == other
    assert AutomationCursor.from_json(None) == AutomationCursor()
    # an entry's fragment (its runs encoded as tuples) is the JSON of its dict form
    runs = (("2024-01-01", "2024-01-03"), ("2024-01-05", "2024-01-05"))
    entry = AssetCursor("h", 2.5, runs, {"0.0": NodeCursor(runs), "0.1": NodeCursor(((None, None),))}, stable=True)
    assert entry.json_fragment == json.dumps(entry.to_dict(), separators=(",", ":"))
    assert AssetCursor.from_dict(json.loads(entry.json_fragment)) == entry


def test_a_request_in_another_partitions_definition_is_not_joined() -> None:
    """will_be_requested only counts a request that can share the dependent's run: an
    unpartitioned asset waits for its daily parent's run to finish, then goes."""
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-19")

    @tg.asset(partitions_def=daily)
    def raw() -> None: ...

    @tg.asset(partitions_def=daily, deps=["raw"], automation_condition=AC.eager())
    def cleaned() -> None: ...

    @tg.asset(deps=["cleaned"], automation_condition=AC.eager())
    def overview() -> None: ...

    w = World(tg.Definitions(assets=[raw, cleaned, overview]), T0)  # partitions 01-19 .. 01-21
    for name in ("raw", "cleaned"):
        w.materialize(name, "2024-01-19", "2024-01-20", "2024-01-21")
    w.materialize("overview")
    w.tick()
    assert w.tick() == NOTHING
    w.materialize("raw", "2024-01-21")
    assert w.tick() == {("cleaned", "2024-01-21")}  # overview cannot join a daily run
    assert w.last is not None
    why = "\n".join(w.last.evaluations[tg.AssetKey("overview")].explain_lines())
    assert "requested, but in a run 'overview' cannot join (other partitions)" in why
    w.run_requested()
    assert w.tick() == {("overview", None)}


def test_without_changed_every_target_is_evaluated() -> None:
    w = World(tg.Definitions(assets=_chain(3, AC.eager())), T0)
    w.tick()
    _settle(w)
    targets = [tg.AssetKey(f"a{i}") for i in range(1, 4)]
    result = evaluate_automation(w.graph, targets, w, w.now, w.cursor, changed=None)
    assert result.evaluated == 3 and result.requested == {}
    only_two = evaluate_automation(w.graph, targets[:2], w, w.now, w.cursor, changed=None)
    assert set(only_two.evaluations) == set(targets[:2])


def test_an_incremental_evaluation_matches_a_full_one_on_a_random_graph() -> None:
    """The evaluator picks the assets to evaluate from what changed (and the sets it keeps
    beside the cursor it produced) rather than walking the graph: each tick of a scripted
    random history requests exactly what evaluating every asset from the same cursor does,
    and leaves the same state, whether the cursor is the evaluator's own object or parsed
    from its JSON."""
    import random

    rng = random.Random(13)
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-19")
    grandparents = AC.any_deps_match(AC.any_deps_updated())  # reads beyond its dependencies
    after_request = AC.any_deps_match(AC.newly_requested())  # a dependency requested on the previous tick
    conditions = [AC.eager(), AC.eager(), AC.on_missing(), AC.on_cron("*/5 * * * *"), grandparents, after_request]
    conditions.append(None)
    defs, layers = layered_graph(rng, conditions, lambda layer, i: daily if layer in (2, 3) else None)
    w = World(defs, T0)
    targets = [k for k, a in w.graph.assets.items() if a.automation_condition is not None]
    own: AutomationCursor | None = None  # the evaluator's own cursor object, never parsed

    def timeless(cursor: AutomationCursor) -> dict[tg.AssetKey, object]:
        return {k: dataclasses.replace(c, evaluation_time=0.0) for k, c in cursor.assets.items()}

    skipped = 0
    for _ in range(40):
        for _ in range(rng.randint(0, 3)):
            name = rng.choice([n for layer in layers for n in layer])
            partitions = ["2024-01-21"] if int(name[1]) in (2, 3) else []
            rng.choice([w.materialize, w.materialize, w.fail, w.start_run])(name, *partitions)
        w.now += timedelta(minutes=rng.choice([1, 2, 7]))
        parsed = w.cursor
        incremental = evaluate_automation(w.graph, targets, w, w.now, own, w.changed)
        from_json = evaluate_automation(w.graph, targets, w, w.now, parsed, w.changed)
        full = evaluate_automation(w.graph, targets, w, w.now, parsed, None)
        assert incremental.requested == from_json.requested == full.requested
        assert timeless(incremental.cursor) == timeless(from_json.cursor) == timeless(full.cursor)
        skipped += len(targets) - incremental.evaluated
        own, w.cursor, w.last = (
            incremental.cursor,
            AutomationCursor.from_json(incremental.cursor.to_json()),
            incremental,
        )
        w.updated.clear()
        w.changed = set()
        if rng.random() < 0.6:  # else the requested runs are not done yet (newly_requested flips)
            w.run_requested()
    assert skipped > 0  # the incremental evaluation did skip assets
