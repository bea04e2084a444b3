"""Automation condition sensors in the beat, stepped with a fake clock, on SQLite and
PostgreSQL; runs are executed in this process by the worker's step code.

* a schedule materializes ``source`` every hour; ten eager assets below it run once per
  update, in one run, in topological order; the tick, its cursor, its evaluation records and
  its run commit together, and ``tidegate automation explain/history`` show them;
* a tick's reads are the same few queries whatever the size of the graph;
* many partitions of one asset requested at once become a backfill;
* the default sensor covers the assets with a condition that no automation sensor targets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event, select

import tidegate as tg
from tests.automation_world import commit_tick
from tidegate.cli import main
from tidegate.definitions.automation_sensor import DEFAULT_AUTOMATION_SENSOR
from tidegate.definitions.job import IMPLICIT_ASSET_JOB
from tidegate.errors import InvalidDefinitionError, PartitionKeyError
from tidegate.names import AUTOMATION_TAG, BACKFILL_TAG, SCHEDULE_TAG, RunStatus, TickStatus
from tidegate.scheduler.beat import Beat
from tidegate.scheduler.clock import FakeClock
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRef
from tidegate.workers.execution import StepExecutor
from tidegate.workers.io import FilesystemIOManager

RUNNING = tg.DefaultSensorStatus.RUNNING
EAGER = tg.AutomationCondition.eager()
START = datetime(2024, 3, 4, 0, 0, 30, tzinfo=UTC)


def _layered(count: int, *, prefix: str = "a") -> list[tg.AssetsDefinition]:
    """``count`` eager assets below ``source``: each depends on the previous one, every third
    also on the one three back (fan-in 2)."""
    made: list[tg.AssetsDefinition] = []
    for i in range(count):
        deps = ["source"] if i == 0 else [f"{prefix}{i - 1}"]
        if i >= 3 and i % 3 == 0:
            deps.append(f"{prefix}{i - 3}")

        def body() -> int:
            return 1

        made.append(tg.asset(name=f"{prefix}{i}", deps=deps, automation_condition=EAGER)(body))
    return made


@tg.asset
def source() -> int:
    return 1


SOURCE_JOB = tg.define_asset_job("source_job", [source])


def _defs(count: int = 10, **kwargs: Any) -> tg.Definitions:
    hourly = tg.ScheduleDefinition("hourly", cron_schedule="0 * * * *", job=SOURCE_JOB, default_status=RUNNING)
    return tg.Definitions(assets=[source, *_layered(count)], jobs=[SOURCE_JOB], schedules=[hourly], **kwargs)


class Harness:
    """A beat on a fake clock, and a worker's step code running what it publishes."""

    def __init__(self, defs: tg.Definitions, storage: Storage, tmp_path: Path) -> None:
        self.defs, self.storage = defs, storage
        self.clock = FakeClock(START)
        self.pending: list[StepRef] = []
        self.beat = Beat(defs, storage, self.pending.extend, clock=self.clock, holder="beat-a")
        self.executor = StepExecutor(
            defs=defs,
            storage=storage,
            publish=self.pending.extend,
            worker_name="w@test",
            heartbeat_seconds=5,
            default_io_manager=FilesystemIOManager(tmp_path / "io"),
        )

    def at(self, when: datetime) -> Any:
        self.clock.set(when)
        report = self.beat.tick()
        self.drain()
        return report

    def after(self, **delta: float) -> Any:
        return self.at(self.clock.now() + timedelta(**delta))

    def drain(self) -> None:
        """Run every published step (and the steps they release) to the end."""
        while self.pending:
            ref = self.pending.pop(0)
            self.executor.execute(ref.run_id, ref.step_key, ref.attempt)
        self.beat.launcher.tick()  # close/start what the steps left
        if self.pending:
            self.drain()


def _automation_runs(storage: Storage) -> list[Any]:
    found = [r for r in storage.list_runs(limit=10_000) if AUTOMATION_TAG in r.tags]
    return sorted(found, key=lambda r: r.created_at)


def test_an_eager_graph_runs_once_per_scheduled_update_in_one_run_in_order(
    storage: Storage, database_url: str, tmp_path: Path
) -> None:
    defs = _defs()
    assert DEFAULT_AUTOMATION_SENSOR in defs.sensors  # the default sensor covers the eager assets
    h = Harness(defs, storage, tmp_path)
    h.at(START)
    h.after(seconds=30)
    assert _automation_runs(storage) == []  # source never materialized: everything waits for it

    for hour in (1, 2):
        h.at(START.replace(hour=hour, second=0))  # the schedule's tick: source is materialized
        scheduled = [r for r in storage.list_runs(limit=100) if r.tags.get(SCHEDULE_TAG) == "hourly"]
        assert len(scheduled) == hour and all(r.status == RunStatus.SUCCESS for r in scheduled)
        for _ in range(3):  # three automation ticks: one request, then nothing new
            h.after(seconds=31)
        runs = _automation_runs(storage)
        assert len(runs) == hour, [r.asset_selection for r in runs]
        latest = runs[-1]
        assert latest.status == RunStatus.SUCCESS
        assert sorted(latest.asset_selection or ()) == sorted(f"a{i}" for i in range(10))
        order = [m.asset_key for m in storage.get_materializations() if m.run_id == latest.run_id]  # by id
        assert sorted(order) == sorted(f"a{i}" for i in range(10))
        position = {key: i for i, key in enumerate(order)}
        for asset in defs.graph.order:  # every dependency materialized before its dependents
            for up in defs.graph.upstream[asset]:
                if up.to_user_string() != "source":
                    assert position[up.to_user_string()] < position[asset.to_user_string()]

    ticks = storage.get_ticks(DEFAULT_AUTOMATION_SENSOR, limit=100)
    requesting = [t for t in ticks if t.run_ids]
    assert [len(t.run_ids) for t in requesting] == [1, 1]
    assert {t.run_ids[0] for t in requesting} == {r.run_id for r in _automation_runs(storage)}
    assert all(t.status == TickStatus.SKIPPED for t in ticks if not t.run_ids)

    # the evaluation that requested the latest run, as the CLI shows it
    history = storage.automation_evaluations("a9", requested_only=True)
    assert [row.run_ids for row in history] == [(r.run_id,) for r in reversed(_automation_runs(storage))]
    env = {"TIDEGATE_DATABASE_URL": database_url}
    runner = CliRunner()
    shown = runner.invoke(main, ["automation", "history", "a9", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    assert {tuple(r["run_ids"]) for r in json.loads(shown.output) if r["requested"]} == {
        (r.run_id,) for r in _automation_runs(storage)
    }
    first = min(t.id for t in requesting)
    explained = runner.invoke(main, ["automation", "explain", "a9", "--tick", str(first)], env=env)
    assert explained.exit_code == 0, explained.output
    assert f"tick {first}" in explained.output
    assert "requested: (unpartitioned)" in explained.output
    table = runner.invoke(main, ["automation", "history", "a9"], env=env)
    assert table.exit_code == 0 and "TICK" in table.output, table.output
    missing = runner.invoke(main, ["automation", "explain", "nowhere"], env=env)
    assert missing.exit_code == 2 and "asset 'nowhere': no automation evaluation stored" in missing.output


@contextmanager
def _counting(storage: Storage) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(storage.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(storage.engine, "before_cursor_execute", count)


def _tick_statements(count: int, storage: Storage) -> tuple[int, int]:
    """Statements of one automation evaluation of a graph of ``count`` eager assets: with
    nothing changed, and after ``source`` was updated."""
    defs = _defs(count)
    sensor = defs.sensors[DEFAULT_AUTOMATION_SENSOR]
    beat = Beat(defs, storage, lambda refs: None, clock=FakeClock(START), holder=f"count-{count}")
    ticks = beat.automation
    state = beat.storage.get_instigator(sensor.name)
    cursor = state.cursor if state else None
    first = ticks.evaluate(sensor, cursor, START)  # the first tick reads the history once
    first.install()
    cursor = first.outcome.cursor
    with _counting(storage) as idle:
        tick = ticks.evaluate(sensor, cursor, START + timedelta(seconds=30))
    tick.install()
    cursor = tick.outcome.cursor
    storage.report_materialization("source")
    with _counting(storage) as updated:
        tick = ticks.evaluate(sensor, cursor, START + timedelta(seconds=60))
    assert len(tick.outcome.runs) == 1  # the whole eager graph, in one run
    return len(idle), len(updated)


def test_a_ticks_queries_do_not_grow_with_the_graph(database_url: str) -> None:
    small = Storage.open(database_url, upgrade=True)
    try:
        counts_small = _tick_statements(10, small)
    finally:
        small.dispose()
    from tests.support import truncate_all

    if database_url.startswith("postgresql"):
        truncate_all(database_url)
    else:
        Path(database_url.removeprefix("sqlite:///")).unlink()
    large = Storage.open(database_url, upgrade=True)
    try:
        counts_large = _tick_statements(300, large)
    finally:
        large.dispose()
    assert counts_small == counts_large
    assert max(counts_large) <= 12, counts_large


def test_many_partitions_of_one_asset_become_a_backfill(storage: Storage, tmp_path: Path) -> None:
    days = tg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-03-01")

    missing = tg.AutomationCondition.missing() & ~tg.AutomationCondition.in_progress()

    @tg.asset(partitions_def=days, automation_condition=missing)
    def daily() -> int:
        return 1

    sensor = tg.AutomationConditionSensorDefinition(
        "daily_automation", target=tg.AssetSelection.assets("daily"), default_status=RUNNING, run_tags={"team": "a"}
    )

    @tg.asset(partitions_def=days, deps=["daily"])
    def report() -> int:  # no condition: never requested
        return 1

    defs = tg.Definitions(assets=[daily, report], sensors=[sensor])
    assert DEFAULT_AUTOMATION_SENSOR not in defs.sensors  # every asset with a condition is targeted
    h = Harness(defs, storage, tmp_path)
    h.beat.backfills.tick = lambda now=None: 0  # type: ignore[method-assign]  # keep the backfill requested
    h.at(START)
    h.after(seconds=30)
    backfills = storage.list_backfills()
    ticks = [t for t in storage.get_ticks("daily_automation", limit=10) if t.status == TickStatus.SUCCESS]
    assert len(backfills) == 1 and len(ticks) == 1
    assert len(backfills[0].partition_keys) == 60  # 2024-01-01 .. 2024-02-29
    assert backfills[0].tags["team"] == "a"
    rows = storage.automation_evaluations("daily", requested_only=True)
    assert [r.backfill_ids for r in rows] == [(backfills[0].backfill_id,)]
    h.after(seconds=30)  # the backfill is in progress: nothing is requested again
    assert len(storage.list_backfills()) == 1
    del h.beat.backfills.tick  # the backfill daemon runs it: one run per partition, of daily alone
    h.after(seconds=1)
    runs = [r for r in storage.list_runs(limit=1000) if r.tags.get(BACKFILL_TAG) == backfills[0].backfill_id]
    assert runs and all(r.tags["team"] == "a" for r in runs)
    assert {s.asset_key for r in runs for s in storage.get_steps(r.run_id)} == {"daily"}


def test_automation_sensor_options_are_validated() -> None:
    with pytest.raises(InvalidDefinitionError, match="automation condition sensor 'x'"):
        tg.AutomationConditionSensorDefinition("x", target=tg.AssetSelection.all(), run_tags={"k": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidDefinitionError, match="minimum_interval_seconds"):
        tg.AutomationConditionSensorDefinition("x", target=tg.AssetSelection.all(), minimum_interval_seconds=0)


def test_evaluations_past_the_retention_are_pruned_except_each_assets_newest(storage: Storage) -> None:
    from tidegate.storage.automation import EvaluationWrite

    day = timedelta(days=1)
    with storage.engine.begin() as conn:
        for tick_id, age in ((1, 40), (2, 35), (3, 1)):
            writes = [EvaluationWrite("old", 0, {"n": tick_id})]
            if tick_id < 3:
                writes.append(EvaluationWrite("quiet", 0, {"n": tick_id}))
            storage.insert_automation_evaluations_in(
                conn,
                sensor="s",
                tick_id=tick_id,
                evaluated_at=START - age * day,
                writes=writes,
                run_ids=[],
                backfill_ids=[],
            )
    assert storage.prune_automation_evaluations(before=START - 30 * day) == 3
    assert [r.tick_id for r in storage.automation_evaluations("old")] == [3]
    assert [r.tick_id for r in storage.automation_evaluations("quiet")] == [2]  # its newest stays


def test_the_beat_prunes_with_the_configured_retention(storage: Storage, tmp_path: Path) -> None:
    from tidegate.config import Settings
    from tidegate.storage.automation import EvaluationWrite

    config = Settings.from_dict({"beat": {"automation_evaluation_retention_days": 2}})
    assert config.beat.automation_evaluation_retention_days == 2
    h = Harness(_defs(2), storage, tmp_path)
    h.beat = Beat(h.defs, storage, h.pending.extend, clock=h.clock, holder="beat-a", config=config)
    h.at(START)
    h.after(seconds=30)
    assert storage.automation_evaluations("a0")
    with storage.engine.begin() as conn:
        storage.insert_automation_evaluations_in(
            conn,
            sensor="other",
            tick_id=0,
            evaluated_at=START - timedelta(days=3),
            writes=[EvaluationWrite("a0", 0, {}), EvaluationWrite("a0", 0, {})],
            run_ids=[],
            backfill_ids=[],
        )
    h.beat._last_purge = None
    h.after(hours=2)
    assert [r.sensor for r in storage.automation_evaluations("a0", limit=100)].count("other") == 1


def test_an_unpartitioned_selection_plans_beside_partitioned_assets() -> None:
    days = tg.DailyPartitionsDefinition(start_date="2024-01-01")

    @tg.asset(partitions_def=days)
    def daily() -> int:
        return 1

    @tg.asset(automation_condition=EAGER)
    def plain() -> int:
        return 1

    defs = tg.Definitions(assets=[daily, plain])
    plan = defs.plan(IMPLICIT_ASSET_JOB, tg.AssetSelection.assets("plain"))  # an automation run of plain
    assert [s.asset_key for s in plan.steps] == ["plain"]
    with pytest.raises(PartitionKeyError, match="give a partition key"):
        defs.plan(IMPLICIT_ASSET_JOB, tg.AssetSelection.assets("daily"))  # daily still needs its key


def test_an_unchanged_cursor_is_not_written_again(storage: Storage) -> None:
    """A tick that evaluates nothing and sees no new event leaves the cursor as it was, so the
    commit does not store it again; the next tick that evaluates something writes it, and a
    beat reading it back starts from the same state."""
    defs = _defs(5)
    sensor = defs.sensors[DEFAULT_AUTOMATION_SENSOR]
    beat = Beat(defs, storage, lambda refs: None, clock=FakeClock(START), holder="unchanged")
    when = START
    cursors = []
    for _ in range(4):
        tick, _ = commit_tick(storage, beat.automation, sensor, when)
        cursors.append((tick.outcome.cursor_set, storage.get_instigator(sensor.name).cursor))  # type: ignore[union-attr]
        when += timedelta(seconds=30)
    (first_set, first), (_, second), (third_set, third), (fourth_set, fourth) = cursors
    assert first_set and first is not None
    assert third_set is False and fourth_set is False  # settled: nothing evaluated, no event
    assert second == third == fourth
    storage.report_materialization("source")
    fresh = Beat(defs, storage, lambda refs: None, clock=FakeClock(when), holder="unchanged-2").automation
    state = storage.get_instigator(sensor.name)
    assert state is not None
    tick = fresh.evaluate(sensor, state.cursor, when)  # a new beat: reads the stored cursor
    assert tick.outcome.cursor_set and len(tick.outcome.runs) == 1


def test_the_cursor_is_stored_per_asset(storage: Storage) -> None:
    """The instigator row keeps a small head; each asset's state is a row written only when
    the asset was evaluated; a new beat resumes from the rows; a cursor of the earlier format
    (the assets inline) is read and moved to rows; a head older than its rows is refused;
    a reset cursor starts over and replaces the rows."""
    from tidegate.definitions.automation_records import AutomationCursor
    from tidegate.errors import InstigatorEvaluationError
    from tidegate.storage.schema import automation_cursor_entries

    def rows() -> dict[str, int]:
        with storage.engine.connect() as conn:
            t = automation_cursor_entries
            return dict(conn.execute(select(t.c.asset_key, t.c.seq).where(t.c.sensor == sensor.name)).all())

    defs = _defs(5)
    sensor = defs.sensors[DEFAULT_AUTOMATION_SENSOR]
    ticks = Beat(defs, storage, lambda refs: None, clock=FakeClock(START), holder="rows").automation
    when = START
    commit_tick(storage, ticks, sensor, when)
    head = storage.get_instigator(sensor.name).cursor  # type: ignore[union-attr]
    assert head is not None and '"assets"' not in head and '"seq":1' in head
    assert rows() == {f"a{i}": 1 for i in range(5)}
    for _ in range(3):  # settle
        when += timedelta(seconds=30)
        commit_tick(storage, ticks, sensor, when)
    settled = rows()
    storage.report_materialization("source")
    when += timedelta(seconds=30)
    tick, _ = commit_tick(storage, ticks, sensor, when)
    assert len(tick.outcome.runs) == 1
    moved = {k for k, v in rows().items() if v != settled[k]}
    assert moved and len(moved) == 5  # the eager chain evaluated: its rows, and only those, rewritten
    # a new beat resumes from the rows: the requested run is not requested again
    when += timedelta(seconds=30)
    again = Beat(defs, storage, lambda refs: None, clock=FakeClock(when), holder="rows-2").automation
    assert commit_tick(storage, again, sensor, when)[0].outcome.runs == []
    # a head older than its rows (an operator put back an old cursor) is refused
    state = storage.get_instigator(sensor.name)
    assert state is not None and state.cursor is not None
    storage.set_cursor(sensor.name, "sensor", head)
    with pytest.raises(InstigatorEvaluationError, match="older than the per-asset state"):
        Beat(defs, storage, lambda refs: None, clock=FakeClock(when), holder="rows-3").automation.evaluate(
            sensor, head, when + timedelta(seconds=30)
        )
    # a cursor of the earlier format: its assets inline, read as is, then moved to rows
    materialization, event_id, _ = state.cursor.split(":", 2)
    inline = AutomationCursor(0.0, again._parsed[sensor.name][1].assets, "")
    storage.set_cursor(sensor.name, "sensor", f"{materialization}:{event_id}:{inline.to_json()}")
    when += timedelta(seconds=60)
    older = Beat(defs, storage, lambda refs: None, clock=FakeClock(when), holder="rows-4").automation
    tick, _ = commit_tick(storage, older, sensor, when)
    assert tick.outcome.runs == [] and set(rows().values()) == {1}  # every row rewritten, sequence 1
    # a reset starts over: first evaluation, every row replaced
    storage.set_cursor(sensor.name, "sensor", None)
    when += timedelta(seconds=30)
    commit_tick(storage, older, sensor, when)
    assert set(rows()) == {f"a{i}" for i in range(5)} and set(rows().values()) == {1}


def test_partition_keys_read_from_the_log_are_the_definitions_own_strings(storage: Storage) -> None:
    """The state a tick keeps holds each materialized partition as the string object its
    partitions definition lists, whether read from the history (a beat's first tick) or from
    the events after the cursor: the evaluator's ``missing`` then compares a thousand keys by
    identity rather than by contents (a cache miss each, ~0.1 s of the bench's 1% tick)."""
    days = tg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-03-01")

    @tg.asset(partitions_def=days, automation_condition=EAGER)
    def daily() -> int:
        return 1

    defs = tg.Definitions(assets=[daily])
    sensor = defs.sensors[DEFAULT_AUTOMATION_SENSOR]
    listed = {k: k for k in days.get_partition_keys(START)}
    for key in ("2024-01-01", "2024-01-02"):
        storage.report_materialization("daily", partition_key=key)
    ticks = Beat(defs, storage, lambda refs: None, clock=FakeClock(START), holder="interned").automation
    commit_tick(storage, ticks, sensor, START)  # the history
    storage.report_materialization("daily", partition_key="2024-01-03")
    commit_tick(storage, ticks, sensor, START + timedelta(seconds=30))  # an event after the cursor
    materialized = ticks._state[sensor.name].materialized[tg.AssetKey("daily")]
    assert materialized == {"2024-01-01", "2024-01-02", "2024-01-03"}
    assert all(p is listed[p] for p in materialized)  # type: ignore[index]


def test_rewritten_cursor_entries_stay_on_their_pages(pg_url: str) -> None:
    """On PostgreSQL the cursor entries' pages keep room (fillfactor 40, migration 0013): a
    tick rewriting a thousand entries updates them heap-only, no new index entries (full
    pages sent nearly every new version elsewhere, through the index too). Downgraded, the
    setting is gone; upgraded again, back."""
    from alembic import command
    from sqlalchemy import text

    from tests.support import truncate_all
    from tidegate.storage import migrate
    from tidegate.storage.automation import CursorEntriesWrite

    truncate_all(pg_url)
    storage = Storage.open(pg_url)
    try:
        entry = json.dumps({"hash": "0" * 32, "time": 1.5e9, "requested": [], "nodes": {}, "stable": True})
        entries = {f"asset_{i:04d}": entry for i in range(1000)}
        with storage.engine.begin() as conn:
            storage.write_automation_cursor_in(conn, "pages", CursorEntriesWrite(1, entries))
        with storage.engine.begin() as conn:  # the next tick: every entry rewritten
            storage.write_automation_cursor_in(conn, "pages", CursorEntriesWrite(2, entries))
            updated, heap_only = conn.execute(  # this transaction's own counts (not yet reported)
                text(
                    "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                    "WHERE relname = 'automation_cursor_entries'"
                )
            ).one()
        assert updated == 1000 and heap_only >= 990

        def options() -> list[str]:
            with storage.engine.connect() as conn:
                found = conn.execute(
                    text("SELECT reloptions FROM pg_class WHERE relname = 'automation_cursor_entries'")
                ).scalar()
            return list(found or [])

        assert options() == ["fillfactor=40"]
        config = migrate._config()
        with storage.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0012")
        assert options() == []
        migrate.upgrade(storage.engine)
        assert options() == ["fillfactor=40"]
    finally:
        storage.dispose()


def test_records_name_their_condition_template_stored_once(storage: Storage) -> None:
    """A stored record names its condition's template by digest (the template, 0.74 of an
    eager() record's 1.3 KB, is one row of automation_templates, written by the first tick that
    needs it); reading gives the record with its template inline, as before; a record of the
    earlier format reads as it is; a downgrade puts the templates back into the records."""
    from alembic import command

    from tidegate.definitions.automation_records import EvaluationRecord
    from tidegate.storage import migrate
    from tidegate.storage.automation import EvaluationWrite
    from tidegate.storage.schema import automation_evaluations, automation_templates

    def stored() -> tuple[list[dict[str, Any]], dict[str, str]]:
        with storage.engine.connect() as conn:
            records = list(conn.execute(select(automation_evaluations.c.record)).scalars())
            templates = dict(conn.execute(select(automation_templates.c.digest, automation_templates.c.template)).all())
        return [r if isinstance(r, dict) else json.loads(r) for r in records], templates

    defs = _defs(5)
    sensor = defs.sensors[DEFAULT_AUTOMATION_SENSOR]
    ticks = Beat(defs, storage, lambda refs: None, clock=FakeClock(START), holder="templates").automation
    tick, _ = commit_tick(storage, ticks, sensor, START)
    digest = EAGER.template_digest()
    assert tick.outcome.automation is not None and tick.outcome.automation.templates == {digest: EAGER.template()}
    records, templates = stored()
    assert len(records) == 5 and templates == {digest: EAGER.template()}
    assert all(r["v"] == 3 and r["template"] == digest and "condition" not in r for r in records)
    (row,) = storage.automation_evaluations("a2", limit=1)
    raw = next(r for r in records if r["asset_key"] == "a2")
    inline = {**{k: v for k, v in raw.items() if k != "template"}, "v": 2, "condition": json.loads(EAGER.template())}
    assert row.record == inline
    assert list(row.record) == [
        "v",
        "asset_key",
        "evaluation_time",
        "requested",
        "condition",
        "nodes",
    ]  # to_json's order
    assert "eager" in EvaluationRecord.from_dict(row.record).explain_lines()[0]  # it renders
    # a later tick with records: the template is stored already
    storage.report_materialization("source")
    tick, _ = commit_tick(storage, ticks, sensor, START + timedelta(seconds=30))
    assert tick.outcome.runs and tick.outcome.automation is not None and tick.outcome.automation.templates == {}
    assert len(stored()[1]) == 1
    # a record of the earlier format (the template inline) reads as it is
    with storage.engine.begin() as conn:
        storage.insert_automation_evaluations_in(
            conn,
            sensor=sensor.name,
            tick_id=10**6,
            evaluated_at=START,
            writes=[EvaluationWrite("a2", 0, json.dumps(row.record))],
            run_ids=[],
            backfill_ids=[],
        )
    assert storage.automation_evaluations("a2", limit=1)[0].record == row.record
    # downgraded, every record holds its template again (what the earlier code reads)
    config = migrate._config()
    with storage.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0011")
    with storage.engine.connect() as conn:
        records = [
            r if isinstance(r, dict) else json.loads(r)
            for r in conn.execute(select(automation_evaluations.c.record)).scalars()
        ]
    assert len(records) == 11 and all(r["v"] == 2 and r["condition"] == json.loads(EAGER.template()) for r in records)
    assert all("template" not in r for r in records)
    migrate.upgrade(storage.engine)


def test_the_beat_commits_an_automation_tick_with_the_collector_paused(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The beat's sensor thread keeps the cyclic garbage collector off from the evaluation
    through the commit (the tick's writes are freed before any collection scans them), and on
    again after; another sensor's commit runs with it on."""
    import gc

    seen: list[tuple[str, bool]] = []
    commit = storage.commit_tick

    def recording(name: str, *args: Any, **kwargs: Any) -> Any:
        seen.append((name, gc.isenabled()))
        return commit(name, *args, **kwargs)

    monkeypatch.setattr(storage, "commit_tick", recording)
    assert gc.isenabled()
    h = Harness(_defs(3), storage, tmp_path)
    h.at(START)
    assert (DEFAULT_AUTOMATION_SENSOR, False) in seen and gc.isenabled()
    assert all(enabled for name, enabled in seen if name != DEFAULT_AUTOMATION_SENSOR)  # the schedule's


def test_the_collector_pause_lasts_until_the_last_holder_leaves() -> None:
    """Sensor evaluations overlap in threads: the collector is on again only when the last
    pause ends, and only if it was on before the first."""
    import gc
    import threading

    from tidegate.scheduler.automation import collector_paused

    assert gc.isenabled()
    entered, leave = threading.Event(), threading.Event()

    def other() -> None:
        with collector_paused():
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    with collector_paused():
        thread.start()
        entered.wait(10)
    assert not gc.isenabled()  # the other thread still holds it
    leave.set()
    thread.join(10)
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()
