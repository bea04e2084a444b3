"""What an asset returns or yields, read as Dagster reads it, in-process (``tidegate.materialize``)
with the in-memory and the filesystem IO manager. The same on real workers: tests/test_workers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tidegate as tg
from tidegate.errors import RunFailedError
from tidegate.names import PARTITION_RANGE_END_TAG, PARTITION_RANGE_START_TAG, StepStatus


@pytest.fixture(params=["memory", "filesystem"])
def resources(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "memory":
        return {}  # materialize's default: tg.InMemoryIOManager
    return {"io_manager": tg.FilesystemIOManager(tmp_path / "io")}


def metadata_of(result: tg.ExecuteInProcessResult, key: str) -> list[dict[str, Any]]:
    return [dict(m.metadata) for m in result.materializations if m.asset_key == key]


class TestNone:
    def test_an_asset_returning_none_feeds_none_downstream(self, resources: dict[str, Any]) -> None:
        seen: list[object] = []

        @tg.asset
        def cleanup():
            return None

        @tg.asset
        def after_cleanup(cleanup):
            seen.append(cleanup)
            return "done"

        result = tg.materialize([cleanup, after_cleanup], resources=resources)
        assert result.success
        assert seen == [None]
        assert result.asset_value("cleanup") is None
        # A stored None gets no "path" metadata (Dagster omits it too): nothing to look at.
        assert metadata_of(result, "cleanup") == [{}]

    def test_an_implicit_none_is_stored_too(self, resources: dict[str, Any]) -> None:
        @tg.asset
        def side_effect_only(context: tg.AssetExecutionContext):
            context.log.info("wrote elsewhere")

        @tg.asset
        def downstream(side_effect_only: object) -> bool:
            return side_effect_only is None

        result = tg.materialize([side_effect_only, downstream], resources=resources)
        assert result.asset_value("downstream") is True

    def test_an_asset_annotated_none_stores_nothing(self, tmp_path: Path) -> None:
        io = tg.FilesystemIOManager(tmp_path / "io")

        @tg.asset
        def writes_its_own_table() -> None:
            return None

        result = tg.materialize([writes_its_own_table], resources={"io_manager": io})
        assert result.success
        assert not io.path_for(tg.AssetKey("writes_its_own_table")).exists()
        assert metadata_of(result, "writes_its_own_table") == [{}]

    def test_loading_an_asset_annotated_none_says_why_it_fails(self, resources: dict[str, Any]) -> None:
        """As in Dagster, ``-> None`` opts out of the IO manager, so a parameter cannot load it."""

        @tg.asset
        def table() -> None:
            pass

        @tg.asset
        def reader(table: object) -> int:
            return 1

        result = tg.materialize([table, reader], resources=resources, raise_on_error=False)
        step = result.step("reader")
        assert step.status == StepStatus.FAILED
        assert "parameter 'table' loads asset 'table', which is annotated '-> None'" in step.error
        assert "deps=[...]" in step.error

    def test_a_partition_range_returning_none_stores_none_for_each(self) -> None:
        days = tg.DailyPartitionsDefinition(start_date="2024-01-01")

        @tg.asset(partitions_def=days, backfill_policy=tg.BackfillPolicy.single_run())
        def daily(context: tg.AssetExecutionContext):
            return None

        io = tg.InMemoryIOManager()
        one_run = {PARTITION_RANGE_START_TAG: "2024-01-01", PARTITION_RANGE_END_TAG: "2024-01-03"}
        result = tg.materialize([daily], resources={"io_manager": io}, tags=one_run)
        assert [m.partition_key for m in result.materializations] == ["2024-01-01", "2024-01-02", "2024-01-03"]
        assert io.values == {(tg.AssetKey("daily"), f"2024-01-0{d}"): None for d in (1, 2, 3)}


class TestGenerators:
    def test_a_generator_yields_its_output_and_other_events(self, resources: dict[str, Any]) -> None:
        @tg.asset
        def orders(context: tg.AssetExecutionContext) -> Iterator[Any]:
            yield tg.AssetMaterialization(asset_key="orders_table_copy", metadata={"rows": 3})
            yield tg.AssetObservation(asset_key="orders", metadata={"source_rows": 5})
            context.add_output_metadata({"checked": True})
            yield tg.Output([1, 2, 3], metadata={"count": 3})

        @tg.asset
        def order_total(orders: list[int]) -> int:
            return sum(orders)

        result = tg.materialize([orders, order_total], resources=resources)
        assert result.asset_value("order_total") == 6
        (own,) = metadata_of(result, "orders")
        assert own["count"] == 3 and own["checked"] is True
        assert metadata_of(result, "orders_table_copy") == [{"rows": 3}]
        observed = [e for e in result.events if e.event_type == "ASSET_OBSERVATION"]
        assert [(e.message, e.data["metadata"]) for e in observed] == [("orders", {"source_rows": 5})]
        reported = [e for e in result.events if e.event_type == "ASSET_MATERIALIZATION"]
        assert {e.message for e in reported} == {"orders", "orders_table_copy", "order_total"}

    def test_a_generator_may_yield_a_materialize_result(self, resources: dict[str, Any]) -> None:
        @tg.asset
        def external() -> Iterator[Any]:
            yield tg.MaterializeResult(metadata={"rows": 10})

        result = tg.materialize([external], resources=resources)
        assert metadata_of(result, "external") == [{"rows": 10}]

    def test_an_output_may_be_returned(self, resources: dict[str, Any]) -> None:
        @tg.asset
        def numbers() -> tg.Output:
            return tg.Output([4, 5], metadata={"n": 2})

        @tg.asset
        def total(numbers: list[int]) -> int:
            return sum(numbers)

        result = tg.materialize([numbers, total], resources=resources)
        assert result.asset_value("total") == 9
        assert metadata_of(result, "numbers")[0]["n"] == 2

    def test_a_yielded_materialization_of_a_partition_sets_its_status(self) -> None:
        regions = tg.StaticPartitionsDefinition(["eu", "us"])

        @tg.asset(partitions_def=regions)
        def sales(context: tg.AssetExecutionContext) -> Iterator[Any]:
            yield tg.AssetMaterialization(asset_key="sales_mirror", partition=context.partition_key)
            yield tg.Output(1)

        result = tg.materialize([sales], partition_key="eu")
        mirror = [m for m in result.materializations if m.asset_key == "sales_mirror"]
        assert [(m.partition_key, m.run_id) for m in mirror] == [("eu", result.run_id)]

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ("nothing", "did not yield an Output or MaterializeResult for its output 'result'"),
            ("twice", "yielded its output 'result' more than once"),
            ("bare", "yielded a int (7); a generator asset yields Output(value)"),
            ("misnamed", "Output names output 'other', which does not exist"),
        ],
    )
    def test_a_generator_breaking_the_rules_fails_with_a_typed_error(self, body: str, message: str) -> None:
        @tg.asset(name=f"bad_{body}")
        def bad() -> Iterator[Any]:
            yield tg.AssetObservation(asset_key="x")
            if body == "twice":
                yield tg.Output(1)
                yield tg.Output(2)
            elif body == "bare":
                yield 7
            elif body == "misnamed":
                yield tg.Output(1, output_name="other")

        result = tg.materialize([bad], raise_on_error=False)
        step = result.step(f"bad_{body}")
        assert step.status == StepStatus.FAILED
        assert f"tidegate.errors.AssetOutputError: asset 'bad_{body}': {message}" in step.error
        assert result.materializations == []
        with pytest.raises(RunFailedError, match="AssetOutputError"):
            tg.materialize([bad])

    def test_an_asset_event_checks_its_key_when_built(self) -> None:
        with pytest.raises(tg.AssetOutputError, match=r"AssetMaterialization: invalid asset_key '1bad'"):
            tg.AssetMaterialization(asset_key="1bad")
