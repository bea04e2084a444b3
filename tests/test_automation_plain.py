"""The evaluator's fast paths (an unpartitioned asset's condition compiled into closures, the
dependency loop of an unpartitioned dependent) against its general code.

Random graphs (unpartitioned assets, some daily-partitioned ones among them), random
conditions built from every operand and operator, random histories of materializations,
failures, runs and backfills: on every tick, ``evaluate_automation`` with and without its fast
paths requests the same partitions, leaves the same cursor and stores the same records.
Pure: no service needed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidegate as tg
from tests.automation_world import World, layered_graph
from tidegate import AutomationCondition as AC
from tidegate.definitions.automation_evaluator import evaluate_automation
from tidegate.definitions.automation_records import AutomationCursor, AutomationResult

T0 = datetime(2024, 1, 22, 10, 0, tzinfo=UTC)
DAILY = tg.DailyPartitionsDefinition(start_date="2024-01-19")
PARTITIONS = ["2024-01-20", "2024-01-21"]
CRON = "*/5 * * * *"

_OPERANDS = [
    AC.missing(),
    AC.newly_missing(),
    AC.newly_updated(),
    AC.newly_requested(),
    AC.will_be_requested(),
    AC.initial_evaluation(),
    AC.run_in_progress(),
    AC.backfill_in_progress(),
    AC.in_progress(),
    AC.execution_failed(),
    AC.in_latest_time_window(),
    AC.cron_tick_passed(CRON),
    AC.any_deps_updated(),
    AC.any_deps_missing(),
    AC.any_deps_in_progress(),
    AC.all_deps_updated_since_cron(CRON),
    AC.eager(),
    AC.on_missing(),
    AC.on_cron(CRON),
]


def _extend(children: st.SearchStrategy[AC]) -> st.SearchStrategy[AC]:
    pairs = st.tuples(children, children)
    return st.one_of(
        pairs.map(lambda p: p[0] & p[1]),
        pairs.map(lambda p: p[0] | p[1]),
        children.map(lambda c: ~c),
        pairs.map(lambda p: p[0].since(p[1])),
        children.map(lambda c: c.newly_true()),
        children.map(lambda c: c.since_last_handled()),
        children.map(AC.any_deps_match),
        children.map(AC.all_deps_match),
        children.map(lambda c: c.with_label("labelled")),
    )


CONDITIONS = st.recursive(st.sampled_from(_OPERANDS), _extend, max_leaves=6)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[World, list[str]]:
    """Three layers of two to four assets; the middle one may hold a daily-partitioned asset.
    Their conditions are drawn from two: dependents of one dependency share its results."""
    pool = draw(st.lists(CONDITIONS, min_size=1, max_size=2))
    assets = []
    layers: list[list[str]] = []
    for layer in range(3):
        names = []
        for i in range(draw(st.integers(2, 4))):
            name = f"l{layer}_{i}"
            deps = draw(st.lists(st.sampled_from(layers[-1]), max_size=3, unique=True)) if layers else []
            partitioned = layer == 1 and draw(st.booleans())
            condition = draw(st.sampled_from(pool)) if layer or draw(st.booleans()) else None

            @tg.asset(
                name=name, deps=deps, automation_condition=condition, partitions_def=DAILY if partitioned else None
            )
            def body() -> None: ...

            assets.append(body)
            names.append(name)
        layers.append(names)
    return World(tg.Definitions(assets=assets), T0), [n for layer in layers for n in layer]


def _said(result: AutomationResult) -> tuple[object, ...]:
    """What a tick leaves: requests, the cursor as stored, each record as stored."""
    records = {k.to_user_string(): r.to_json() for k, r in result.evaluations.items()}
    return result.requested, result.cursor.to_json(), records, result.evaluated


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.data())
def test_the_fast_paths_evaluate_as_the_general_code(world: tuple[World, list[str]], data: st.DataObject) -> None:
    w, names = world
    targets = [k for k, a in w.graph.assets.items() if a.automation_condition is not None]
    for _ in range(data.draw(st.integers(3, 10))):
        for _ in range(data.draw(st.integers(0, 3))):
            name = data.draw(st.sampled_from(names))
            partitioned = w.graph.assets[tg.AssetKey(name)].partitions_def is not None
            partitions = [data.draw(st.sampled_from(PARTITIONS))] if partitioned else []
            event = data.draw(st.sampled_from([w.materialize, w.materialize, w.fail, w.start_run, w.start_backfill]))
            event(name, *partitions)
        w.now += timedelta(minutes=data.draw(st.sampled_from([1, 3, 7])))
        changed = None if data.draw(st.booleans()) else w.changed
        fast = evaluate_automation(w.graph, targets, w, w.now, w.cursor, changed)
        general = evaluate_automation(w.graph, targets, w, w.now, w.cursor, changed, fast_paths=False)
        assert _said(fast) == _said(general)
        w.cursor, w.last = AutomationCursor.from_json(fast.cursor.to_json()), fast
        w.updated.clear()
        w.changed = set()
        if data.draw(st.booleans()):
            w.run_requested()


def test_the_fast_paths_evaluate_as_the_general_code_on_a_layered_graph() -> None:
    """As above on a bigger graph, as the bench's: six layers of six assets, fan-in up to three,
    most eager, so that many dependents read each dependency (its results shared between them)."""
    import random

    rng = random.Random(17)
    conditions = [AC.eager(), AC.eager(), AC.eager(), AC.on_missing(), AC.on_cron(CRON)]
    conditions += [AC.any_deps_match(AC.any_deps_updated()), AC.eager().ignore(tg.AssetSelection.assets("l0_0")), None]
    defs, layers = layered_graph(rng, conditions, lambda layer, i: DAILY if layer == 2 and i < 2 else None)
    w = World(defs, T0)
    targets = [k for k, a in w.graph.assets.items() if a.automation_condition is not None]
    requested = 0
    for _ in range(40):
        for _ in range(rng.randint(0, 4)):
            name = rng.choice([n for layer in layers for n in layer])
            partitions = [rng.choice(PARTITIONS)] if w.graph.assets[tg.AssetKey(name)].partitions_def else []
            rng.choice([w.materialize, w.materialize, w.fail, w.start_run, w.start_backfill])(name, *partitions)
        w.now += timedelta(minutes=rng.choice([1, 2, 7]))
        fast = evaluate_automation(w.graph, targets, w, w.now, w.cursor, w.changed)
        general = evaluate_automation(w.graph, targets, w, w.now, w.cursor, w.changed, fast_paths=False)
        assert _said(fast) == _said(general)
        requested += len(fast.requested)
        w.cursor, w.last = AutomationCursor.from_json(fast.cursor.to_json()), fast
        w.updated.clear()
        w.changed = set()
        if rng.random() < 0.6:
            w.run_requested()
    assert requested > 0  # the history did request runs


def test_a_dependency_result_shared_between_dependents_keeps_them_unsettled() -> None:
    """Two assets require every dependency missing or newly updated (and never request: their
    own latest execution did not fail). The second reads the first's results on the dependencies;
    an update of one makes it as unsettled as the first (its next evaluation must see the
    update gone), with or without fast paths, though the record shows the other dependency."""

    @tg.asset(name="a_never")
    def never() -> None: ...

    @tg.asset(name="b_fresh")
    def fresh() -> None: ...

    condition = AC.all_deps_match(AC.newly_updated() | AC.missing()) & AC.execution_failed()
    made = [never, fresh]
    for name in ("first", "second"):

        @tg.asset(name=name, deps=["a_never", "b_fresh"], automation_condition=condition)
        def dependent() -> None: ...

        made.append(dependent)
    w = World(tg.Definitions(assets=made), T0)
    targets = [tg.AssetKey("first"), tg.AssetKey("second")]
    for _ in range(3):
        w.materialize("b_fresh")
        w.now += timedelta(minutes=1)
        fast = evaluate_automation(w.graph, targets, w, w.now, w.cursor, w.changed)
        general = evaluate_automation(w.graph, targets, w, w.now, w.cursor, w.changed, fast_paths=False)
        assert _said(fast) == _said(general)
        assert not fast.requested
        w.cursor = AutomationCursor.from_json(fast.cursor.to_json())
        w.updated.clear()
        w.changed = set()
    assert [c.stable for c in w.cursor.assets.values()] == [False, False]  # 'b_fresh' updated on every tick


def test_a_not_on_no_candidates_keeps_its_stateful_operand_current() -> None:
    """``~newly_missing()`` behind a false operand: the NOT has no candidates, but its operand
    (a newly_true, with state) runs all the same and its state is stored, in the compiled
    program as in the general code (the program's NOT once skipped its operand there)."""

    @tg.asset(name="alone", automation_condition=AC.any_deps_updated() & ~AC.newly_missing())
    def alone() -> None: ...

    w = World(tg.Definitions(assets=[alone]), T0)
    targets = [tg.AssetKey("alone")]
    for _ in range(2):
        w.now += timedelta(minutes=1)
        fast = evaluate_automation(w.graph, targets, w, w.now, w.cursor, w.changed)
        general = evaluate_automation(w.graph, targets, w, w.now, w.cursor, w.changed, fast_paths=False)
        assert _said(fast) == _said(general)
        assert "0.1.0" in fast.cursor.assets[tg.AssetKey("alone")].nodes  # the newly_missing state
        w.cursor = AutomationCursor.from_json(fast.cursor.to_json())
        w.changed = set()


def test_partition_mappings_other_than_identity_on_partitions_of_other_definitions() -> None:
    """Subsets of partitions crossing a mapping between two partitions definitions: a daily
    asset reading a weekly one (time windows: each day of a week reads it once it has
    ended, as in Dagster), a weekly one reading a daily one, a daily one
    reading yesterday and today of a daily asset that starts earlier, a static asset reading
    another static one by identical keys (b and c shared, a and d not), a static asset reading
    every partition of another. Each requests where a partition it reads was updated and none
    is missing; the requests are written out, and both code paths agree."""
    tw = tg.TimeWindowPartitionMapping
    weekly = tg.WeeklyPartitionsDefinition(start_date="2024-01-07")
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-10")
    later = tg.DailyPartitionsDefinition(start_date="2024-01-12")
    s1 = tg.StaticPartitionsDefinition(["a", "b", "c"])
    s2 = tg.StaticPartitionsDefinition(["b", "c", "d"])
    condition = AC.any_deps_updated() & ~AC.any_deps_missing()
    made = []

    def add(name: str, partitions: tg.PartitionsDefinition | None, ins: dict[str, tg.PartitionMapping] | None) -> None:
        if ins is None:

            @tg.asset(name=name, partitions_def=partitions)
            def source() -> None: ...

            made.append(source)
            return
        (parent, mapping), *_ = ins.items()

        @tg.asset(
            name=name,
            partitions_def=partitions,
            automation_condition=condition,
            ins={"upstream": tg.AssetIn(key=parent, partition_mapping=mapping)},
        )
        def child(upstream: object) -> None: ...

        made.append(child)

    add("weeks", weekly, None)
    add("days", daily, None)
    add("s1", s1, None)
    add("days_of_weeks", daily, {"weeks": tw()})
    add("weeks_of_days", weekly, {"days": tw()})
    add("rolling", later, {"days": tw(start_offset=-1)})
    add("s2_same", s2, {"s1": tg.IdentityPartitionMapping()})
    add("s2_all", s2, {"s1": tg.AllPartitionMapping()})
    w = World(tg.Definitions(assets=made), datetime(2024, 1, 22, 10, 0, tzinfo=UTC))
    targets = [k for k, a in w.graph.assets.items() if a.automation_condition is not None]

    def tick() -> set[tuple[str, str | None]]:
        w.now += timedelta(minutes=1)
        fast = evaluate_automation(w.graph, targets, w, w.now, w.cursor, w.changed)
        general = evaluate_automation(w.graph, targets, w, w.now, w.cursor, w.changed, fast_paths=False)
        assert _said(fast) == _said(general)
        w.cursor, w.last = AutomationCursor.from_json(fast.cursor.to_json()), fast
        w.updated.clear()
        w.changed = set()
        return {(k.to_user_string(), p) for k, parts in fast.requested.items() for p in parts}

    assert tick() == set()
    w.materialize("weeks", "2024-01-14")
    w.materialize("days", "2024-01-12", "2024-01-13", "2024-01-15")
    w.materialize("s1", "a", "b")
    assert tick() == {
        # the week of 14 to 20 January (ended on the 21st), read by each of its days
        *(("days_of_weeks", f"2024-01-{d}") for d in range(14, 21)),
        # 13 reads 12 and 13; 14 reads 13 and the missing 14; 12 reads the missing 11
        ("rolling", "2024-01-13"),
        ("s2_same", "b"),  # 'a' is not a partition of s2_same; its 'c' and 'd' read nothing updated
        # every partition reads a, b and c: c is missing
    }
    w.materialize("s1", "c")
    w.materialize("days", *(f"2024-01-{d}" for d in range(14, 21)))
    assert tick() == {
        ("s2_all", "b"),
        ("s2_all", "c"),
        ("s2_all", "d"),
        ("s2_same", "c"),
        ("weeks_of_days", "2024-01-14"),  # its seven days materialized (the week before: 7 to 9 missing)
        *(("rolling", f"2024-01-{d}") for d in range(14, 22) if d != 21),
    }
    # the reasons name the dependency's partitions, mapped back from the dependent's
    assert w.last is not None
    weeks = "\n".join(w.last.evaluations[tg.AssetKey("weeks_of_days")].explain_lines("2024-01-14"))
    days = ", ".join(f"2024-01-{d}" for d in range(14, 21))
    assert f"any_deps_updated: true — upstream 'days' 7 partitions: {days} updated" in weeks
    rolling = "\n".join(w.last.evaluations[tg.AssetKey("rolling")].explain_lines("2024-01-21"))
    assert "any_deps_missing: true — upstream 'days' partition 2024-01-21 missing" in rolling


def test_a_dependency_requested_in_a_run_its_dependent_cannot_join_shows_why() -> None:
    """An unpartitioned dependency requested on this tick, read by the will_be_requested of a
    daily-partitioned dependent (which cannot join its run) and of an unpartitioned one (which
    can): the record's subtree of the dependency says why it is false for the first, true for
    the second; the same with the fast paths (the subtree from the operand's compiled program)
    as without."""

    @tg.asset(name="up", automation_condition=AC.missing())
    def up() -> None: ...

    def dependent(name: str, partitions: tg.DailyPartitionsDefinition | None) -> tg.AssetsDefinition:
        condition = AC.any_deps_match(AC.will_be_requested() & ~AC.in_progress())

        @tg.asset(name=name, deps=["up"], partitions_def=partitions, automation_condition=condition)
        def body() -> None: ...

        return body

    w = World(tg.Definitions(assets=[up, dependent("daily", DAILY), dependent("plain", None)]), T0)
    targets = list(w.graph.assets)
    fast = evaluate_automation(w.graph, targets, w, w.now, None, None)
    general = evaluate_automation(w.graph, targets, w, w.now, None, None, fast_paths=False)
    assert _said(fast) == _said(general)
    assert set(fast.requested) == {tg.AssetKey("up"), tg.AssetKey("plain")}
    daily = fast.evaluations[tg.AssetKey("daily")].to_json()
    assert "requested, but in a run 'daily' cannot join (other partitions)" in daily
    assert "cannot join" not in fast.evaluations[tg.AssetKey("plain")].to_json()
