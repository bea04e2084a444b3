"""Dagster definition APIs a ported project uses: @definitions, Definitions.merge, target="*"
before any asset exists, unique instigator names, asset(op_tags/kinds/owners/code_version)
and MetadataValue."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest

import tidegate as tg
from tests.support import TIDEGATE
from tidegate.definitions.loading import CodeLocation
from tidegate.definitions.metadata import load_metadata
from tidegate.names import RunStatus
from tidegate.storage.api import Storage


def exact(text: str) -> str:
    return "^" + re.escape(text)


@tg.asset
def orders() -> int:
    return 1


@tg.asset
def refunds() -> int:
    return 2


orders_job = tg.define_asset_job("orders_job", selection=[orders])


@pytest.fixture
def code_dir(tmp_path: Path) -> Iterator[Path]:
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


class TestInstigatorNames:
    def test_a_schedule_and_a_sensor_may_not_share_a_name(self) -> None:
        schedule = tg.ScheduleDefinition(name="orders_refresh", cron_schedule="0 * * * *", target=orders_job)

        @tg.sensor(target=orders_job, name="orders_refresh")
        def watcher(context: tg.SensorEvaluationContext) -> None:
            return None

        with pytest.raises(tg.DuplicateDefinitionError) as info:
            tg.Definitions(assets=[orders], schedules=[schedule], sensors=[watcher])
        assert str(info.value).startswith(
            "schedule 'orders_refresh' and sensor 'orders_refresh': one name for two instigators"
        )


class TestDefinitionsDecorator:
    SOURCE = """
        import tidegate as tg

        calls = []

        @tg.asset
        def numbers():
            return [1, 2, 3]

        @tg.definitions
        def defs():
            calls.append(1)
            return tg.Definitions(assets=[numbers])
        """

    def test_the_loader_calls_the_decorated_function(self, code_dir: Path) -> None:
        path = code_dir / "decorated.py"
        path.write_text(textwrap.dedent(self.SOURCE))
        defs = CodeLocation(file=str(path)).load()
        assert isinstance(defs, tg.Definitions) and [str(k) for k in defs.assets] == ["numbers"]
        assert sys.modules["decorated"].calls == [1]
        assert [str(k) for k in CodeLocation.parse(f"{path}:defs").load().assets] == ["numbers"]

    def test_a_module_with_a_definitions_object_too_must_name_one(self, code_dir: Path) -> None:
        path = code_dir / "both.py"
        path.write_text(textwrap.dedent(self.SOURCE).replace("def defs():", "def lazy():") + "\nstatic = lazy()\n")
        with pytest.raises(tg.DefinitionsLoadError, match="several Definitions objects \\(lazy, static\\)"):
            CodeLocation(file=str(path)).load()

    def test_the_function_must_return_definitions(self, code_dir: Path) -> None:
        path = code_dir / "wrong.py"
        path.write_text("import tidegate as tg\n\n@tg.definitions\ndef defs():\n    return [1]\n")
        with pytest.raises(tg.InvalidDefinitionError, match=exact("@definitions 'defs': returned [1], not a")):
            CodeLocation(file=str(path)).load()

    def test_parameters_are_refused_when_decorating(self) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match=exact("@definitions 'defs': takes parameter 'context'")):

            @tg.definitions
            def defs(context: object) -> tg.Definitions:
                return tg.Definitions()


class TestMerge:
    def test_the_union_of_every_kind_of_definition(self) -> None:
        resource = tg.InMemoryIOManager()
        schedule = tg.ScheduleDefinition(name="hourly", cron_schedule="0 * * * *", target=orders_job)
        first = tg.Definitions(assets=[orders], jobs=[orders_job], schedules=[schedule], resources={"io": resource})
        second = tg.Definitions(assets=[refunds, tg.AssetSpec("raw")], resources={"io": resource})
        merged = tg.Definitions.merge(first, second)
        assert {str(k) for k in merged.assets} == {"orders", "refunds", "raw"}
        assert "orders_job" in merged.jobs and set(merged.schedules) == {"hourly"}
        assert merged.resources == {"io": resource}

    def test_the_same_object_twice_is_one_but_two_definitions_of_a_key_clash(self) -> None:
        shared = tg.Definitions(assets=[orders], jobs=[orders_job])
        merged = tg.Definitions.merge(shared, tg.Definitions(assets=[orders, refunds], jobs=[orders_job]))
        assert {str(k) for k in merged.assets} == {"orders", "refunds"}

        other_orders = tg.asset(name="orders")(lambda: 3)
        with pytest.raises(tg.DuplicateDefinitionError, match=exact("asset 'orders': defined twice")):
            tg.Definitions.merge(shared, tg.Definitions(assets=[other_orders]))
        with pytest.raises(tg.DuplicateDefinitionError, match=exact("job 'orders_job': defined twice")):
            tg.Definitions.merge(shared, tg.Definitions(jobs=[tg.define_asset_job("orders_job")]))

    def test_different_resources_under_one_key_clash(self) -> None:
        with pytest.raises(
            tg.DuplicateDefinitionError,
            match=exact("resource 'io': Definitions objects 0 and 1 give different resources"),
        ):
            tg.Definitions.merge(
                tg.Definitions(resources={"io": tg.InMemoryIOManager()}),
                tg.Definitions(resources={"io": tg.InMemoryIOManager()}),
            )


SCAFFOLD = """
import tidegate as tg

all_assets = tg.define_asset_job("all_assets", selection="*")
nightly = tg.ScheduleDefinition(name="nightly", cron_schedule="0 2 * * *", target="*")

defs = tg.Definitions(assets=[], jobs=[all_assets], schedules=[nightly])
"""


class TestStarBeforeAnyAsset:
    def test_a_scaffold_loads_and_plans_an_empty_run(self) -> None:
        job = tg.define_asset_job("all_assets", selection="*")
        schedule = tg.ScheduleDefinition(name="nightly", cron_schedule="0 2 * * *", target="*")
        defs = tg.Definitions(assets=[], jobs=[job], schedules=[schedule])
        assert defs.plan("all_assets").steps == ()
        assert defs.get_job("all_assets").asset_keys == ()
        # The schedule's tick plans an empty run of the ad-hoc asset job too.
        assert defs.plan_request(schedule.target, tg.RunRequest(), "schedule 'nightly'").steps == ()

    def test_a_selection_naming_something_still_must_match(self) -> None:
        with pytest.raises(tg.EmptySelectionError):
            tg.Definitions(jobs=[tg.define_asset_job("marketing", selection="group:marketing")])

    def test_launching_it_is_an_empty_successful_run(self, tmp_path: Path) -> None:
        project = tmp_path / "scaffold.py"
        project.write_text(textwrap.dedent(SCAFFOLD))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
        env.update(TIDEGATE_HOME=str(tmp_path / "home"), TIDEGATE_BROKER_URL="memory://localhost/")
        launched = subprocess.run(
            [TIDEGATE, "job", "launch", "all_assets", "-f", str(project), "--wait"],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            cwd=tmp_path,
        )
        assert launched.returncode == 0, launched.stdout + launched.stderr
        assert "0 step(s)" in launched.stdout
        storage = Storage.open(f"sqlite:///{tmp_path / 'home' / 'tidegate.db'}")
        try:
            [run] = storage.list_runs()
            assert run.status == RunStatus.SUCCESS and storage.get_steps(run.run_id) == []
        finally:
            storage.dispose()


class TestAssetAttributes:
    def test_op_tags_kinds_owners_and_code_version_are_kept(self) -> None:
        @tg.asset(
            op_tags={"dagster/concurrency_key": "warehouse", "limits": {"cpu": 2}},
            kinds={"python", "snowflake"},
            owners=["ana@example.com", "team:finance"],
            code_version="v2",
        )
        def revenue() -> int:
            return 1

        assert revenue.op_tags == {"dagster/concurrency_key": "warehouse", "limits": {"cpu": 2}}
        assert revenue.kinds == {"python", "snowflake"}
        assert revenue.owners == ("ana@example.com", "team:finance")
        assert revenue.code_version == "v2"
        assert tg.Definitions(assets=[revenue]).get_asset("revenue").owners == revenue.owners

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            ({"owners": ["ana"]}, "asset 'revenue': invalid owner 'ana' (an email address, or a team name"),
            ({"owners": ["team:"]}, "asset 'revenue': invalid owner 'team:'"),
            ({"owners": "ana@example.com"}, "asset 'revenue': owners must be a list of strings"),
            ({"kinds": "python"}, "asset 'revenue': kinds must be a set of strings"),
            ({"kinds": {"a", "b", "c", "d"}}, "asset 'revenue': at most 3 kinds, got 4"),
            ({"kinds": {1}}, "asset 'revenue': kinds must be non-empty strings, got 1"),
            ({"op_tags": {"x": object}}, "asset 'revenue': op_tags['x'] is not JSON-serializable"),
            ({"code_version": 2}, "asset 'revenue': code_version must be a string, got 2"),
        ],
    )
    def test_invalid_values_name_the_asset(self, arguments: dict[str, object], message: str) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match=exact(message)):
            tg.asset(name="revenue", **arguments)(lambda: 1)  # type: ignore[call-overload]


class TestMetadataValue:
    VALUES: ClassVar[dict[str, object]] = {
        "text": tg.MetadataValue.text("hello"),
        "rows": tg.MetadataValue.int(3),
        "ratio": tg.MetadataValue.float(0.5),
        "ok": tg.MetadataValue.bool(True),
        "schema": tg.MetadataValue.json({"columns": ["id", "amount"]}),
        "notes": tg.MetadataValue.md("# Revenue"),
        "dashboard": tg.MetadataValue.url("https://example.com/d/1"),
        "file": tg.MetadataValue.path("/data/revenue.parquet"),
        "nothing": tg.MetadataValue.null(),
        "at": tg.MetadataValue.timestamp(datetime(2024, 1, 2, tzinfo=UTC)),
        "source": tg.MetadataValue.asset(tg.AssetKey(["sales", "orders"])),
        "plain": 7,
    }

    def test_typed_metadata_of_a_materialize_result_reads_back_typed(self) -> None:
        @tg.asset
        def revenue() -> tg.MaterializeResult:
            return tg.MaterializeResult(metadata=self.VALUES)

        result = tg.materialize([revenue])
        [stored] = [m for m in result.materializations if m.asset_key == "revenue"]
        assert stored.metadata["dashboard"] == {"__metadata__": "url", "value": "https://example.com/d/1"}
        assert stored.metadata["plain"] == 7
        [event] = [e for e in result.events if e.event_type == "ASSET_MATERIALIZATION"]
        assert event.data["metadata"] == stored.metadata  # the event log holds the same tagged JSON
        typed = load_metadata(stored.metadata)
        assert typed == self.VALUES
        assert isinstance(typed["dashboard"], tg.MetadataValue) and typed["dashboard"].type_name == "url"
        assert typed["at"].value == datetime(2024, 1, 2, tzinfo=UTC).timestamp()
        assert typed["source"].value == "sales/orders"

    def test_it_survives_the_database(self, storage: Storage) -> None:
        record = storage.report_materialization("revenue", metadata=self.VALUES)
        [again] = storage.get_materializations("revenue")
        assert again.id == record.id
        assert load_metadata(again.metadata) == self.VALUES

    def test_constructors_check_their_argument(self) -> None:
        with pytest.raises(tg.InvalidDefinitionError, match=exact("MetadataValue.int: expected int, got '3'")):
            tg.MetadataValue.int("3")  # type: ignore[arg-type]
        with pytest.raises(tg.InvalidDefinitionError, match="has no timezone"):
            tg.MetadataValue.timestamp(datetime(2024, 1, 2))
        with pytest.raises(tg.InvalidDefinitionError, match=exact("MetadataValue.json: expected a list or a dict")):
            tg.MetadataValue.json("{}")  # type: ignore[arg-type]
