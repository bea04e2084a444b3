"""External assets: AssetSpec and undefined deps= keys, as a Dagster user writes them.

They are in the graph and can be depended on, loaded and reported (CLI and storage), never
materialized by tidegate.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

import tidegate as tg
from tests.support import TIDEGATE
from tidegate.definitions.job import IMPLICIT_ASSET_JOB
from tidegate.names import PartitionStatus
from tidegate.storage.api import Storage


def exact(text: str) -> str:
    return "^" + re.escape(text)


@tg.asset(deps=["raw_events"])
def sessions() -> int:
    return 1


@tg.asset(ins={"events": tg.AssetIn("raw_events")})
def event_count(events: list[int]) -> int:
    return len(events)


raw_events = tg.AssetSpec(
    "raw_events",
    description="Events the tracking service lands in the lake",
    group_name="tracking",
    owners=["data@example.com", "team:tracking"],
    kinds={"s3", "json"},
    tags={"tier": "bronze"},
    metadata={"bucket": "events"},
)


class TestDeclaring:
    def test_an_asset_spec_is_an_external_asset_in_the_graph(self) -> None:
        defs = tg.Definitions(assets=[raw_events, sessions, event_count])
        external = defs.get_asset("raw_events")
        assert external.is_external and not sessions.is_external
        assert external.group_name == "tracking" and external.owners == ("data@example.com", "team:tracking")
        assert external.kinds == {"s3", "json"} and external.description.startswith("Events")
        assert defs.graph.downstream[external.key] == {sessions.key, event_count.key}
        # The implicit job and "*" leave it out: only code assets are steps.
        assert [s.step_key for s in defs.plan(IMPLICIT_ASSET_JOB).steps] == ["event_count", "sessions"]

    def test_a_deps_key_nothing_defines_is_external_but_a_loaded_input_must_be_defined(self) -> None:
        defs = tg.Definitions(assets=[sessions])
        assert defs.get_asset("raw_events").is_external

        with pytest.raises(tg.UnknownDependencyError) as info:
            tg.Definitions(assets=[event_count])  # as Dagster: an input is loaded, so it must be defined
        message = str(info.value)
        assert message.startswith("asset 'event_count': unknown dependency 'raw_events' (no asset or resource")
        assert "declare AssetSpec('raw_events')" in message and "deps=['raw_events']" in message

    def test_a_typo_in_an_input_names_the_close_asset(self) -> None:
        @tg.asset
        def orders() -> int:
            return 1

        @tg.asset
        def report(order: int) -> int:
            return order

        with pytest.raises(tg.UnknownDependencyError, match="did you mean 'orders'"):
            tg.Definitions(assets=[orders, report])

    def test_spec_arguments_are_validated(self) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match=exact("AssetSpec 'raw': invalid owner 'bob'")):
            tg.AssetSpec("raw", owners=["bob"])
        with pytest.raises(tg.InvalidDefinitionError, match=exact("AssetSpec 'raw': at most 3 kinds")):
            tg.AssetSpec("raw", kinds={"a", "b", "c", "d"})
        with pytest.raises(tg.InvalidDefinitionError, match=exact("AssetSpec 'raw': deps names 'up' twice")):
            tg.AssetSpec("raw", deps=["up", tg.AssetKey("up")])
        with pytest.raises(tg.DuplicateDefinitionError, match=exact("asset 'raw_events': defined twice")):
            tg.Definitions(assets=[raw_events, tg.asset(name="raw_events")(lambda: 1)])

    def test_an_external_asset_chain(self) -> None:
        lake = tg.AssetSpec("lake_table", deps=["source_db"])
        defs = tg.Definitions(assets=[lake, tg.asset(name="report", deps=[lake])(lambda: None)])
        assert defs.get_asset("source_db").is_external  # a spec's undefined dep is external too
        assert defs.graph.upstream[tg.AssetKey("lake_table")] == {tg.AssetKey("source_db")}


class TestRefusingToMaterialize:
    def test_a_job_naming_an_external_asset(self) -> None:
        job = tg.define_asset_job("load_events", selection=["raw_events", "sessions"])
        with pytest.raises(tg.ExternalAssetError) as info:
            tg.Definitions(assets=[raw_events, sessions], jobs=[job])
        assert str(info.value).startswith("job 'load_events': asset 'raw_events' is external")
        assert "tidegate assets report raw_events" in str(info.value)

    def test_groups_traversals_and_star_leave_external_assets_out(self) -> None:
        defs = tg.Definitions(
            assets=[raw_events, sessions, event_count],
            jobs=[
                tg.define_asset_job("downstream", selection="raw_events+"),
                tg.define_asset_job("everything", selection=tg.AssetSelection.all()),
            ],
        )
        assert set(defs.get_job("downstream").asset_keys) == {sessions.key, event_count.key}
        assert set(defs.get_job("everything").asset_keys) == {sessions.key, event_count.key}
        with pytest.raises(tg.EmptySelectionError):
            tg.Definitions(assets=[raw_events], jobs=[tg.define_asset_job("tracking", selection="group:tracking")])

    def test_an_ad_hoc_selection_and_a_sensor_target(self) -> None:
        defs = tg.Definitions(assets=[raw_events, sessions])
        with pytest.raises(tg.ExternalAssetError, match=exact("selection: asset 'raw_events' is external")):
            defs.plan(IMPLICIT_ASSET_JOB, ["raw_events"])
        with pytest.raises(tg.ExternalAssetError, match=exact("selection: asset 'raw_events' is external")):
            tg.materialize([raw_events, sessions], selection="raw_events")
        watcher = tg.sensor(target=[raw_events], name="watch")(lambda context: None)
        with pytest.raises(tg.ExternalAssetError, match=exact("sensor 'watch': asset 'raw_events' is external")):
            tg.Definitions(assets=[raw_events, sessions], sensors=[watcher])

    def test_calling_it_says_why(self) -> None:
        defs = tg.Definitions(assets=[raw_events])
        with pytest.raises(tg.ExternalAssetError, match="external, so tidegate does not materialize it"):
            defs.get_asset("raw_events")()


class TestLoading:
    def test_a_downstream_asset_loads_it_through_its_io_manager(self, tmp_path: Path) -> None:
        io = tg.FilesystemIOManager(tmp_path)
        io.path_for(tg.AssetKey("raw_events")).write_bytes(pickle.dumps([3, 1, 4]))  # the other system
        result = tg.materialize([raw_events, event_count], resources={"io_manager": io})
        assert result.success and result.asset_value("event_count") == 3

    def test_with_io_manager_key_picks_the_io_manager(self, tmp_path: Path) -> None:
        lake = tg.FilesystemIOManager(tmp_path / "lake")
        lake.path_for(tg.AssetKey("raw_events")).parent.mkdir(parents=True)
        lake.path_for(tg.AssetKey("raw_events")).write_bytes(pickle.dumps([1, 2]))
        spec = raw_events.with_io_manager_key("lake")
        with pytest.raises(tg.MissingResourceError, match="missing resource 'lake'"):
            tg.Definitions(assets=[spec, event_count])
        result = tg.materialize([spec, event_count], resources={"lake": lake})
        assert result.asset_value("event_count") == 2

    def test_nothing_stored_fails_the_step_with_a_clear_message(self, tmp_path: Path) -> None:
        result = tg.materialize(
            [raw_events, event_count], resources={"io_manager": tg.FilesystemIOManager(tmp_path)}, raise_on_error=False
        )
        assert not result.success
        error = next(s.error for s in result.steps if s.step_key == "event_count")
        assert "TidegateError: asset 'event_count': input 'events' loads external asset 'raw_events'" in error
        assert "the system producing 'raw_events' must store it there" in error


class TestReporting:
    def test_a_report_is_a_materialization_and_an_event(self, storage: Storage) -> None:
        cursor = max((m.id for m in storage.get_materializations()), default=0)
        record = storage.report_materialization("raw_events", metadata={"rows": 10})
        assert (record.asset_key, record.run_id, record.partition_key) == ("raw_events", "", None)
        assert record.metadata == {"rows": 10}
        assert [m.id for m in storage.get_materializations(after_id=cursor)] == [record.id]
        assert storage.latest_materializations()["raw_events"].id == record.id
        event = [e for e in storage.get_events("") if e.event_type == "ASSET_MATERIALIZATION"][-1]
        assert event.message == "raw_events"
        assert event.data == {"metadata": {"rows": 10}, "partition_key": None, "reported": True}

    def test_a_partition_report_marks_the_partition(self, storage: Storage) -> None:
        storage.report_materialization("daily_events", partition_key="2024-01-02")
        assert storage.partitions_with_status("daily_events", PartitionStatus.MATERIALIZED) == {"2024-01-02"}


PROJECT = """
import tidegate as tg

raw_events = tg.AssetSpec("raw_events", group_name="tracking")
daily_events = tg.AssetSpec("daily_events", partitions_def=tg.DailyPartitionsDefinition(start_date="2024-01-01"))

@tg.asset(deps=[raw_events])
def sessions():
    return 1

defs = tg.Definitions(assets=[raw_events, daily_events, sessions])
"""


class TestCommandLine:
    def _run(self, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
        env.update(TIDEGATE_HOME=str(tmp_path / "home"), TIDEGATE_BROKER_URL="memory://localhost/")
        return subprocess.run([TIDEGATE, *args], env=env, capture_output=True, text=True, timeout=90, cwd=tmp_path)

    def test_report_then_list_and_refuse_to_materialize(self, tmp_path: Path) -> None:
        project = tmp_path / "tracking.py"
        project.write_text(textwrap.dedent(PROJECT))
        where = ("-f", str(project))

        listed = self._run(tmp_path, "assets", "list", *where)
        assert listed.returncode == 0, listed.stderr
        assert re.search(r"^raw_events\s+tracking\s+never", listed.stdout, re.M), listed.stdout

        reported = self._run(tmp_path, "assets", "report", "raw_events", "--metadata", "rows=10", *where)
        assert reported.returncode == 0, reported.stderr
        assert reported.stdout.startswith("recorded materialization ") and "of raw_events" in reported.stdout
        listed = self._run(tmp_path, "assets", "list", *where)
        line = next(x for x in listed.stdout.splitlines() if x.startswith("raw_events"))
        assert "never" not in line

        partition = self._run(tmp_path, "assets", "report", "daily_events", "--partition", "2024-01-02", *where)
        assert partition.returncode == 0 and "of daily_events[2024-01-02]" in partition.stdout
        bad = self._run(tmp_path, "assets", "report", "daily_events", "--partition", "1999-01-01", *where)
        assert bad.returncode == 2 and "unknown partition key '1999-01-01'" in bad.stderr
        unknown = self._run(tmp_path, "assets", "report", "raw_event", *where)
        assert unknown.returncode == 2 and "asset 'raw_event': not defined" in unknown.stderr

        refused = self._run(tmp_path, "materialize", "--select", "raw_events", *where)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "asset 'raw_events' is external" in refused.stderr

        storage = Storage.open(f"sqlite:///{tmp_path / 'home' / 'tidegate.db'}")
        try:
            reports = storage.get_materializations("raw_events")
            assert [(m.run_id, m.metadata) for m in reports] == [("", {"rows": "10"})]
            assert storage.list_runs() == []  # nothing was launched
        finally:
            storage.dispose()
