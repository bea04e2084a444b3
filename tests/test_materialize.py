"""``tidegate.materialize``: assets run in this process through the real step code and storage."""

import logging
import re
import time
from pathlib import Path

import pytest

import tidegate as tg
from tidegate.definitions.job import IMPLICIT_ASSET_JOB
from tidegate.errors import RunFailedError
from tidegate.names import RunStatus, StepStatus
from tidegate.storage.records import EventRecord


class Greeter(tg.ConfigurableResource):
    greeting: str


def statuses(result: tg.ExecuteInProcessResult) -> dict[str, str]:
    return {s.step_key: s.status for s in result.steps}


def events_of(result: tg.ExecuteInProcessResult, event_type: str, step_key: str | None = None) -> list[EventRecord]:
    return [e for e in result.events if e.event_type == event_type and (step_key is None or e.step_key == step_key)]


def materialization(result: tg.ExecuteInProcessResult, key: str) -> dict[str, object]:
    found = [m for m in result.materializations if m.asset_key == key]
    assert len(found) == 1, found
    return dict(found[0].metadata)


class TestValues:
    def test_values_flow_through_inputs(self) -> None:
        @tg.asset
        def numbers() -> list[int]:
            return [1, 2, 3]

        @tg.asset(key_prefix="stats")
        def total(numbers: list[int]) -> int:
            return sum(numbers)

        @tg.asset(ins={"the_total": tg.AssetIn("stats/total")})
        def report(numbers: list[int], the_total: int) -> str:
            return f"{len(numbers)} numbers, total {the_total}"

        result = tg.materialize([report, total, numbers])
        assert result.success
        assert result.run.status == RunStatus.SUCCESS
        assert result.run.job_name == IMPLICIT_ASSET_JOB
        assert result.asset_value("numbers") == [1, 2, 3]
        assert result.asset_value("stats/total") == 6
        assert result.asset_value(tg.AssetKey(["stats", "total"])) == 6
        assert result.asset_value(report) == "3 numbers, total 6"
        assert statuses(result) == {"numbers": "SUCCEEDED", "stats/total": "SUCCEEDED", "report": "SUCCEEDED"}
        assert [m.asset_key for m in result.get_asset_materialization_events()] == ["numbers", "stats/total", "report"]
        assert all(m.run_id == result.run_id for m in result.materializations)

    def test_deps_order_without_loading(self) -> None:
        order: list[str] = []

        @tg.asset
        def extract() -> None:
            order.append("extract")

        @tg.asset(deps=[extract])
        def load() -> None:
            order.append("load")

        result = tg.materialize([load, extract])
        assert result.success
        assert order == ["extract", "load"]

    def test_returning_none_stores_nothing(self) -> None:
        @tg.asset
        def side_effect() -> None:
            return None

        result = tg.materialize([side_effect])
        assert result.success
        assert [m.asset_key for m in result.materializations] == ["side_effect"]
        with pytest.raises(KeyError, match="asset 'side_effect' has no value in memory"):
            result.asset_value("side_effect")

    def test_selection_reads_upstream_from_the_io_manager(self) -> None:
        calls: list[str] = []

        @tg.asset
        def source() -> int:
            calls.append("source")
            return 20

        @tg.asset
        def doubled(source: int) -> int:
            calls.append("doubled")
            return source * 2

        io = tg.InMemoryIOManager()
        tg.materialize([source, doubled], resources={"io_manager": io})
        assert calls == ["source", "doubled"]
        result = tg.materialize([source, doubled], resources={"io_manager": io}, selection="doubled")
        assert calls == ["source", "doubled", "doubled"]
        assert [s.step_key for s in result.steps] == ["doubled"]
        assert result.run.asset_selection == ("doubled",)
        assert result.asset_value("doubled") == 40

    def test_custom_io_manager_key(self) -> None:
        @tg.asset(io_manager_key="side_io")
        def kept_aside() -> str:
            return "aside"

        @tg.asset
        def reader(kept_aside: str) -> str:
            return kept_aside.upper()

        side_io = tg.InMemoryIOManager()
        result = tg.materialize([kept_aside, reader], resources={"side_io": side_io})
        assert result.asset_value("reader") == "ASIDE"
        assert list(side_io.values.values()) == ["aside"]
        with pytest.raises(KeyError):
            result.asset_value("kept_aside")  # not in the default IO manager

    def test_filesystem_io_manager_records_the_path(self, tmp_path: Path) -> None:
        @tg.asset
        def stored() -> dict[str, int]:
            return {"rows": 3}

        result = tg.materialize([stored], resources={"io_manager": tg.FilesystemIOManager(tmp_path)})
        assert materialization(result, "stored") == {"path": str(tmp_path / "stored")}
        assert result.asset_value("stored") == {"rows": 3}

    def test_invalid_definitions_fail_before_running(self) -> None:
        ran: list[str] = []

        @tg.asset
        def report(missing: int) -> int:
            ran.append("report")
            return missing

        with pytest.raises(tg.UnknownDependencyError, match="asset 'report': unknown dependency 'missing'"):
            tg.materialize([report])
        assert ran == []


class TestMetadata:
    def test_materialize_result_metadata_is_recorded(self) -> None:
        written: list[int] = []

        @tg.asset
        def exported() -> tg.MaterializeResult:
            written.append(1)
            return tg.MaterializeResult(metadata={"rows": 42, "path": Path("/data/out.csv")})

        result = tg.materialize([exported])
        assert result.success
        assert written == [1]
        # values JSON cannot hold are stored as their str()
        assert materialization(result, "exported") == {"rows": 42, "path": "/data/out.csv"}
        with pytest.raises(KeyError, match="asset 'exported' has no value"):
            result.asset_value("exported")

    def test_add_output_metadata(self) -> None:
        @tg.asset
        def counted(context: tg.AssetExecutionContext) -> list[int]:
            rows = [1, 2, 3]
            context.add_output_metadata({"rows": len(rows)})
            context.add_output_metadata({"source": "api"})
            return rows

        result = tg.materialize([counted])
        assert materialization(result, "counted") == {"rows": 3, "source": "api"}
        assert result.asset_value("counted") == [1, 2, 3]

    def test_add_output_metadata_merges_with_materialize_result(self) -> None:
        @tg.asset
        def both(context: tg.AssetExecutionContext) -> tg.MaterializeResult:
            context.add_output_metadata({"rows": 1, "from_context": True})
            return tg.MaterializeResult(metadata={"rows": 2})

        result = tg.materialize([both])
        assert materialization(result, "both") == {"rows": 2, "from_context": True}

    def test_metadata_of_an_asset_returning_none(self) -> None:
        @tg.asset
        def checked(context: tg.AssetExecutionContext) -> None:
            context.add_output_metadata({"ok": True})

        result = tg.materialize([checked])
        assert materialization(result, "checked") == {"ok": True}


class TestContextAndResources:
    def test_context_by_annotation(self) -> None:
        seen: dict[str, object] = {}

        @tg.asset
        def inspected(ctx: tg.AssetExecutionContext) -> int:
            seen.update(
                key=ctx.asset_key,
                run_id=ctx.run_id,
                job=ctx.job_name,
                tags=dict(ctx.tags),
                attempt=ctx.attempt,
                retry_number=ctx.retry_number,
            )
            return 1

        result = tg.materialize([inspected], tags={"owner": "ana"})
        assert seen == {
            "key": tg.AssetKey("inspected"),
            "run_id": result.run_id,
            "job": IMPLICIT_ASSET_JOB,
            "tags": {"owner": "ana"},
            "attempt": 1,
            "retry_number": 0,
        }

    def test_resources_are_injected(self) -> None:
        client = object()
        seen: dict[str, object] = {}

        @tg.asset
        def by_name(api_client: object) -> int:
            seen["by_name"] = api_client
            return 1

        @tg.asset
        def by_annotation(greeter: Greeter) -> str:
            seen["by_annotation"] = greeter
            return f"{greeter.greeting}!"

        @tg.asset(required_resource_keys={"api_client"})
        def by_context(context: tg.AssetExecutionContext) -> int:
            seen["by_context"] = context.resources.api_client
            seen["by_key"] = context.resources["greeter"]
            assert "api_client" in context.resources
            return 1

        greeter = Greeter(greeting="hello")
        result = tg.materialize(
            [by_name, by_annotation, by_context], resources={"api_client": client, "greeter": greeter}
        )
        assert result.success
        assert seen == {"by_name": client, "by_annotation": greeter, "by_context": client, "by_key": greeter}
        assert result.asset_value("by_annotation") == "hello!"

    def test_missing_resource(self) -> None:
        @tg.asset
        def greeted(greeter: Greeter) -> str:
            return greeter.greeting

        with pytest.raises(tg.MissingResourceError, match="asset 'greeted': missing resource 'greeter'"):
            tg.materialize([greeted])

    def test_unknown_resource_attribute_is_named(self) -> None:
        @tg.asset
        def curious(context: tg.AssetExecutionContext) -> int:
            with pytest.raises(AttributeError, match=re.escape("no resource named 'nope'; have ['io_manager']")):
                _ = context.resources.nope
            return 1

        assert tg.materialize([curious]).success

    def test_context_log_is_captured_as_events(self) -> None:
        @tg.asset
        def chatty(context: tg.AssetExecutionContext) -> int:
            context.log.info("loaded %d rows", 3)
            context.log.warning("slow source")
            context.log.debug("below the captured level")
            return 3

        @tg.asset
        def quiet() -> int:
            return 0

        result = tg.materialize([chatty, quiet])
        logs = events_of(result, "LOG")
        assert [(e.step_key, e.message, dict(e.data or {})) for e in logs] == [
            ("chatty", "loaded 3 rows", {"level": "INFO"}),
            ("chatty", "slow source", {"level": "WARNING"}),
        ]

    def test_context_log_propagates_to_the_tidegate_asset_logger(self, caplog: pytest.LogCaptureFixture) -> None:
        @tg.asset
        def chatty(context: tg.AssetExecutionContext) -> int:
            context.log.info("hello from the asset")
            return 1

        with caplog.at_level(logging.INFO, logger="tidegate.asset"):
            tg.materialize([chatty])
        assert any(
            r.getMessage() == "hello from the asset" and r.name == "tidegate.asset.chatty" for r in caplog.records
        )

    def test_context_log_reaches_each_handler_once_within_its_level_and_propagation(self) -> None:
        """The step's logger records its LOG events itself (no handler of its own): the handlers
        of ``tidegate.asset`` and above still get each record once, by their level, and a
        logger that does not propagate stops it there."""
        seen: dict[str, list[str]] = {"asset": [], "root": []}

        class Keep(logging.Handler):
            def __init__(self, where: str, level: int) -> None:
                super().__init__(level)
                self.where = where

            def emit(self, record: logging.LogRecord) -> None:
                seen[self.where].append(f"{record.levelname} {record.getMessage()}")

        @tg.asset
        def chatty(context: tg.AssetExecutionContext) -> int:
            context.log.info("routine")
            context.log.warning("odd")
            return 1

        asset_logger, root_logger = logging.getLogger("tidegate.asset"), logging.getLogger()
        on_asset, on_root = Keep("asset", logging.WARNING), Keep("root", logging.INFO)
        asset_logger.addHandler(on_asset)
        root_logger.addHandler(on_root)
        try:
            result = tg.materialize([chatty])
            assert seen == {"asset": ["WARNING odd"], "root": ["INFO routine", "WARNING odd"]}
            asset_logger.propagate = False
            seen["asset"].clear(), seen["root"].clear()
            tg.materialize([chatty])
            assert seen == {"asset": ["WARNING odd"], "root": []}
        finally:
            asset_logger.propagate = True
            asset_logger.removeHandler(on_asset)
            root_logger.removeHandler(on_root)
        assert [e.message for e in events_of(result, "LOG")] == ["routine", "odd"]


class TestRetriesAndFailures:
    def test_step_is_retried_then_succeeds(self) -> None:
        attempts: list[int] = []

        @tg.asset(retry_policy=tg.RetryPolicy(max_retries=3))
        def flaky(context: tg.AssetExecutionContext) -> str:
            attempts.append(context.attempt)
            if context.attempt < 3:
                raise ConnectionError(f"attempt {context.attempt} lost the connection")
            return "finally"

        @tg.asset
        def after(flaky: str) -> str:
            return flaky + "!"

        result = tg.materialize([flaky, after])
        assert result.success
        assert attempts == [1, 2, 3]
        assert result.step("flaky").attempt == 3
        assert result.step("flaky").status == StepStatus.SUCCEEDED
        assert result.asset_value("after") == "finally!"
        retries = events_of(result, "STEP_UP_FOR_RETRY", "flaky")
        assert len(retries) == 2
        assert "ConnectionError: attempt 1 lost the connection" in (retries[0].message or "")

    def test_retry_waits_for_the_delay(self) -> None:
        started: list[float] = []

        @tg.asset(retry_policy=tg.RetryPolicy(max_retries=1, delay=0.3))
        def slow_to_recover() -> int:
            started.append(time.monotonic())
            if len(started) == 1:
                raise RuntimeError("first attempt fails")
            return 1

        assert tg.materialize([slow_to_recover]).success
        assert len(started) == 2
        assert started[1] - started[0] >= 0.3

    def test_retries_run_out(self) -> None:
        attempts: list[int] = []

        @tg.asset(retry_policy=tg.RetryPolicy(max_retries=1))
        def hopeless(context: tg.AssetExecutionContext) -> int:
            attempts.append(context.attempt)
            raise ValueError("never works")

        result = tg.materialize([hopeless], raise_on_error=False)
        assert attempts == [1, 2]
        assert result.run.status == RunStatus.FAILURE
        assert result.step("hopeless").status == StepStatus.FAILED
        assert result.step("hopeless").attempt == 2

    def test_failure_skips_descendants_but_not_an_independent_branch(self) -> None:
        ran: list[str] = []

        @tg.asset
        def root() -> int:
            ran.append("root")
            return 1

        @tg.asset
        def broken(root: int) -> int:
            ran.append("broken")
            raise ValueError("bad row 17")

        @tg.asset
        def child(broken: int) -> int:
            ran.append("child")
            return broken

        @tg.asset(deps=[child])
        def grandchild() -> None:
            ran.append("grandchild")

        @tg.asset
        def sibling(root: int) -> int:
            ran.append("sibling")
            return root + 1

        @tg.asset
        def independent() -> int:
            ran.append("independent")
            return 7

        result = tg.materialize([root, broken, child, grandchild, sibling, independent], raise_on_error=False)
        assert not result.success
        assert result.run.status == RunStatus.FAILURE
        assert statuses(result) == {
            "root": StepStatus.SUCCEEDED,
            "broken": StepStatus.FAILED,
            "child": StepStatus.SKIPPED,
            "grandchild": StepStatus.SKIPPED,
            "sibling": StepStatus.SUCCEEDED,
            "independent": StepStatus.SUCCEEDED,
        }
        assert "child" not in ran
        assert "grandchild" not in ran
        assert set(ran) == {"root", "broken", "sibling", "independent"}
        error = result.step("broken").error or ""
        assert "Traceback (most recent call last)" in error
        assert "ValueError: bad row 17" in error
        assert result.asset_value("sibling") == 2
        assert {m.asset_key for m in result.materializations} == {"root", "sibling", "independent"}

    def test_raise_on_error_raises_with_the_traceback(self) -> None:
        @tg.asset
        def fine() -> int:
            return 1

        @tg.asset
        def explodes(fine: int) -> int:
            raise KeyError("customer_id")

        with pytest.raises(RunFailedError) as info:
            tg.materialize([fine, explodes])
        text = str(info.value)
        assert re.match(r"run [0-9a-f]+ ended FAILURE\n", text)
        assert "step 'explodes' failed:" in text
        assert "Traceback (most recent call last)" in text
        assert 'raise KeyError("customer_id")' in text
        assert "KeyError: 'customer_id'" in text
        assert "step 'fine'" not in text
